// LoRA on a linear layer (docs/training.md §1): y = x·Wᵀ + b + (x·Aᵀ)·Bᵀ · alpha/r with A [r, in] and
// B [out, r]; merging folds the low-rank product into the frozen weight for export.
#pragma once
#include "core/tensor.h"

namespace sa2va::train {

// W + (B·A)·scale as a new F32 [out, in] tensor (W may be BF16 or F32).
Tensor merge_lora(const Tensor& weight, const Tensor& a, const Tensor& b, float scale);

}  // namespace sa2va::train
