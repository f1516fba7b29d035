// CPU kernels behind the device-neutral op fronts (ops/ops.h). Internal to src/ops: model code
// calls the fronts, which check shapes and pick the kernel for the device the data lives on.
//
// Conventions
//  - Raw pointers to contiguous buffers with explicit sizes; the fronts have validated them, so
//    kernels do not check again.
//  - Every kernel splits its outer loop over the thread pool (core/threadpool.h); results do not
//    depend on the number of threads.
//  - Products (cpu/linear.cpp): gemm and gemm_at through OpenBLAS, one single-threaded call per pool
//    thread (the building block of the other kernels' products); linear picks the rows kernel, the
//    bf16 GEMM or dequantized panels + sgemm by format, M and instruction set.
//  - Attention (cpu/attention.cpp): per problem, the per-row path (short queries), the fused bf16
//    kernel (bf16_operands on AVX-512 BF16), the fused f32 kernel (AVX2) or blocked sgemm + softmax;
//    batched problems (cpu/attention_batched.cpp) run one per task.
#pragma once
#include <cstdint>

#include "ops/ops.h"

namespace sa2va::ops::cpu {

// The kernels every backend has (gemm, linear, norms, element-wise, attention, RoPE, layout).
#include "ops/device_kernels.inc"

// ---- CPU only: convolution (cpu/conv.cpp) ---------------------------------------------------------
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

// ---- layout (cpu/layout.cpp) --------------------------------------------------------------------
void max_pool_tokens(const float* x, int64_t x_stride, int64_t maps, int64_t h, int64_t w, int64_t c, int64_t s,
                     float* y);
// x [h, w, c] += src [h/2, w/2, c] nearest-upsampled.
void add_upsampled_nearest_2x(float* x, int64_t h, int64_t w, int64_t c, const float* src);
// x [channels, h, w] += tile [channels, th, tw] repeated.
void add_tiled(float* x, int64_t channels, int64_t h, int64_t w, const float* tile, int64_t th, int64_t tw);

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
