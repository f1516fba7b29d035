// Backward passes of the layers the trainable paths run through (docs/training.md §4), each the
// adjoint of the inference op of the same name in ops/ops.h, on contiguous F32 rows.
#pragma once
#include <cstdint>
#include <map>
#include <string>

#include "core/tensor.h"
#include "ops/ops.h"

namespace sa2va::train {

// y = x·Wᵀ + b on F32 rows x [N, in] (b may be undefined): the forward pass linear_backward inverts.
Tensor linear_forward(const Tensor& x, const Tensor& weight, const Tensor& bias);

// Gradient sums: into[name] += g (the first one copied in), and into += g (same sizes).
void accumulate(std::map<std::string, Tensor>& into, const std::string& name, const Tensor& g);
void accumulate(Tensor& into, const Tensor& g);

struct LinearGrads {
  Tensor dx;      // [N, in]
  Tensor dw, db;  // [out, in], [out] (db undefined without a bias)
};
// y = x·Wᵀ + b: dx = dy·W, dW = dyᵀ·x, db = Σ_rows dy.
LinearGrads linear_backward(const Tensor& x, const Tensor& weight, bool has_bias, const Tensor& dy);

struct NormGrads {
  Tensor dx;      // [N, D]
  Tensor dw, db;  // [D] (db undefined for RMSNorm)
};
// y = (x − mean)/sqrt(var + eps)·w + b per row.
NormGrads layer_norm_backward(const Tensor& x, const Tensor& weight, float eps, const Tensor& dy);
// y = x/sqrt(mean(x²) + eps)·w per row.
NormGrads rms_norm_backward(const Tensor& x, const Tensor& weight, float eps, const Tensor& dy);

// Element-wise activations: the gradient at the input x given dy (same shapes).
Tensor gelu_erf_backward(const Tensor& x, const Tensor& dy);  // 0.5·x·(1 + erf(x/√2))
Tensor relu_backward(const Tensor& x, const Tensor& dy);      // 0 at and below 0
// y = silu(gate)·up (the SwiGLU of Qwen2 and InternLM2): gradients of gate and up.
void silu_mul_backward(const Tensor& gate, const Tensor& up, const Tensor& dy, Tensor& dgate, Tensor& dup);

// Softmax attention (ops::attention's arguments: q [Sq, Hq, D], k [Sk, Hkv, D], v [Sk, Hkv, Dv], GQA,
// causal with q_offset, scale; no additive mask) given the output gradient dout [Sq, Hq, Dv]: the
// probabilities are recomputed head by head instead of kept, so the forward pass stores nothing.
// dq, dk, dv are written with the strides of q, k, v (dk and dv are overwritten, summed over the
// query heads sharing a key/value head).
struct AttentionGrads {
  float* dq = nullptr;
  float* dk = nullptr;
  float* dv = nullptr;
};
void attention_backward(const ops::AttentionArgs& args, const float* dout, int64_t dout_stride, const AttentionGrads& grads);

// Rotate-half RoPE is a rotation per pair: its adjoint rotates back, in place on dx [tokens, heads, head_dim].
void rope_rotate_half_backward(float* dx, int64_t tokens, int64_t heads, int64_t head_dim, int64_t stride,
                               const int64_t* positions, float theta);

}  // namespace sa2va::train
