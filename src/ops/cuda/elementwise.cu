// CUDA kernels for the element-wise activations, broadcasts and row softmax: grid-stride loops,
// one thread per element; softmax one block per row.
#include "ops/cuda/common.cuh"
#include "ops/cuda/kernels.h"

namespace sa2va::ops::cuda {
namespace {

template <typename F>
__global__ void map_kernel(float* x, int64_t n, F f) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    x[i] = f(x[i], i);
}

template <typename F>
void map(float* x, int64_t n, F f, const char* name) {
  if (n <= 0) return;
  map_kernel<<<grid_for(n), kThreads, 0, stream()>>>(x, n, f);
  sa2va::cuda::check_launch(name);
}

__global__ void softmax_kernel(float* x, int64_t n) {
  __shared__ float shared[32];
  float* row = x + blockIdx.x * n;
  float m = -INFINITY;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) m = fmaxf(m, row[i]);
  m = block_reduce<true>(m, shared);
  if (m == -INFINITY) {  // nothing finite: zeros, as the CPU
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) row[i] = 0.f;
    return;
  }
  float s = 0.f;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const float e = expf(row[i] - m);
    row[i] = e;
    s += e;
  }
  s = block_reduce<false>(s, shared);
  const float inv = 1.f / s;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) row[i] *= inv;
}

__global__ void add_kernel(const float* a, const float* b, float* y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = a[i] + b[i];
}

__global__ void copy_rows_kernel(const float* src, int64_t src_stride, float* dst, int64_t dst_stride, int64_t rows,
                                 int64_t cols) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / cols, c = i - r * cols;
    dst[r * dst_stride + c] = src[r * src_stride + c];
  }
}

}  // namespace

void gelu_erf(float* x, int64_t n) {
  map(x, n, [] __device__(float v, int64_t) { return 0.5f * v * (1.f + erff(v * 0.70710678118654752f)); }, "gelu_erf");
}
void gelu_tanh(float* x, int64_t n) {
  map(x, n, [] __device__(float v, int64_t) {
    return 0.5f * v * (1.f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
  }, "gelu_tanh");
}
void silu(float* x, int64_t n) {
  map(x, n, [] __device__(float v, int64_t) { return v / (1.f + expf(-v)); }, "silu");
}
void relu(float* x, int64_t n) {
  map(x, n, [] __device__(float v, int64_t) { return v > 0.f ? v : 0.f; }, "relu");
}
void sigmoid(float* x, int64_t n) {
  map(x, n, [] __device__(float v, int64_t) { return 1.f / (1.f + expf(-v)); }, "sigmoid");
}
void softmax_rows(float* x, int64_t rows, int64_t n) {
  if (rows <= 0 || n <= 0) return;
  softmax_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream()>>>(x, n);
  sa2va::cuda::check_launch("softmax_rows");
}
void add(const float* a, const float* b, float* y, int64_t n) {  // y may be a or b
  if (n <= 0) return;
  add_kernel<<<grid_for(n), kThreads, 0, stream()>>>(a, b, y, n);
  sa2va::cuda::check_launch("add");
}
void add_rows(float* x, const float* row, int64_t rows, int64_t dim) {
  map(x, rows * dim, [row, dim] __device__(float v, int64_t i) { return v + row[i % dim]; }, "add_rows");
}
void mul_rows(float* x, const float* row, int64_t rows, int64_t dim) {
  map(x, rows * dim, [row, dim] __device__(float v, int64_t i) { return v * row[i % dim]; }, "mul_rows");
}
void add_scaled_rows(float* x, const float* y, const float* row, int64_t rows, int64_t dim) {
  map(x, rows * dim, [y, row, dim] __device__(float v, int64_t i) { return v + y[i] * row[i % dim]; },
      "add_scaled_rows");
}
void add_per_row(float* x, const float* per_row, int64_t rows, int64_t dim) {
  map(x, rows * dim, [per_row, dim] __device__(float v, int64_t i) { return v + per_row[i / dim]; }, "add_per_row");
}
void scale(float* x, float s, int64_t n) {
  map(x, n, [s] __device__(float v, int64_t) { return v * s; }, "scale");
}
void copy_rows(const float* src, int64_t src_stride, float* dst, int64_t dst_stride, int64_t rows, int64_t cols) {
  if (rows <= 0 || cols <= 0) return;
  copy_rows_kernel<<<grid_for(rows * cols), kThreads, 0, stream()>>>(src, src_stride, dst, dst_stride, rows, cols);
  sa2va::cuda::check_launch("copy_rows");
}
void silu_mul(float* gate, const float* up, int64_t n) {
  map(gate, n, [up] __device__(float v, int64_t i) { return v / (1.f + expf(-v)) * up[i]; }, "silu_mul");
}
void scale_shift(float* x, float s, float shift, int64_t n) {
  map(x, n, [s, shift] __device__(float v, int64_t) { return v * s + shift; }, "scale_shift");
}
void add_scaled(float* x, const float* y, float alpha, int64_t n) {
  map(x, n, [y, alpha] __device__(float v, int64_t i) { return v + alpha * y[i]; }, "add_scaled");
}
void round_bf16(float* x, int64_t n) {
  map(x, n, [] __device__(float v, int64_t) { return bf16_bits_to_f32(f32_to_bf16_bits(v)); }, "round_bf16");
}

}  // namespace sa2va::ops::cuda
