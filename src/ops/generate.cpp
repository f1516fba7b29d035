// Generated-table fronts: check sizes, pick the kernel (ops/cpu/generate.cpp; on a GPU the same
// tables, made on the host and copied). New tables go to the calling thread's device.
#include <string>

#include "core/error.h"
#include "ops/cpu/kernels.h"
#include "ops/device_check.h"
#include "ops/ops.h"

namespace sa2va::ops {

Tensor position_embedding_sine(int64_t channels, int64_t h, int64_t w) {
  check(channels > 0 && channels % 4 == 0, "position_embedding_sine: channels must be a positive multiple of 4, got " +
                                               std::to_string(channels));
  check(h >= 0 && w >= 0, "position_embedding_sine: negative map size " + shape_str({h, w}));
  Tensor out = Tensor::empty({channels, h, w}, DType::F32, current_device());
  if (out.numel() > 0) SA2VA_KERNEL(position_embedding_sine, channels, h, w, float_data(out));
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
  const Tensor g = kernel_input(gaussian, "position_embedding_random", "gaussian");
  Tensor out = Tensor::empty({2 * half, n, n}, DType::F32, g.device());
  if (out.numel() > 0) SA2VA_KERNEL(position_embedding_random, float_data(g), half, n, float_data(out));
  return out;
}

void fill_random_normal(const Tensor& t, float mean, float stddev, uint64_t seed) {
  check(t.defined() && (t.dtype() == DType::BF16 || t.dtype() == DType::F32) && t.is_contiguous(),
        "fill_random_normal: expected a contiguous BF16 or F32 tensor, got " +
            (t.defined() ? std::string(dtype_name(t.dtype())) + " " + shape_str(t.shape()) : std::string("none")));
  if (t.numel() == 0) return;
  check_kernel_device("fill_random_normal", "tensor", t.device());
  if (t.dtype() == DType::BF16)
    SA2VA_KERNEL(fill_random_normal, static_cast<uint16_t*>(t.device_data()), nullptr, t.numel(), mean, stddev, seed);
  else SA2VA_KERNEL(fill_random_normal, nullptr, float_data(t), t.numel(), mean, stddev, seed);
}

}  // namespace sa2va::ops
