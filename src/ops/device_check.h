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

// The input of a Tensor front, contiguous, on a device whose kernels the calling thread runs (a GPU
// tensor must already be contiguous: strided copies on a GPU are the model's to ask for).
inline Tensor kernel_input(const Tensor& x, const char* op, const char* what = "input") {
  check_kernel_device(op, what, x.device());
  if (!x.device().is_cpu() && !x.is_contiguous())
    throw Error(std::string(op) + ": the " + what + " on " + x.device().name() + " must be contiguous");
  return x.contiguous();
}

// A tensor's memory as floats, for the kernels of its device.
inline float* float_data(const Tensor& t) { return static_cast<float*>(t.device_data()); }

// In a CPU-only build, the kernels of a thread that runs on another device (a stand-in allocator
// of the tests): "<op>: no CUDA kernel yet (the calling thread runs on cuda:N)".
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
