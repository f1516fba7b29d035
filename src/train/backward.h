// Backward passes of the layers the trainable paths run through (docs/training.md §4), each the
// adjoint of the inference op of the same name in ops/ops.h, on contiguous F32 rows.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace sa2va::train {

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

}  // namespace sa2va::train
