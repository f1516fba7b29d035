// Helpers shared by the CUDA kernels: launch sizes and warp / block reductions.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include <vector>

#include "core/device.h"
#include "core/error.h"
#include "core/tensor.h"
#include "ops/cuda/runtime.h"

namespace sa2va::ops::cuda {

constexpr int kThreads = 256;

// Blocks for n independent elements at kThreads per block, capped (grid-stride loops cover the rest).
inline unsigned grid_for(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > 65535 * 4 ? 65535 * 4 : blocks));
}

inline cudaStream_t stream() { return sa2va::cuda::stream(); }

// A host table copied to the calling thread's GPU for one kernel (indices, weights); the tensor keeps
// the memory until the caller drops it, after queueing the kernel (frees are stream-ordered).
template <typename T>
Tensor to_gpu(const std::vector<T>& host, DType dtype) {
  return Tensor::borrow(const_cast<T*>(host.data()), {static_cast<int64_t>(host.size())}, dtype, nullptr)
      .to(current_device());
}

#define SA2VA_GRID_LOOP(i, n) \
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < (n); i += int64_t(gridDim.x) * blockDim.x)

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum (or max) over the whole block; every thread gets the result. `shared` holds 32 floats.
template <bool kMax>
__device__ __forceinline__ float block_reduce(float v, float* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  v = kMax ? warp_max(v) : warp_sum(v);
  __syncthreads();  // `shared` may still be read from a previous reduction
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = lane < warps ? shared[lane] : (kMax ? -INFINITY : 0.f);
  return kMax ? warp_max(v) : warp_sum(v);
}

// float32 -> bfloat16 bits, round to nearest even (NaN kept quiet), as the CPU's round_to_bf16.
__device__ __forceinline__ uint16_t f32_to_bf16_bits(float f) {
  uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
__device__ __forceinline__ float bf16_bits_to_f32(uint16_t b) { return __uint_as_float(static_cast<uint32_t>(b) << 16); }

}  // namespace sa2va::ops::cuda
