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
//    bf16 GEMM (AVX-512 BF16 or AVX2) or dequantized panels + sgemm by format, M and instruction set.
//  - Convolutions (cpu/conv.cpp): depthwise ones by direct loops, the rest by im2col + sgemm per group.
//  - Attention (cpu/attention.cpp): per problem, the per-row path (short queries), the fused bf16
//    kernel (bf16_operands on AVX-512 BF16), the fused f32 kernel (AVX2) or blocked sgemm + softmax;
//    batched problems (cpu/attention_batched.cpp) run one per task.
#pragma once
#include <cstdint>

#include "ops/kernel_types.h"
#include "ops/ops.h"

namespace sa2va::ops::cpu {

// The kernels (one declaration list for every backend).
#include "ops/device_kernels.inc"

// ops::kernel_layout's CPU rule: whether linear() reads `weight` faster with its rows interleaved.
bool prefers_interleaved_rows(const WeightMatrix& weight);
// linear() then the activation (ReLU or GELU-erf) where the bf16 GEMM runs it (BF16 weights in panels,
// or rows and more than decode's rows), applied to each finished block of y; false (nothing done)
// elsewhere and for Activation::None.
bool linear_activated(const float* x, int64_t M, int64_t K, const WeightMatrix& weight, const float* bias, float* y,
                      Activation activation);
// ops::feed_forward where both matrices are in the bf16 GEMM's panels (simd::bf16_mlp_panels); false
// (nothing done) elsewhere.
bool feed_forward(const float* x, int64_t M, const WeightMatrix& fc1, const float* b1, Activation activation,
                  float* hidden, const WeightMatrix& fc2, const float* b2, float* y);
// ops::gated_feed_forward with BF16 weight rows and more than decode's rows (simd::bf16_gated_mlp,
// the bf16 hidden layer kept in `gate`); false (nothing done) elsewhere.
bool gated_feed_forward(const float* x, int64_t M, int64_t K, const WeightMatrix& w_gate, const WeightMatrix& w_up,
                        float* gate, const WeightMatrix& w_down, float* y);
// ops::many_rows_layout's CPU rule: whether linear() reads `weight` faster in the bf16 GEMM's panels.
bool prefers_bf16_panels(const WeightMatrix& weight);

}  // namespace sa2va::ops::cpu
