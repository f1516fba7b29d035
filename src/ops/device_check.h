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

// Data on `where` can be worked on by this thread: it must live on the thread's device, which must
// have kernels (the CPU; a GPU in a CUDA build; a test's host-memory stand-in).
inline void check_kernel_device(const char* op, const char* what, Device where) {
  const Device here = current_device();
  if (where == here && (where.is_cpu() || cuda_built() || kernels_run_on_host())) return;
  if (where != here && !where.is_cpu() && !cuda_built() && here.is_cpu())
    throw Error(std::string(op) + ": no " + where.name() + " kernel (the " + what + " lives on " + where.name() +
                "; this build has CPU kernels only)");
  throw Error(std::string(op) + ": the " + what + " lives on " + where.name() + " but the calling thread runs kernels on " +
              here.name() + (where.is_cpu() ? "" : " (enter a DeviceScope for it)"));
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

// In a CPU-only build, the thread's device must be worked on by the CPU kernels.
inline void require_cpu_kernel(const char* op) {
  if (!kernels_run_on_host())
    throw Error(std::string(op) + ": no " + current_device().name() + " kernel (this build has CPU kernels only)");
}

}  // namespace sa2va::ops

// SA2VA_KERNEL(name, args...): ops::cpu::name(args...) or ops::cuda::name(args...) by the calling
// thread's device (the CPU kernels for the CPU and for a test's host-memory stand-in).
#if SA2VA_WITH_CUDA
#define SA2VA_KERNEL(name, ...)                                                          \
  (::sa2va::kernels_run_on_host() ? ::sa2va::ops::cpu::name(__VA_ARGS__)                 \
                                  : ::sa2va::ops::cuda::name(__VA_ARGS__))
#else
#define SA2VA_KERNEL(name, ...) (::sa2va::ops::require_cpu_kernel(#name), ::sa2va::ops::cpu::name(__VA_ARGS__))
#endif
