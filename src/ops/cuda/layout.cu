// CUDA kernels for copies, gathers and re-layouts: one thread per output element.
#include "ops/cuda/common.cuh"
#include "ops/cuda/kernels.h"

namespace sa2va::ops::cuda {
namespace {

__global__ void transpose_kernel(const float* src, int64_t rows, int64_t cols, int64_t inner, float* dst) {
  SA2VA_GRID_LOOP(i, rows * cols * inner) {  // i indexes dst [cols, rows, inner]
    const int64_t e = i % inner, cr = i / inner, r = cr % rows, c = cr / rows;
    dst[i] = src[(r * cols + c) * inner + e];
  }
}

template <typename T>
__device__ __forceinline__ float to_f32(T v);
template <>
__device__ __forceinline__ float to_f32<float>(float v) { return v; }
template <>
__device__ __forceinline__ float to_f32<uint16_t>(uint16_t v) { return bf16_bits_to_f32(v); }

template <typename T>
__global__ void gather_rows_kernel(const T* src, int64_t dim, const int64_t* rows, int64_t n, float* dst) {
  SA2VA_GRID_LOOP(i, n * dim) {
    const int64_t r = i / dim, d = i - r * dim;
    dst[i] = to_f32(src[rows[r] * dim + d]);
  }
}

__global__ void pixel_shuffle_kernel(const float* x, int64_t side, int64_t c, float* y) {
  const int64_t half = side / 2;
  SA2VA_GRID_LOOP(o, half * half * 4 * c) {
    const int64_t ch = o % c, rest = o / c, k = rest % 2, m = (rest / 2) % 2, ij = rest / 4;
    const int64_t i = ij / half, j = ij % half;
    y[o] = x[((2 * i + m) * side + 2 * j + k) * c + ch];
  }
}

__global__ void window_partition_kernel(const float* x, int64_t h, int64_t w, int64_t c, int64_t win_h,
                                        int64_t win_w, int64_t wins_x, int64_t n, float* y) {
  SA2VA_GRID_LOOP(o, n) {  // o indexes y [windows, win_h·win_w, c]
    const int64_t ch = o % c, rest = o / c, cell = rest % (win_h * win_w), win = rest / (win_h * win_w);
    const int64_t row = (win / wins_x) * win_h + cell / win_w, col = (win % wins_x) * win_w + cell % win_w;
    y[o] = row < h && col < w ? x[(row * w + col) * c + ch] : 0.f;
  }
}

__global__ void window_unpartition_kernel(const float* windows, int64_t win_h, int64_t win_w, int64_t h, int64_t w,
                                          int64_t c, int64_t wins_x, float* y, const float* residual) {
  SA2VA_GRID_LOOP(o, h * w * c) {  // o indexes y [h, w, c]
    const int64_t ch = o % c, pix = o / c, row = pix / w, col = pix % w;
    const int64_t win = (row / win_h) * wins_x + col / win_w, cell = (row % win_h) * win_w + col % win_w;
    const float v = windows[(win * win_h * win_w + cell) * c + ch];
    y[o] = residual ? residual[o] + v : v;
  }
}

__global__ void max_pool_tokens_kernel(const float* x, int64_t x_stride, int64_t maps, int64_t h, int64_t w, int64_t c,
                                       int64_t s, float* y) {
  const int64_t ho = h / s, wo = w / s;
  SA2VA_GRID_LOOP(o, maps * ho * wo * c) {  // o indexes y [maps, ho, wo, c]
    const int64_t k = o % c, ox = (o / c) % wo, oy = (o / (c * wo)) % ho, m = o / (c * wo * ho);
    float best = x[(m * h * w + oy * s * w + ox * s) * x_stride + k];
    for (int64_t dy = 0; dy < s; ++dy)
      for (int64_t dx = 0; dx < s; ++dx) {
        const float v = x[(m * h * w + (oy * s + dy) * w + ox * s + dx) * x_stride + k];
        best = best < v ? v : best;  // std::max's rule: a NaN in v is ignored
      }
    y[o] = best;
  }
}

__global__ void add_upsampled_kernel(float* x, int64_t h, int64_t w, int64_t c, const float* src) {
  SA2VA_GRID_LOOP(o, h * w * c) {
    const int64_t k = o % c, col = (o / c) % w, row = o / (c * w);
    x[o] = x[o] + src[((row / 2) * (w / 2) + col / 2) * c + k];
  }
}

__global__ void add_tiled_kernel(float* x, int64_t channels, int64_t h, int64_t w, const float* tile, int64_t th,
                                 int64_t tw) {
  SA2VA_GRID_LOOP(o, channels * h * w) {
    const int64_t col = o % w, row = (o / w) % h, ch = o / (w * h);
    x[o] += tile[(ch * th + row % th) * tw + col % tw];
  }
}

}  // namespace

void max_pool_tokens(const float* x, int64_t x_stride, int64_t maps, int64_t h, int64_t w, int64_t c, int64_t s,
                     float* y) {
  const int64_t n = maps * (h / s) * (w / s) * c;
  if (n <= 0) return;
  max_pool_tokens_kernel<<<grid_for(n), kThreads, 0, stream()>>>(x, x_stride, maps, h, w, c, s, y);
  sa2va::cuda::check_launch("max_pool_tokens");
}

void add_upsampled_nearest_2x(float* x, int64_t h, int64_t w, int64_t c, const float* src) {
  if (h * w * c <= 0) return;
  add_upsampled_kernel<<<grid_for(h * w * c), kThreads, 0, stream()>>>(x, h, w, c, src);
  sa2va::cuda::check_launch("add_upsampled_nearest_2x");
}

void add_tiled(float* x, int64_t channels, int64_t h, int64_t w, const float* tile, int64_t th, int64_t tw) {
  if (channels * h * w <= 0) return;
  add_tiled_kernel<<<grid_for(channels * h * w), kThreads, 0, stream()>>>(x, channels, h, w, tile, th, tw);
  sa2va::cuda::check_launch("add_tiled");
}

void transpose(const float* src, int64_t rows, int64_t cols, int64_t inner, float* dst) {
  const int64_t n = rows * cols * inner;
  if (n <= 0) return;
  transpose_kernel<<<grid_for(n), kThreads, 0, stream()>>>(src, rows, cols, inner, dst);
  sa2va::cuda::check_launch("transpose");
}

void gather_rows_f32(const float* src, int64_t dim, const int64_t* rows, int64_t n, float* dst) {
  if (n * dim <= 0) return;
  gather_rows_kernel<<<grid_for(n * dim), kThreads, 0, stream()>>>(src, dim, rows, n, dst);
  sa2va::cuda::check_launch("gather_rows");
}

void gather_rows_bf16(const uint16_t* src, int64_t dim, const int64_t* rows, int64_t n, float* dst) {
  if (n * dim <= 0) return;
  gather_rows_kernel<<<grid_for(n * dim), kThreads, 0, stream()>>>(src, dim, rows, n, dst);
  sa2va::cuda::check_launch("gather_rows");
}

void pixel_shuffle_v2(const float* x, int64_t side, int64_t c, float* y) {
  const int64_t n = (side / 2) * (side / 2) * 4 * c;
  if (n <= 0) return;
  pixel_shuffle_kernel<<<grid_for(n), kThreads, 0, stream()>>>(x, side, c, y);
  sa2va::cuda::check_launch("pixel_shuffle_v2");
}

void window_partition(const float* x, int64_t h, int64_t w, int64_t c, int64_t win_h, int64_t win_w, float* y) {
  const int64_t wins_y = (h + win_h - 1) / win_h, wins_x = (w + win_w - 1) / win_w;
  const int64_t n = wins_y * wins_x * win_h * win_w * c;
  if (n <= 0) return;
  window_partition_kernel<<<grid_for(n), kThreads, 0, stream()>>>(x, h, w, c, win_h, win_w, wins_x, n, y);
  sa2va::cuda::check_launch("window_partition");
}

void window_unpartition(const float* windows, int64_t win_h, int64_t win_w, int64_t h, int64_t w, int64_t c,
                        float* y, const float* residual) {
  const int64_t wins_x = (w + win_w - 1) / win_w, n = h * w * c;
  if (n <= 0) return;
  window_unpartition_kernel<<<grid_for(n), kThreads, 0, stream()>>>(windows, win_h, win_w, h, w, c, wins_x, y,
                                                                     residual);
  sa2va::cuda::check_launch("window_unpartition");
}

}  // namespace sa2va::ops::cuda
