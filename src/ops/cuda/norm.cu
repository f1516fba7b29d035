// CUDA kernels for LayerNorm, RMSNorm (one block per row) and SAM2's LayerNorm2d (one thread per
// pixel, walking the channels). Two-pass statistics in f32, as the CPU kernels.
#include "ops/cuda/common.cuh"
#include "ops/cuda/kernels.h"

namespace sa2va::ops::cuda {
namespace {

__global__ void layer_norm_kernel(const float* x, const float* w, const float* b, float* y, int64_t dim, float eps) {
  __shared__ float shared[32];
  const float* xr = x + blockIdx.x * dim;
  float* yr = y + blockIdx.x * dim;
  float s = 0.f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) s += xr[i];
  const float mean = block_reduce<false>(s, shared) / static_cast<float>(dim);
  float v = 0.f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    const float d = xr[i] - mean;
    v += d * d;
  }
  const float inv = 1.f / sqrtf(block_reduce<false>(v, shared) / static_cast<float>(dim) + eps);
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    float o = (xr[i] - mean) * inv;
    if (w) o *= w[i];
    if (b) o += b[i];
    yr[i] = o;
  }
}

__global__ void rms_norm_kernel(const float* x, const float* w, float* y, int64_t dim, float eps) {
  __shared__ float shared[32];
  const float* xr = x + blockIdx.x * dim;
  float* yr = y + blockIdx.x * dim;
  float s = 0.f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) s += xr[i] * xr[i];
  const float inv = 1.f / sqrtf(block_reduce<false>(s, shared) / static_cast<float>(dim) + eps);
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) yr[i] = w ? (xr[i] * inv) * w[i] : xr[i] * inv;
}

__global__ void layer_norm_2d_kernel(const float* x, const float* w, const float* b, float* y, int64_t channels,
                                     int64_t pixels, float eps) {
  const int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (p >= pixels) return;
  float s = 0.f;
  for (int64_t c = 0; c < channels; ++c) s += x[c * pixels + p];
  const float mean = s / static_cast<float>(channels);
  float v = 0.f;
  for (int64_t c = 0; c < channels; ++c) {
    const float d = x[c * pixels + p] - mean;
    v += d * d;
  }
  const float inv = 1.f / sqrtf(v / static_cast<float>(channels) + eps);
  for (int64_t c = 0; c < channels; ++c) {
    float o = (x[c * pixels + p] - mean) * inv;
    if (w) o *= w[c];
    if (b) o += b[c];
    y[c * pixels + p] = o;
  }
}

unsigned threads_for_row(int64_t dim) { return dim >= 1024 ? 512 : dim >= 256 ? 256 : 128; }

}  // namespace

void layer_norm(const float* x, const float* w, const float* b, float* y, int64_t rows, int64_t dim, float eps) {
  layer_norm_kernel<<<static_cast<unsigned>(rows), threads_for_row(dim), 0, stream()>>>(x, w, b, y, dim, eps);
  sa2va::cuda::check_launch("layer_norm");
}

void rms_norm(const float* x, const float* w, float* y, int64_t rows, int64_t dim, float eps) {
  rms_norm_kernel<<<static_cast<unsigned>(rows), threads_for_row(dim), 0, stream()>>>(x, w, y, dim, eps);
  sa2va::cuda::check_launch("rms_norm");
}

void layer_norm_2d(const float* x, const float* w, const float* b, float* y, int64_t channels, int64_t pixels,
                   float eps) {
  const unsigned blocks = static_cast<unsigned>((pixels + kThreads - 1) / kThreads);
  layer_norm_2d_kernel<<<blocks, kThreads, 0, stream()>>>(x, w, b, y, channels, pixels, eps);
  sa2va::cuda::check_launch("layer_norm_2d");
}

}  // namespace sa2va::ops::cuda
