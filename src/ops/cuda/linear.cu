// CUDA matrix products: the front's gemm/gemm_at through cuBLASLt in f32, and y = x·Wᵀ (+ bias) for
// every weight format.
//  - M <= kRowsKernelMaxM (decode): one warp per output column streams the weight row once for all
//    M activation rows (f32 activations times the exact weight values, as the CPU's definition);
//    BF16 rows are read 16 bytes per lane at a time where K and the pointers allow.
//  - More rows: F32 weights through an f32 cuBLASLt product; BF16 ones through bf16 tensor cores on
//    activations rounded to bf16 (the CPU's bf16 GEMM rounds them the same way); Q8_0 / Q4_0 are
//    dequantized to bf16 a panel of rows at a time, then the same bf16 product.
#include <cuda_fp16.h>

#include "ops/cuda/blas.h"
#include "ops/cuda/common.cuh"
#include "ops/cuda/kernels.h"

namespace sa2va::ops::cuda {
namespace {

constexpr int kWarpsPerBlock = 8;

// Value k of row n of a weight matrix, exactly as WeightMatrix::dequantize_rows gives it.
struct WeightView {
  WeightFormat format;
  const void* values;
  const __half* scales;
  int64_t K, blocks;

  __device__ __forceinline__ float at(int64_t n, int64_t k) const {
    switch (format) {
      case WeightFormat::F32:
        return static_cast<const float*>(values)[n * K + k];
      case WeightFormat::BF16:
        return bf16_bits_to_f32(static_cast<const uint16_t*>(values)[n * K + k]);
      case WeightFormat::Q8_0: {
        const int64_t blk = k / kQuantBlock;
        const uint8_t q = static_cast<const uint8_t*>(values)[n * blocks * kQuantBlock + k];
        return __half2float(scales[n * blocks + blk]) * static_cast<float>(static_cast<int>(q) - 128);
      }
      default: {  // Q4_0: byte j holds element j (low nibble) and j + 16 (high nibble) of its block
        const int64_t blk = k / kQuantBlock, j = k % kQuantBlock;
        const uint8_t byte = static_cast<const uint8_t*>(values)[n * blocks * 16 + blk * 16 + (j & 15)];
        const int q = j < 16 ? (byte & 15) : (byte >> 4);
        return __half2float(scales[n * blocks + blk]) * static_cast<float>(q - 8);
      }
    }
  }
};

WeightView view_of(const WeightMatrix& w) {
  return WeightView{w.format(), w.values().device_data(), w.scales().defined()
                                                          ? static_cast<const __half*>(w.scales().device_data())
                                                          : nullptr,
                    w.cols(), w.blocks_per_row()};
}

__global__ void rows_kernel(const float* x, int64_t M, int64_t K, WeightView w, int64_t N, const float* bias,
                            float* y) {
  const int lane = threadIdx.x & 31;
  const int64_t n = blockIdx.x * int64_t(kWarpsPerBlock) + (threadIdx.x >> 5);
  if (n >= N) return;
  float acc[kRowsKernelMaxM];
#pragma unroll
  for (int m = 0; m < kRowsKernelMaxM; ++m) acc[m] = 0.f;
  for (int64_t k = lane; k < K; k += 32) {
    const float wk = w.at(n, k);
#pragma unroll
    for (int m = 0; m < kRowsKernelMaxM; ++m)
      if (m < M) acc[m] += x[m * K + k] * wk;
  }
#pragma unroll
  for (int m = 0; m < kRowsKernelMaxM; ++m) {
    if (m >= M) break;
    const float s = warp_sum(acc[m]);
    if (lane == 0) y[m * N + n] = s + (bias ? bias[n] : 0.f);
  }
}

// The same product for BF16 weights whose rows and activations allow 16-byte reads (K a multiple of
// 8, aligned pointers): each lane reads 8 weights at a time, several reads in flight, so that a decode
// step streams its weights near the memory's rate instead of at a warp's latency.
__global__ void rows_kernel_bf16(const float* x, int64_t M, int64_t K, const uint16_t* w, int64_t N,
                                 const float* bias, float* y) {
  const int lane = threadIdx.x & 31;
  const int64_t n = blockIdx.x * int64_t(kWarpsPerBlock) + (threadIdx.x >> 5);
  if (n >= N) return;
  const uint4* row = reinterpret_cast<const uint4*>(w + n * K);
  const int64_t chunks = K / 8;
  float acc[kRowsKernelMaxM];
#pragma unroll
  for (int m = 0; m < kRowsKernelMaxM; ++m) acc[m] = 0.f;
#pragma unroll 4
  for (int64_t c = lane; c < chunks; c += 32) {
    const uint4 packed = __ldg(row + c);
    const uint32_t words[4] = {packed.x, packed.y, packed.z, packed.w};
    float wk[8];
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      wk[2 * e] = bf16_bits_to_f32(static_cast<uint16_t>(words[e]));  // the lower half is the earlier element
      wk[2 * e + 1] = bf16_bits_to_f32(static_cast<uint16_t>(words[e] >> 16));
    }
#pragma unroll
    for (int m = 0; m < kRowsKernelMaxM; ++m) {
      if (m >= M) break;
      const float4* xm = reinterpret_cast<const float4*>(x + m * K) + 2 * c;
      const float4 a = xm[0], b = xm[1];
      acc[m] += a.x * wk[0] + a.y * wk[1] + a.z * wk[2] + a.w * wk[3] + b.x * wk[4] + b.y * wk[5] + b.z * wk[6] +
                b.w * wk[7];
    }
  }
#pragma unroll
  for (int m = 0; m < kRowsKernelMaxM; ++m) {
    if (m >= M) break;
    const float s = warp_sum(acc[m]);
    if (lane == 0) y[m * N + n] = s + (bias ? bias[n] : 0.f);
  }
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

__global__ void dequantize_bf16_kernel(WeightView w, int64_t row0, int64_t rows, uint16_t* out) {
  const int64_t n = rows * w.K;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = f32_to_bf16_bits(w.at(row0 + i / w.K, i % w.K));
}

__global__ void to_bf16_kernel(const float* x, int64_t n, uint16_t* out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = f32_to_bf16_bits(x[i]);
}

void fill_bias_or_zero(float* y, int64_t M, int64_t N, const float* bias) {
  if (bias) {
    for (int64_t m = 0; m < M; ++m) copy_rows(bias, N, y + m * N, N, 1, N);
  } else {
    sa2va::cuda::check(cudaMemsetAsync(y, 0, static_cast<size_t>(M * N) * sizeof(float), stream()), "zeroing");
  }
}

}  // namespace

// C = beta·C for an empty sum (K = 0); beta = 0 writes zeros whatever C held, as BLAS does.
static void scale_only(float* C, int64_t ldc, int64_t M, int64_t N, float beta) {
  if (beta == 0.f) {
    sa2va::cuda::check(cudaMemset2DAsync(C, static_cast<size_t>(ldc) * sizeof(float), 0, static_cast<size_t>(N) * sizeof(float),
                                         static_cast<size_t>(M), stream()),
                       "zeroing");
    return;
  }
  for (int64_t m = 0; m < M; ++m) scale(C + m * ldc, beta, N);
}

void gemm(const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc, int64_t M, int64_t N,
          int64_t K, bool transpose_b, float alpha, float beta) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) return scale_only(C, ldc, M, N, beta);
  sa2va::cuda::matmul(A, lda, false, B, ldb, transpose_b, CUDA_R_32F, C, ldc, M, N, K, alpha, beta);
}

