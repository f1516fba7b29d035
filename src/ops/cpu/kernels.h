// CPU kernels behind the device-neutral op fronts (ops/ops.h). Internal to src/ops: model code
// calls the fronts, which check shapes and pick the kernel for the device the data lives on.
//
// Conventions
//  - Raw pointers to contiguous buffers with explicit sizes; the fronts have validated them, so
//    kernels do not check again.
//  - Every kernel splits its outer loop over the thread pool (core/threadpool.h); results do not
//    depend on the number of threads.
#pragma once
#include <cstdint>

#include "ops/ops.h"

namespace sa2va::ops::cpu {

// ---- matrix products (cpu/linear.cpp) --------------------------------------------------------
// C = alpha·A·op(B) + beta·C through OpenBLAS, one single-threaded call per pool thread; empty
// products (M or N <= 0) return at once. The building block of the other kernels' products.
void gemm(const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc, int64_t M, int64_t N,
          int64_t K, bool transpose_b, float alpha, float beta);
// C = alpha·Aᵀ·B + beta·C, A stored [K, M], the same way.
void gemm_at(const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc, int64_t M, int64_t N,
             int64_t K, float alpha, float beta);
// y[M, N] = x[M, K]·Wᵀ (+ bias) for any weight format (M, N >= 1; K = 0 gives zeros); picks the
// rows kernel, the bf16 GEMM or dequantized panels + sgemm by format, M and instruction set.
void linear(const float* x, int64_t M, int64_t K, const WeightMatrix& weight, const float* bias, float* y);

// ---- normalisation (cpu/norm.cpp) ------------------------------------------------------------
void layer_norm(const float* x, const float* w, const float* b, float* y, int64_t rows, int64_t dim, float eps);
void rms_norm(const float* x, const float* w, float* y, int64_t rows, int64_t dim, float eps);
void layer_norm_2d(const float* x, const float* w, const float* b, float* y, int64_t channels, int64_t pixels,
                   float eps);

// ---- element-wise and broadcasts (cpu/elementwise.cpp) ---------------------------------------
void gelu_erf(float* x, int64_t n);
void gelu_tanh(float* x, int64_t n);
void silu(float* x, int64_t n);
void relu(float* x, int64_t n);
void sigmoid(float* x, int64_t n);
void softmax_rows(float* x, int64_t rows, int64_t n);
void add(const float* a, const float* b, float* y, int64_t n);
void add_rows(float* x, const float* row, int64_t rows, int64_t dim);
void mul_rows(float* x, const float* row, int64_t rows, int64_t dim);
void add_per_row(float* x, const float* per_row, int64_t rows, int64_t dim);
void scale(float* x, float s, int64_t n);
void copy_rows(const float* src, int64_t src_stride, float* dst, int64_t dst_stride, int64_t rows, int64_t cols);
void silu_mul(float* gate, const float* up, int64_t n);

// ---- attention (cpu/attention.cpp) -----------------------------------------------------------
// One problem; picks the per-row path (short queries), the fused bf16 kernel (bf16_operands on
// AVX-512 BF16) or blocked sgemm + softmax.
void attention(const AttentionArgs& args);

// ---- positional encodings (cpu/rope.cpp) -----------------------------------------------------
void rope_rotate_half(float* x, int64_t tokens, int64_t heads, int64_t head_dim, int64_t stride,
                      const int64_t* positions, float theta);
void rope_axial_2d(float* x, int64_t tokens, int64_t dim, int64_t grid_w, int64_t grid_h, float theta,
                   int64_t rope_tokens);

// ---- convolution (cpu/conv.cpp) --------------------------------------------------------------
// One conv2d call as the front resolved it: input [cin, h, w], weight [cout, cin/groups, kh, kw]
// (GEMM layout, ConvWeight), output [cout, ho, wo].
struct ConvGeometry {
  int64_t cin, h, w, cout, kh, kw, ho, wo;
  Conv2dArgs a;
};
// Depthwise convolutions by direct loops, the rest by im2col + sgemm per group; bias may be null.
void conv2d(const float* x, const float* weight, const float* bias, float* y, const ConvGeometry& g);
// x [cin, h, w], weight [cout·4, cin] (taps as rows), bias [cout] or null -> y [cout, 2h, 2w].
void conv_transpose_2x2(const float* x, int64_t cin, int64_t h, int64_t w, const float* weight, int64_t cout,
                        const float* bias, float* y);
// x [channels, h, w] -> y [channels, (h − kernel)/stride + 1, (w − kernel)/stride + 1]; NaN wins.
void max_pool2d(const float* x, int64_t channels, int64_t h, int64_t w, int64_t kernel, int64_t stride, float* y);

// ---- resampling (cpu/resample.cpp) -----------------------------------------------------------
// x [c, h, w] -> y [c, out_h, out_w], all sizes >= 1.
void interpolate_bilinear(const float* x, int64_t c, int64_t h, int64_t w, int64_t out_h, int64_t out_w,
                          bool align_corners, float* y);
void interpolate_bicubic(const float* x, int64_t c, int64_t h, int64_t w, int64_t out_h, int64_t out_w, float* y);
void interpolate_nearest(const float* x, int64_t c, int64_t h, int64_t w, int64_t out_h, int64_t out_w, float* y);
// x [side², c] -> y [(side/2)², 4c].
void pixel_shuffle_v2(const float* x, int64_t side, int64_t c, float* y);

// ---- layout and data movement (cpu/layout.cpp) ----------------------------------------------
// dst[c, r, :] = src[r, c, :] for src [rows, cols, inner]; inner = 1 is a tiled matrix transpose.
void transpose(const float* src, int64_t rows, int64_t cols, int64_t inner, float* dst);
// dst[i, :] = src[rows[i], :], rows of `dim` elements; BF16 sources are converted to f32.
void gather_rows_f32(const float* src, int64_t dim, const int64_t* rows, int64_t n, float* dst);
void gather_rows_bf16(const uint16_t* src, int64_t dim, const int64_t* rows, int64_t n, float* dst);
void max_pool_tokens(const float* x, int64_t x_stride, int64_t maps, int64_t h, int64_t w, int64_t c, int64_t s,
                     float* y);
void window_partition(const float* x, int64_t h, int64_t w, int64_t c, int64_t win_h, int64_t win_w, float* y);
void window_unpartition(const float* windows, int64_t win_h, int64_t win_w, int64_t h, int64_t w, int64_t c,
                        float* y, const float* residual);
// x [h, w, c] += src [h/2, w/2, c] nearest-upsampled.
void add_upsampled_nearest_2x(float* x, int64_t h, int64_t w, int64_t c, const float* src);
// x [channels, h, w] += tile [channels, th, tw] repeated.
void add_tiled(float* x, int64_t channels, int64_t h, int64_t w, const float* tile, int64_t th, int64_t tw);

// ---- scaling and rounding (cpu/elementwise.cpp) ---------------------------------------------
void scale_shift(float* x, float scale, float shift, int64_t n);
void add_scaled(float* x, const float* y, float alpha, int64_t n);
void round_bf16(float* x, int64_t n);

// ---- batched attention (cpu/attention_batched.cpp) -------------------------------------------
void attention_batched(const AttentionArgs& args, const AttentionBatch& batch);

// ---- generated tables (cpu/generate.cpp) -----------------------------------------------------
void position_embedding_sine(int64_t channels, int64_t h, int64_t w, float* out);
void position_embedding_random(const float* gaussian, int64_t half, int64_t n, float* out);
// chunk = 65536 elements; exactly one of out_bf16 / out_f32 is set.
void fill_random_normal(uint16_t* out_bf16, float* out_f32, int64_t n, float mean, float stddev, uint64_t seed);

// ---- 8-bit images (cpu/image.cpp) ------------------------------------------------------------
void resample_rgb8_horizontal(const uint8_t* src, int64_t in_w, int64_t rows, const FixedPointTaps& taps,
                              uint8_t* dst);
void resample_u8_vertical(const uint8_t* src, int64_t row_len, int64_t row0, const FixedPointTaps& taps,
                          uint8_t* dst);
void normalize_rgb8_chw(const uint8_t* src, int64_t h, int64_t w, const float mean[3], const float stdev[3],
                        float* dst);

}  // namespace sa2va::ops::cpu
