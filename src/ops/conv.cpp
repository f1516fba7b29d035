// Convolution fronts (2-D convolution, 2×2 transposed convolution, max pooling) on one
// channel-first image [C, H, W]: check the weight, the geometry and the devices, compute the
// output size, pick the kernel (today ops/cpu/conv.cpp).
#include <string>

#include "core/error.h"
#include "ops/cpu/kernels.h"
#include "ops/device_check.h"
#include "ops/ops.h"

namespace sa2va::ops {
namespace {

// Biases as F32 (a GPU's must already be: conversions are made at load).
Tensor as_f32(const Tensor& t) {
  check(t.dtype() == DType::F32 || t.device().is_cpu(), "conv: a bias on " + t.device().name() + " must be F32");
  return t.dtype() == DType::F32 ? t.contiguous() : t.to(DType::F32);
}

void check_image(const Tensor& x, const char* op) {
  check(x.defined() && x.dim() == 3 && x.dtype() == DType::F32,
        std::string(op) + ": input must be an F32 tensor [C, H, W]");
  check_kernel_device(op, "input", x.device());
}

// The weight and the bias must live with the input (checked to be on a device with kernels).
void check_devices(const char* op, const Tensor& x, const ConvWeight& weight, const Tensor& bias) {
  check_same_device(op, "weight", weight.matrix.device(), "input", x.device());
  if (bias.defined()) check_same_device(op, "bias", bias.device(), "input", x.device());
}

}  // namespace

Tensor conv2d(const Tensor& x, const ConvWeight& weight, const Tensor& bias, const Conv2dArgs& args) {
  check_image(x, "conv2d");
  check(weight.defined() && weight.matrix.format() == WeightFormat::F32,
        "conv2d: the weight is not prepared (ConvWeight::prepare)");
  check_devices("conv2d", x, weight, bias);
  check(args.groups >= 1 && args.stride_h >= 1 && args.stride_w >= 1 && args.dilation_h >= 1 &&
            args.dilation_w >= 1 && args.pad_h >= 0 && args.pad_w >= 0,
        "conv2d: invalid stride/padding/dilation/groups");
  ConvGeometry g{x.size(0), x.size(1), x.size(2), weight.out_channels, weight.kernel_h, weight.kernel_w, 0, 0,
                      args};
  check(g.cin % args.groups == 0 && g.cout % args.groups == 0 && weight.in_channels == g.cin / args.groups,
        "conv2d: weight [" + std::to_string(g.cout) + ", " + std::to_string(weight.in_channels) + ", " +
            std::to_string(g.kh) + ", " + std::to_string(g.kw) + "] does not fit input " + shape_str(x.shape()) +
            " with " + std::to_string(args.groups) + " groups");
  g.ho = (g.h + 2 * args.pad_h - args.dilation_h * (g.kh - 1) - 1) / args.stride_h + 1;
  g.wo = (g.w + 2 * args.pad_w - args.dilation_w * (g.kw - 1) - 1) / args.stride_w + 1;
  check(g.h + 2 * args.pad_h >= args.dilation_h * (g.kh - 1) + 1 &&
            g.w + 2 * args.pad_w >= args.dilation_w * (g.kw - 1) + 1,
        "conv2d: kernel larger than the padded input " + shape_str(x.shape()));
  Tensor b;
  if (bias.defined()) {
    check(bias.numel() == g.cout, "conv2d: bias size does not match output channels");
    b = as_f32(bias);
  }
  const Tensor xc = kernel_input(x, "conv2d");
  Tensor y = Tensor::empty({g.cout, g.ho, g.wo}, DType::F32, x.device());
  SA2VA_KERNEL(conv2d, float_data(xc), float_data(weight.matrix.values()), b.defined() ? float_data(b) : nullptr,
               float_data(y), g);
  return y;
}

Tensor conv_transpose_2x2(const Tensor& x, const ConvWeight& weight, const Tensor& bias) {
  check_image(x, "conv_transpose_2x2");
  const int64_t cin = x.size(0), h = x.size(1), w = x.size(2);
  check(weight.defined() && weight.matrix.format() == WeightFormat::F32 && weight.kernel_h == 2 &&
            weight.kernel_w == 2 && weight.matrix.rows() == weight.out_channels * 4,
        "conv_transpose_2x2: the weight is not prepared (ConvWeight::prepare_transposed_2x2)");
  check(weight.in_channels == cin, "conv_transpose_2x2: weight for " + std::to_string(weight.in_channels) +
                                       " input channels does not fit input " + shape_str(x.shape()));
  check_devices("conv_transpose_2x2", x, weight, bias);
  const int64_t cout = weight.out_channels;
  Tensor b;
  if (bias.defined()) {
    check(bias.numel() == cout, "conv_transpose_2x2: bias size does not match output channels");
    b = as_f32(bias);
  }
  const Tensor xc = kernel_input(x, "conv_transpose_2x2");
  Tensor y = Tensor::empty({cout, 2 * h, 2 * w}, DType::F32, x.device());
  SA2VA_KERNEL(conv_transpose_2x2, float_data(xc), cin, h, w, float_data(weight.matrix.values()), cout,
               b.defined() ? float_data(b) : nullptr, float_data(y));
  return y;
}

Tensor max_pool2d(const Tensor& x, int64_t kernel, int64_t stride) {
  check_image(x, "max_pool2d");
  check(kernel >= 1 && stride >= 1 && x.size(1) >= kernel && x.size(2) >= kernel,
        "max_pool2d: kernel " + std::to_string(kernel) + " does not fit input " + shape_str(x.shape()));
  const int64_t c = x.size(0), h = x.size(1), w = x.size(2);
  const int64_t ho = (h - kernel) / stride + 1, wo = (w - kernel) / stride + 1;
  const Tensor xc = kernel_input(x, "max_pool2d");
  Tensor y = Tensor::empty({c, ho, wo}, DType::F32, x.device());
  SA2VA_KERNEL(max_pool2d, float_data(xc), c, h, w, kernel, stride, float_data(y));
  return y;
}

}  // namespace sa2va::ops
