// Resampling fronts (PyTorch's F.interpolate bilinear / bicubic / nearest, InternVL's pixel
// shuffle): check the input and the output size, pick the kernel for the input's device.
#include <string>

#include "core/error.h"
#include "ops/cpu/kernels.h"
#include "ops/device_check.h"
#include "ops/ops.h"

namespace sa2va::ops {
namespace {

void check_resample(const Tensor& x, int64_t out_h, int64_t out_w, const char* op) {
  check(x.defined() && x.dim() == 3 && x.dtype() == DType::F32,
        std::string(op) + ": input must be an F32 tensor [C, H, W]");
  check(x.size(1) > 0 && x.size(2) > 0 && out_h > 0 && out_w > 0,
        std::string(op) + ": empty input or output size for " + shape_str(x.shape()));
  check_kernel_device(op, "input", x.device());
}

}  // namespace

Tensor interpolate_bilinear(const Tensor& x, int64_t out_h, int64_t out_w, bool align_corners) {
  check_resample(x, out_h, out_w, "interpolate_bilinear");
  const Tensor xc = kernel_input(x, "interpolate_bilinear");
  Tensor y = Tensor::empty({x.size(0), out_h, out_w}, DType::F32, x.device());
  SA2VA_KERNEL(interpolate_bilinear, float_data(xc), x.size(0), x.size(1), x.size(2), out_h, out_w, align_corners,
               float_data(y));
  return y;
}

Tensor interpolate_bicubic(const Tensor& x, int64_t out_h, int64_t out_w) {
  check_resample(x, out_h, out_w, "interpolate_bicubic");
  const Tensor xc = kernel_input(x, "interpolate_bicubic");
  Tensor y = Tensor::empty({x.size(0), out_h, out_w}, DType::F32, x.device());
  SA2VA_KERNEL(interpolate_bicubic, float_data(xc), x.size(0), x.size(1), x.size(2), out_h, out_w, float_data(y));
  return y;
}

Tensor interpolate_nearest(const Tensor& x, int64_t out_h, int64_t out_w) {
  check_resample(x, out_h, out_w, "interpolate_nearest");
  const Tensor xc = kernel_input(x, "interpolate_nearest");
  Tensor y = Tensor::empty({x.size(0), out_h, out_w}, DType::F32, x.device());
  SA2VA_KERNEL(interpolate_nearest, float_data(xc), x.size(0), x.size(1), x.size(2), out_h, out_w, float_data(y));
  return y;
}

Tensor pixel_shuffle_v2(const Tensor& x, int64_t side) {
  check(x.defined() && x.dim() == 2 && x.dtype() == DType::F32 && side > 0 && side % 2 == 0 &&
            x.size(0) == side * side,
        "pixel_shuffle_v2: input " + (x.defined() ? shape_str(x.shape()) : std::string("undefined")) +
            " is not F32 [side², C] with an even side " + std::to_string(side));
  check_kernel_device("pixel_shuffle_v2", "input", x.device());
  const int64_t c = x.size(1), half = side / 2;
  check(x.device().is_cpu() || x.is_contiguous(), "pixel_shuffle_v2: an input on a GPU must be contiguous");
  const Tensor xc = x.contiguous();
  Tensor y = Tensor::empty({half * half, 4 * c}, DType::F32, x.device());
  SA2VA_KERNEL(pixel_shuffle_v2, static_cast<const float*>(xc.device_data()), side, c,
               static_cast<float*>(y.device_data()));
  return y;
}

}  // namespace sa2va::ops
