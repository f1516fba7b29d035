#include "train/lora.h"

#include "core/error.h"
#include "ops/ops.h"

namespace sa2va::train {
namespace {

void check_layer(const LoraLinear& layer) {
  check(layer.weight.defined() && layer.weight.dim() == 2 && layer.weight.dtype() == DType::F32,
        "LoRA: the frozen weight must be F32 [out, in]");
  const int64_t out = layer.weight.size(0), in = layer.weight.size(1);
  check(!layer.bias.defined() || (layer.bias.numel() == out && layer.bias.dtype() == DType::F32),
        "LoRA: the bias must be F32 [" + std::to_string(out) + "]");
  check(layer.a.defined() && layer.a.dim() == 2 && layer.a.size(1) == in && layer.a.dtype() == DType::F32,
        "LoRA: A must be F32 [r, " + std::to_string(in) + "]");
  check(layer.b.defined() && layer.b.dim() == 2 && layer.b.size(0) == out && layer.b.size(1) == layer.a.size(0) &&
            layer.b.dtype() == DType::F32,
        "LoRA: B must be F32 [" + std::to_string(out) + ", " + std::to_string(layer.a.size(0)) + "]");
}

// C [M, N] = alpha·Aᵀ·B for A [K, M], B [K, N] (the weight-gradient products).
Tensor transposed_product(const Tensor& a, const Tensor& b, float alpha) {
  const int64_t k = a.size(0), m = a.size(1), n = b.size(1);
  const Tensor at = ops::transpose_2d(a);
  Tensor c = Tensor::empty({m, n});
  ops::gemm(at.f32(), k, b.f32(), n, c.f32(), n, m, n, k, /*transpose_b=*/false, alpha, 0.0f);
  return c;
}

}  // namespace

Tensor lora_forward(const LoraLinear& layer, const Tensor& x_in, LoraSaved* saved) {
  check_layer(layer);
  const int64_t out = layer.weight.size(0), in = layer.weight.size(1), r = layer.a.size(0);
  check(x_in.defined() && x_in.dim() == 2 && x_in.size(1) == in && x_in.dtype() == DType::F32,
        "LoRA: the input must be F32 [N, " + std::to_string(in) + "]");
  const Tensor x = x_in.contiguous();
  const int64_t n = x.size(0);
  Tensor y = Tensor::empty({n, out});
  ops::gemm(x.f32(), in, layer.weight.contiguous().f32(), in, y.f32(), out, n, out, in, /*transpose_b=*/true);
  if (layer.bias.defined()) ops::add_rows(y.f32(), layer.bias.contiguous().f32(), n, out);
  Tensor xa = Tensor::empty({n, r});
  ops::gemm(x.f32(), in, layer.a.contiguous().f32(), in, xa.f32(), r, n, r, in, /*transpose_b=*/true);
  ops::gemm(xa.f32(), r, layer.b.contiguous().f32(), r, y.f32(), out, n, out, r, /*transpose_b=*/true, layer.scale, 1.0f);
  if (saved) *saved = {x, xa};
  return y;
}

LoraGrads lora_backward(const LoraLinear& layer, const LoraSaved& saved, const Tensor& dy_in) {
  check_layer(layer);
  const int64_t out = layer.weight.size(0), in = layer.weight.size(1), r = layer.a.size(0), n = saved.x.size(0);
  check(dy_in.defined() && dy_in.dim() == 2 && dy_in.size(0) == n && dy_in.size(1) == out && dy_in.dtype() == DType::F32,
        "LoRA: the output gradient must be F32 [" + std::to_string(n) + ", " + std::to_string(out) + "]");
  const Tensor dy = dy_in.contiguous();
  LoraGrads g;
  Tensor dyb = Tensor::empty({n, r});  // dy·B
  ops::gemm(dy.f32(), out, layer.b.contiguous().f32(), r, dyb.f32(), r, n, r, out, /*transpose_b=*/false);
  g.dx = Tensor::empty({n, in});
  ops::gemm(dy.f32(), out, layer.weight.contiguous().f32(), in, g.dx.f32(), in, n, in, out, /*transpose_b=*/false);
  ops::gemm(dyb.f32(), r, layer.a.contiguous().f32(), in, g.dx.f32(), in, n, in, r, /*transpose_b=*/false, layer.scale,
            1.0f);
  g.da = transposed_product(dyb, saved.x, layer.scale);
  g.db = transposed_product(dy, saved.xa, layer.scale);
  return g;
}

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
