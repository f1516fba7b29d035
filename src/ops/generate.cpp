// Generated-table fronts: check sizes, pick the kernel (ops/cpu/generate.cpp).
#include <string>

#include "core/error.h"
#include "ops/cpu/kernels.h"
#include "ops/ops.h"

namespace sa2va::ops {

Tensor position_embedding_sine(int64_t channels, int64_t h, int64_t w) {
  check(channels > 0 && channels % 4 == 0, "position_embedding_sine: channels must be a positive multiple of 4, got " +
                                               std::to_string(channels));
  check(h >= 0 && w >= 0, "position_embedding_sine: negative map size " + shape_str({h, w}));
  Tensor out = Tensor::empty({channels, h, w});
  if (out.numel() > 0) cpu::position_embedding_sine(channels, h, w, out.f32());
  return out;
}

Tensor position_embedding_random(const Tensor& gaussian, int64_t n) {
  check(gaussian.defined() && gaussian.dtype() == DType::F32 && gaussian.dim() == 2 && gaussian.size(0) == 2 &&
            gaussian.size(1) > 0,
        "position_embedding_random: gaussian must be an F32 tensor [2, half], got " +
            (gaussian.defined() ? std::string(dtype_name(gaussian.dtype())) + " " + shape_str(gaussian.shape())
                                : std::string("none")));
  check(n >= 0, "position_embedding_random: negative grid size " + std::to_string(n));
  const int64_t half = gaussian.size(1);
  Tensor out = Tensor::empty({2 * half, n, n});
  if (out.numel() > 0) cpu::position_embedding_random(gaussian.contiguous().f32(), half, n, out.f32());
  return out;
}

void fill_random_normal(const Tensor& t, float mean, float stddev, uint64_t seed) {
  check(t.defined() && (t.dtype() == DType::BF16 || t.dtype() == DType::F32) && t.is_contiguous(),
        "fill_random_normal: expected a contiguous BF16 or F32 tensor, got " +
            (t.defined() ? std::string(dtype_name(t.dtype())) + " " + shape_str(t.shape()) : std::string("none")));
  if (t.numel() == 0) return;
  if (t.dtype() == DType::BF16) cpu::fill_random_normal(t.bf16(), nullptr, t.numel(), mean, stddev, seed);
  else cpu::fill_random_normal(nullptr, t.f32(), t.numel(), mean, stddev, seed);
}

}  // namespace sa2va::ops
