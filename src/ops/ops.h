// CPU operators used by every Sa2VA component.
//
// Conventions
//  - Activations are contiguous float32 buffers passed as raw pointers with explicit sizes;
//    the callers (model components) own them as Tensors. Row-major, innermost dimension last.
//  - Weights are Tensors (F32, or BF16 straight from the checkpoint) so the same op serves
//    the f32 conformance mode and the bf16 fast mode.
//  - Every op splits its outer loop over the thread pool (core/threadpool.h).
//  - Images / feature maps are channel-first [C, H, W] for one batch element (the callers
//    loop over the batch), tokens are [N, C].
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace sa2va::ops {

// ---- matrix products ---------------------------------------------------------------------
// y[M,N] = x[M,K] · Wᵀ (+ bias[N]). W is a PyTorch Linear weight [N, K], F32 or BF16.
// BF16 weights: f32 accumulation; large M goes through a bf16 GEMM (activations rounded to
// bf16), small M (decode) through a bandwidth-bound kernel that reads the bf16 weights directly.
void linear(const float* x, int64_t M, int64_t K, const Tensor& weight, const float* bias, float* y);
// Tensor form: x [..., K] F32 contiguous -> [..., N]. bias may be an undefined Tensor.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());

// C[M,N] = alpha · A[M,K] · op(B) + beta · C, all f32, with leading dimensions (row strides).
// op(B) = B [K,N] (ldb >= N) or, when transpose_b, Bᵀ with B stored [N,K] (ldb >= K).
void gemm(const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc,
          int64_t M, int64_t N, int64_t K, bool transpose_b, float alpha = 1.f, float beta = 0.f);

// ---- normalisation -------------------------------------------------------------------------
// Per row of `dim` elements: (x - mean) / sqrt(var + eps) * w + b   (w, b may be null).
void layer_norm(const float* x, const float* w, const float* b, float* y, int64_t rows, int64_t dim, float eps);
// Per row: x / sqrt(mean(x²) + eps) * w.
void rms_norm(const float* x, const float* w, float* y, int64_t rows, int64_t dim, float eps);
// SAM2 LayerNorm2d on [C, HW]: normalise over channels at each pixel, then per-channel w, b.
void layer_norm_2d(const float* x, const float* w, const float* b, float* y, int64_t channels, int64_t pixels, float eps);

// ---- element-wise (in place) ---------------------------------------------------------------
void gelu_erf(float* x, int64_t n);    // 0.5·x·(1 + erf(x/√2))
void gelu_tanh(float* x, int64_t n);   // 0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³)))
void silu(float* x, int64_t n);
void relu(float* x, int64_t n);
void sigmoid(float* x, int64_t n);
void softmax_rows(float* x, int64_t rows, int64_t n);   // numerically stable, per row
// y = a ⊙ b with b broadcast: b has `inner` elements repeated over `outer` rows (per-channel
// scale on [N, C]), or b has `outer` elements each applied to one whole row (per-row scale).
void add(const float* a, const float* b, float* y, int64_t n);               // same size
void add_rows(float* x, const float* row, int64_t rows, int64_t dim);        // x[r, :] += row
void mul_rows(float* x, const float* row, int64_t rows, int64_t dim);        // x[r, :] *= row
void add_per_row(float* x, const float* per_row, int64_t rows, int64_t dim); // x[r, :] += per_row[r]
void scale(float* x, float s, int64_t n);
// SwiGLU: gate[i] = silu(gate[i]) * up[i]
void silu_mul(float* gate, const float* up, int64_t n);

// ---- attention -----------------------------------------------------------------------------
// out[i, h, :] = softmax(scale · q[i,h,:] · k[j, h/n_rep, :]ᵀ + mask[i,j]) · v[j, h/n_rep, :]
// q: [Sq, Hq, D] with row stride q_stride (elements between consecutive tokens), likewise k, v
// ([Sk, Hkv, D] / [Sk, Hkv, Dv]) and out ([Sq, Hq, Dv], row stride out_stride).
// causal: query i (absolute position q_offset + i) sees keys j <= q_offset + i.
// mask: optional additive [Sq, Sk]. GQA: n_rep = Hq / Hkv.
// bf16_operands (the bf16 fast mode, as PyTorch's bf16 SDPA): q, k, v and the probabilities are
// rounded to bf16 and multiplied on the bf16 dot-product unit with f32 accumulation, in one fused
// pass without a full score matrix; softmax stays f32. Without AVX-512 BF16 it computes in f32.
struct AttentionArgs {
  const float* q = nullptr; int64_t q_stride = 0;
  const float* k = nullptr; int64_t k_stride = 0;
  const float* v = nullptr; int64_t v_stride = 0;
  float* out = nullptr; int64_t out_stride = 0;
  int64_t q_len = 0, kv_len = 0, q_heads = 1, kv_heads = 1, head_dim = 0, v_head_dim = 0;  // v_head_dim 0 = head_dim
  float scale = 1.f;
  bool causal = false;
  int64_t q_offset = 0;
  const float* mask = nullptr;
  bool bf16_operands = false;
};
void attention(const AttentionArgs& args);

// ---- positional encodings ------------------------------------------------------------------
// Rotate-half RoPE (LLMs) in place on x [tokens, heads, head_dim] with row stride `stride`;
// token t has position positions[t]; inv_freq[k] = 1 / theta^(2k/head_dim).
void rope_rotate_half(float* x, int64_t tokens, int64_t heads, int64_t head_dim, int64_t stride,
                      const int64_t* positions, float theta);
// SAM2 axial 2D RoPE in place on x [tokens, dim] (one head, interleaved complex pairs).
// Token n uses grid position (n mod (grid_w·grid_h)): column c = p mod grid_w, row r = p / grid_w.
// Pairs j < dim/4 rotate by c·f_j, pairs dim/4 + j by r·f_j, with f_j = 1 / theta^(4j/dim).
// Only the first `rope_tokens` tokens are rotated (object-pointer tokens are excluded).
void rope_axial_2d(float* x, int64_t tokens, int64_t dim, int64_t grid_w, int64_t grid_h, float theta,
                   int64_t rope_tokens);

// ---- convolution & resampling (one batch element, channel-first) ----------------------------
struct Conv2dArgs {
  int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dilation_h = 1, dilation_w = 1, groups = 1;
};
// x [Cin, H, W] -> y [Cout, Ho, Wo]; weight [Cout, Cin/groups, kh, kw] (F32 or BF16), bias [Cout] or undefined.
// Ho = (H + 2·pad_h − dil_h·(kh−1) − 1)/stride_h + 1, likewise Wo.
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dArgs& args);
// ConvTranspose2d kernel 2 stride 2: x [Cin, H, W] -> y [Cout, 2H, 2W]; weight [Cin, Cout, 2, 2].
Tensor conv_transpose_2x2(const Tensor& x, const Tensor& weight, const Tensor& bias);
// MaxPool2d(kernel, stride), no padding: [C, H, W] -> [C, Ho, Wo].
Tensor max_pool2d(const Tensor& x, int64_t kernel, int64_t stride);
// PyTorch F.interpolate on [C, H, W] -> [C, Ho, Wo].
Tensor interpolate_bilinear(const Tensor& x, int64_t out_h, int64_t out_w, bool align_corners);
Tensor interpolate_nearest(const Tensor& x, int64_t out_h, int64_t out_w);   // legacy 'nearest'
Tensor interpolate_bicubic(const Tensor& x, int64_t out_h, int64_t out_w);   // A = −0.75, align_corners false
// InternVL pixel shuffle (scale 0.5, ps_version v2) on tokens of a square grid:
// x [side·side, C] -> [(side/2)², 4C] with out[i·side/2 + j][m·2C + k·C + c] = x[(2i+m)·side + 2j+k][c].
Tensor pixel_shuffle_v2(const Tensor& x, int64_t side);

}  // namespace sa2va::ops