void gemm_at(const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc, int64_t M, int64_t N,
             int64_t K, float alpha, float beta) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) return scale_only(C, ldc, M, N, beta);
  sa2va::cuda::matmul(A, lda, true, B, ldb, false, CUDA_R_32F, C, ldc, M, N, K, alpha, beta);
}

void linear(const float* x, int64_t M, int64_t K, const WeightMatrix& weight, const float* bias, float* y) {
  const int64_t N = weight.rows();
  if (K == 0) return fill_bias_or_zero(y, M, N, bias);
  const WeightView w = view_of(weight);
  if (M <= kRowsKernelMaxM) {
    const unsigned blocks = static_cast<unsigned>((N + kWarpsPerBlock - 1) / kWarpsPerBlock);
    if (weight.format() == WeightFormat::BF16 && K % 8 == 0 && aligned16(x) && aligned16(w.values))
      rows_kernel_bf16<<<blocks, kWarpsPerBlock * 32, 0, stream()>>>(x, M, K, static_cast<const uint16_t*>(w.values),
                                                                      N, bias, y);
    else
      rows_kernel<<<blocks, kWarpsPerBlock * 32, 0, stream()>>>(x, M, K, w, N, bias, y);
    sa2va::cuda::check_launch("linear (rows)");
    return;
  }
  if (weight.format() == WeightFormat::F32) {
    sa2va::cuda::matmul(x, K, false, w.values, K, true, CUDA_R_32F, y, N, M, N, K, 1.f, 0.f);
  } else {
    auto* x16 = static_cast<uint16_t*>(sa2va::cuda::scratch(static_cast<size_t>(M * K) * 2, 0));
    to_bf16_kernel<<<grid_for(M * K), kThreads, 0, stream()>>>(x, M * K, x16);
    sa2va::cuda::check_launch("linear (activations to bf16)");
    if (weight.format() == WeightFormat::BF16) {
      sa2va::cuda::matmul(x16, K, false, w.values, K, true, CUDA_R_16BF, y, N, M, N, K, 1.f, 0.f);
    } else {
      // Panels of rows keep the bf16 copy of a quantized matrix small.
      // Panels of a multiple of 64 rows keep the output columns they start at 256-byte aligned.
      const int64_t panel = std::min<int64_t>(N, std::max<int64_t>(64, (int64_t(64) << 20) / (2 * K) / 64 * 64));
      auto* w16 = static_cast<uint16_t*>(sa2va::cuda::scratch(static_cast<size_t>(panel * K) * 2, 1));
      for (int64_t n0 = 0; n0 < N; n0 += panel) {
        const int64_t rows = std::min(panel, N - n0);
        dequantize_bf16_kernel<<<grid_for(rows * K), kThreads, 0, stream()>>>(w, n0, rows, w16);
        sa2va::cuda::check_launch("linear (dequantize)");
        sa2va::cuda::matmul(x16, K, false, w16, K, true, CUDA_R_16BF, y + n0, N, M, rows, K, 1.f, 0.f);
      }
    }
  }
  if (bias) add_rows(y, bias, M, N);
}

// Two launches: the rows kernel already reads each weight once per token.
void linear_pair(const float* x, int64_t M, int64_t K, const WeightMatrix& w1, float* y1, const WeightMatrix& w2,
                 float* y2) {
  linear(x, M, K, w1, nullptr, y1);
  linear(x, M, K, w2, nullptr, y2);
}

}  // namespace sa2va::ops::cuda
