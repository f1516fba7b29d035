// Run-time selected SIMD kernels shared by the CPU operators.
// The instruction set is detected once (AVX-512 with BF16 dot products, AVX2+FMA, or plain C++);
// every kernel here has all three variants so the same binary runs on any x86-64 CPU.
#pragma once
#include <cstdint>

namespace sa2va::ops::simd {

enum class Isa : int { Scalar = 0, Avx2 = 1, Avx512 = 2 };

// The instruction set in use: the best the CPU supports, capped by set_max_isa.
Isa isa();
// Caps the instruction set (tests use it to exercise the fallbacks); returns the previous cap.
Isa set_max_isa(Isa cap);
const char* isa_name(Isa isa);

// Σ a[i]·b[i]
float dot(const float* a, const float* b, int64_t n);
// y[i] += alpha · x[i]
void axpy(float alpha, const float* x, float* y, int64_t n);

// Small-M product with BF16 weight rows, f32 activations, f32 accumulation:
// y[i·ldy + r] = Σ_k w[r·ldw + k] · x[i·ldx + k]   for r < rows, i < m.
void bf16_rows_times_f32(const uint16_t* w, int64_t ldw, int64_t rows, int64_t k, const float* x,
                         int64_t ldx, int64_t m, float* y, int64_t ldy);

// Large-M product y[M,N] = x[M,K] · Wᵀ with BF16 weights W[N,K] using AVX-512 BF16 dot products:
// x is rounded to bf16, accumulation is f32. Returns false (doing nothing) without AVX-512 BF16.
bool bf16_gemm(const float* x, int64_t M, int64_t K, const uint16_t* w, int64_t N, float* y);

// Element-wise maps, in place (vectorised exp/erf/tanh with ~1e-7 relative error).
void exp_inplace(float* x, int64_t n);
// Stable softmax over x[0, visible); x[visible, total) and a row with nothing visible (all -inf)
// become 0. Shared by softmax_rows and attention.
void softmax_inplace(float* x, int64_t visible, int64_t total);
void silu_inplace(float* x, int64_t n);
void sigmoid_inplace(float* x, int64_t n);
void gelu_erf_inplace(float* x, int64_t n);
void gelu_tanh_inplace(float* x, int64_t n);

}  // namespace sa2va::ops::simd
