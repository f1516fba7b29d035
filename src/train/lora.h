// LoRA on a linear layer (docs/training.md §1): y = x·Wᵀ + b + (x·Aᵀ)·Bᵀ · alpha/r with A [r, in] and
// B [out, r]; merging folds the low-rank product into the frozen weight for export.
#pragma once
#include "core/tensor.h"

namespace sa2va::train {

// A frozen linear layer (F32 weight [out, in], optional bias [out]) with its trainable LoRA pair.
struct LoraLinear {
  Tensor weight, bias;  // frozen
  Tensor a, b;          // A [r, in], B [out, r]
  float scale = 2.0f;   // alpha / r
};

// What the backward pass needs from the forward one.
struct LoraSaved {
  Tensor x;   // the input [N, in]
  Tensor xa;  // x·Aᵀ [N, r]
};
// y [N, out] = x·Wᵀ + bias + (x·Aᵀ)·Bᵀ·scale.
Tensor lora_forward(const LoraLinear& layer, const Tensor& x, LoraSaved* saved = nullptr);

struct LoraGrads {
  Tensor dx;      // [N, in]
  Tensor da, db;  // [r, in], [out, r]
};
// From dy [N, out]: dx = dy·W + (dy·B)·A·scale, dA = (dy·B)ᵀ·x·scale, dB = dyᵀ·(x·Aᵀ)·scale.
LoraGrads lora_backward(const LoraLinear& layer, const LoraSaved& saved, const Tensor& dy);

// W + (B·A)·scale as a new F32 [out, in] tensor (W may be BF16 or F32).
Tensor merge_lora(const Tensor& weight, const Tensor& a, const Tensor& b, float scale);

}  // namespace sa2va::train
