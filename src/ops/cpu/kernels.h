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

// ---- element-wise (cpu/pointwise.cpp) --------------------------------------------------------
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
