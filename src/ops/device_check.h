// Device checks and kernel dispatch shared by the op fronts (ops/*.cpp). Everything an op reads and
// writes lives on one device. Fronts taking raw pointers run the kernels of the calling thread's
// device (core/device.h: a GPU inside a DeviceScope, the CPU otherwise); fronts taking Tensors
// check that the tensors' device is that one.
#pragma once
#include <string>

#include "core/device.h"
#include "core/error.h"
#include "ops/cpu/kernels.h"
#if SA2VA_WITH_CUDA
#include "ops/cuda/kernels.h"
#endif

namespace sa2va::ops {

// "<op>: the <what> lives on <where>, the <other> on <other_where>" when the two differ.
inline void check_same_device(const char* op, const char* what, Device where, const char* other,
                              Device other_where) {
  if (where != other_where)
    throw Error(std::string(op) + ": the " + what + " lives on " + where.name() + ", the " + other + " on " +
                other_where.name());
}

// Data on `where` can be worked on by this thread: the CPU always; a GPU when this build has CUDA
// kernels and the thread runs on that GPU.
inline void check_kernel_device(const char* op, const char* what, Device where) {
  if (where.is_cpu()) return;
  if (!cuda_built())
    throw Error(std::string(op) + ": no " + where.name() + " kernel (the " + what + " lives on " + where.name() +
                "; this build has CPU kernels only)");
  if (where != current_device())
    throw Error(std::string(op) + ": the " + what + " lives on " + where.name() +
                " but the calling thread runs kernels on " + current_device().name() +
                " (enter a DeviceScope for it)");
}

// Tensor fronts of ops that have CPU kernels only: data elsewhere is "<op>: no cuda:N kernel (...)".
inline void check_cpu_only_kernel(const char* op, const char* what, Device where) {
  if (!where.is_cpu())
    throw Error(std::string(op) + ": no " + where.name() + " kernel (the " + what + " lives on " + where.name() +
                (cuda_built() ? "; this op has no CUDA kernel yet)" : "; this build has CPU kernels only)"));
}

// Raw-pointer fronts of ops that have no GPU kernel yet: "<op>: no CUDA kernel yet (the calling thread runs on cuda:N)".
inline void require_cpu_kernel(const char* op) {
  if (!current_device().is_cpu())
    throw Error(std::string(op) + ": no CUDA kernel yet (the calling thread runs on " + current_device().name() + ")");
}

}  // namespace sa2va::ops

// SA2VA_KERNEL(name, args...): ops::cpu::name(args...) or ops::cuda::name(args...) by the calling
// thread's device.
#if SA2VA_WITH_CUDA
#define SA2VA_KERNEL(name, ...)                                                          \
  (::sa2va::current_device().is_cpu() ? ::sa2va::ops::cpu::name(__VA_ARGS__)            \
                                      : ::sa2va::ops::cuda::name(__VA_ARGS__))
#else
#define SA2VA_KERNEL(name, ...) (::sa2va::ops::require_cpu_kernel(#name), ::sa2va::ops::cpu::name(__VA_ARGS__))
#endif
