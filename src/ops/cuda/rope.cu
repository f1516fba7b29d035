// CUDA kernels for rotary position embeddings: one thread per rotated pair. The frequencies are
// computed on the host with the CPU kernels' own std::pow (the GPU's powf may differ in the last bit,
// which positions in the thousands turn into visible angle errors) and passed with the launch; angles
// are f32(position)·inv_freq as on the CPU.
#include <cmath>

#include "ops/cuda/common.cuh"
#include "ops/cuda/kernels.h"

namespace sa2va::ops::cuda {
namespace {

constexpr int kMaxFrequencies = 256;
struct Frequencies {
  float v[kMaxFrequencies];
};

__global__ void rope_rotate_half_kernel(float* x, int64_t tokens, int64_t heads, int64_t head_dim, int64_t stride,
                                        const int64_t* positions, Frequencies inv_freq) {
  const int64_t half = head_dim / 2, n = tokens * heads * half;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t k = i % half, th = i / half, h = th % heads, t = th / heads;
    const float angle = static_cast<float>(positions[t]) * inv_freq.v[k];
    float c, s;
    sincosf(angle, &s, &c);
    float* v = x + t * stride + h * head_dim;
    const float a = v[k], b = v[k + half];
    v[k] = a * c - b * s;
    v[k + half] = b * c + a * s;
  }
}

__global__ void rope_axial_2d_kernel(float* x, int64_t n_rot, int64_t dim, int64_t grid_w, int64_t cells,
                                     Frequencies freqs) {
  const int64_t quarter = dim / 4, pairs = 2 * quarter, n = n_rot * pairs;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t j = i % pairs, t = i / pairs, p = t % cells;
    const int64_t fj = j < quarter ? j : j - quarter;
    const float freq = freqs.v[fj];
    const float coord = j < quarter ? static_cast<float>(p % grid_w) : static_cast<float>(p / grid_w);
    float c, s;
    sincosf(coord * freq, &s, &c);
    float* v = x + t * dim;
    const float re = v[2 * j], im = v[2 * j + 1];
    v[2 * j] = re * c - im * s;
    v[2 * j + 1] = re * s + im * c;
  }
}

}  // namespace

void rope_rotate_half(float* x, int64_t tokens, int64_t heads, int64_t head_dim, int64_t stride,
                      const int64_t* positions, float theta) {
  const int64_t half = head_dim / 2, n = tokens * heads * half;
  if (n <= 0) return;
  check(half <= kMaxFrequencies, "rope: head_dim above " + std::to_string(2 * kMaxFrequencies) + " has no CUDA kernel");
  Frequencies inv_freq{};
  for (int64_t k = 0; k < half; ++k)
    inv_freq.v[k] = 1.f / std::pow(theta, static_cast<float>(2 * k) / static_cast<float>(head_dim));
  rope_rotate_half_kernel<<<grid_for(n), kThreads, 0, stream()>>>(x, tokens, heads, head_dim, stride, positions,
                                                                   inv_freq);
  sa2va::cuda::check_launch("rope_rotate_half");
}

void rope_axial_2d(float* x, int64_t tokens, int64_t dim, int64_t grid_w, int64_t grid_h, float theta,
                   int64_t rope_tokens) {
  const int64_t n_rot = tokens < rope_tokens ? tokens : (rope_tokens > 0 ? rope_tokens : 0);
  const int64_t quarter = dim / 4, n = n_rot * 2 * quarter;
  if (n <= 0) return;
  check(quarter <= kMaxFrequencies, "rope_axial_2d: dim above " + std::to_string(4 * kMaxFrequencies) +
                                        " has no CUDA kernel");
  Frequencies freqs{};
  for (int64_t j = 0; j < quarter; ++j)
    freqs.v[j] = 1.f / std::pow(theta, static_cast<float>(4 * j) / static_cast<float>(dim));
  rope_axial_2d_kernel<<<grid_for(n), kThreads, 0, stream()>>>(x, n_rot, dim, grid_w, grid_w * grid_h, freqs);
  sa2va::cuda::check_launch("rope_axial_2d");
}

}  // namespace sa2va::ops::cuda
