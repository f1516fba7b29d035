// The CUDA runtime side of the backend: which GPUs can be used (and why not), the calling thread's
// stream, the stream-ordered memory pool behind Tensor::empty on a GPU, copies, and error checks.
//
// Every message names the device ("cuda:N") and says what went wrong in words: no driver or one
// too old for this build, no such device, a GPU older than compute capability 8.0 (bf16 tensor
// cores), out of GPU memory (with the free and total bytes), or a kernel that failed.
//
// Streams: each host thread has its own non-blocking stream per GPU. A request runs on one thread,
// so concurrent requests (sa2va serve) overlap on the GPU; memory is allocated and freed in the
// order of the stream that asked for it.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <string>

#include "core/allocator.h"

namespace sa2va::cuda {

// Throws Error "cuda:<current device>: <what>: <CUDA's error text> (<error name>)" unless status is cudaSuccess.
void check(cudaError_t status, const char* what);
// After a kernel launch: throws naming the kernel when the launch failed.
void check_launch(const char* kernel);

// Number of usable GPUs; 0 when there is no driver or no device (unavailable_reason() says which).
int device_count();
// Why no GPU can be used, in words ("" when at least one can).
std::string unavailable_reason();

struct DeviceProperties {
  std::string name;
  int major = 0, minor = 0;  // compute capability
  size_t total_bytes = 0;
  int multiprocessors = 0;
};
DeviceProperties properties(int index);

// Makes GPU `index` current on the calling thread after checking that it can run this build's
// kernels; throws Error naming cuda:<index> and the reason otherwise.
void use_device(int index);

// The calling thread's stream on its current GPU.
cudaStream_t stream();
// Waits for the calling thread's stream; throws if one of its kernels failed.
void synchronize();

// Free and total bytes of the current GPU.
void memory_info(size_t* free_bytes, size_t* total_bytes);

// Scratch memory of the calling thread's stream, valid until the next call on the same thread
// (for operands converted on the fly: bf16 activations, dequantized panels, GEMM workspace).
// `slot` separates buffers that must coexist within one op.
void* scratch(size_t bytes, int slot = 0);

}  // namespace sa2va::cuda

namespace sa2va::cuda {
// The allocator of GPU `index` (the CUDA backend's entry in core/allocator.h).
Allocator& builtin_allocator(int index);
}  // namespace sa2va::cuda
