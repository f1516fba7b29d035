#include "train/lora.h"

#include "core/error.h"
#include "ops/ops.h"

namespace sa2va::train {

Tensor merge_lora(const Tensor& weight, const Tensor& a, const Tensor& b, float scale) {
  check(weight.defined() && weight.dim() == 2, "merge_lora: the weight must be [out, in]");
  const int64_t out = weight.size(0), in = weight.size(1);
  check(a.defined() && a.dim() == 2 && a.size(1) == in && a.dtype() == DType::F32,
        "merge_lora: A must be F32 [r, " + std::to_string(in) + "]");
  const int64_t r = a.size(0);
  check(b.defined() && b.dim() == 2 && b.size(0) == out && b.size(1) == r && b.dtype() == DType::F32,
        "merge_lora: B must be F32 [" + std::to_string(out) + ", " + std::to_string(r) + "]");
  Tensor merged = weight.dtype() == DType::F32 ? weight.clone() : weight.to(DType::F32);
  const Tensor ac = a.contiguous(), bc = b.contiguous();
  ops::gemm(bc.f32(), r, ac.f32(), in, merged.f32(), in, out, in, r, /*transpose_b=*/false, scale, 1.0f);
  return merged;
}

}  // namespace sa2va::train
