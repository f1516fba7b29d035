// conv2d (im2col, pointwise and depthwise paths), 2×2 transposed convolution and max pooling
// against direct loops in double.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/error.h"
#include "ops/ops.h"
#include "ops_test_util.h"

namespace sa2va {
namespace {

using ops_test::max_abs_diff;
using ops_test::random_tensor;

class OpsConvTest : public ops_test::ThreadedTest {};

struct ConvCase {
  int64_t cin, h, w, cout, kh, kw;
  ops::Conv2dArgs args;
  bool bias, bf16;
};

std::vector<double> reference_conv(const Tensor& x, const Tensor& weight, const Tensor& bias, const ConvCase& c,
                                   int64_t ho, int64_t wo) {
  const auto xv = x.to_vector(), wv = weight.to_vector();
  const auto bv = bias.defined() ? bias.to_vector() : std::vector<float>();
  const auto& a = c.args;
  const int64_t cin_g = c.cin / a.groups, cout_g = c.cout / a.groups;
  std::vector<double> y(static_cast<size_t>(c.cout * ho * wo));
  for (int64_t co = 0; co < c.cout; ++co)
    for (int64_t oy = 0; oy < ho; ++oy)
      for (int64_t ox = 0; ox < wo; ++ox) {
        double s = bv.empty() ? 0.0 : bv[co];
        const int64_t g = co / cout_g;
        for (int64_t ci = 0; ci < cin_g; ++ci)
          for (int64_t ky = 0; ky < c.kh; ++ky)
            for (int64_t kx = 0; kx < c.kw; ++kx) {
              const int64_t iy = oy * a.stride_h - a.pad_h + ky * a.dilation_h;
              const int64_t ix = ox * a.stride_w - a.pad_w + kx * a.dilation_w;
              if (iy < 0 || iy >= c.h || ix < 0 || ix >= c.w) continue;
              s += static_cast<double>(xv[((g * cin_g + ci) * c.h + iy) * c.w + ix]) *
                   wv[((co * cin_g + ci) * c.kh + ky) * c.kw + kx];
            }
        y[(co * ho + oy) * wo + ox] = s;
      }
  return y;
}

ops::Conv2dArgs make_args(int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t groups) {
  ops::Conv2dArgs a;
  a.stride_h = sh, a.stride_w = sw, a.pad_h = ph, a.pad_w = pw, a.dilation_h = dh, a.dilation_w = dw, a.groups = groups;
  return a;
}

TEST_P(OpsConvTest, Conv2dMatchesDirectLoops) {
  const ConvCase cases[] = {
      {5, 11, 9, 7, 3, 2, make_args(2, 1, 1, 0, 1, 2, 1), true, false},    // mixed stride/pad/dilation
      {6, 8, 7, 4, 3, 3, make_args(1, 1, 1, 1, 1, 1, 2), false, false},    // groups
      {5, 13, 11, 5, 7, 7, make_args(1, 1, 3, 3, 1, 1, 5), true, false},   // depthwise 7×7 pad 3 (ConvNeXt)
      {4, 10, 9, 4, 3, 3, make_args(2, 3, 2, 1, 2, 1, 4), true, false},    // depthwise, strided and dilated
      {3, 29, 28, 8, 14, 14, make_args(14, 14, 0, 0, 1, 1, 1), true, false},  // 14×14 stride-14 patchify
      {3, 17, 18, 6, 7, 7, make_args(4, 4, 3, 3, 1, 1, 1), true, false},   // 7×7 stride 4 pad 3 (Hiera stem)
      {9, 5, 7, 5, 1, 1, make_args(1, 1, 0, 0, 1, 1, 1), true, false},     // pointwise
      {9, 5, 7, 5, 1, 1, make_args(1, 1, 0, 0, 1, 1, 1), false, true},     // pointwise, BF16 weights
      {4, 6, 6, 3, 2, 2, make_args(2, 2, 0, 0, 1, 1, 1), true, true},      // BF16 weights
      {1, 1, 1, 1, 1, 1, make_args(1, 1, 0, 0, 1, 1, 1), true, false},     // 1-element edge
  };
  uint32_t seed = 100;
  for (const auto& c : cases) {
    SCOPED_TRACE(::testing::Message() << "cin=" << c.cin << " " << c.h << "x" << c.w << " cout=" << c.cout << " k="
                                      << c.kh << "x" << c.kw << " groups=" << c.args.groups << " bf16=" << c.bf16);
    Tensor x = random_tensor({c.cin, c.h, c.w}, seed++);
    Tensor w = random_tensor({c.cout, c.cin / c.args.groups, c.kh, c.kw}, seed++);
    if (c.bf16) w = w.to(DType::BF16);
    Tensor b = c.bias ? random_tensor({c.cout}, seed++) : Tensor();
    Tensor y = ops::conv2d(x, ConvWeight::prepare(w), b, c.args);
    const auto& a = c.args;
    const int64_t ho = (c.h + 2 * a.pad_h - a.dilation_h * (c.kh - 1) - 1) / a.stride_h + 1;
    const int64_t wo = (c.w + 2 * a.pad_w - a.dilation_w * (c.kw - 1) - 1) / a.stride_w + 1;
    ASSERT_EQ(y.shape(), (Shape{c.cout, ho, wo}));
    EXPECT_LT(max_abs_diff(y.to_vector(), reference_conv(x, w, b, c, ho, wo)), 1e-5);
  }
}

TEST_P(OpsConvTest, Conv2dRejectsBadShapes) {
  Tensor x = random_tensor({3, 5, 5}, 1);
  EXPECT_THROW(ops::conv2d(x, ConvWeight::prepare(random_tensor({4, 2, 3, 3}, 2)), Tensor(), ops::Conv2dArgs{}), Error);  // Cin mismatch
  EXPECT_THROW(ops::conv2d(x, ConvWeight::prepare(random_tensor({4, 3, 7, 7}, 2)), Tensor(), ops::Conv2dArgs{}), Error);  // kernel > input
  EXPECT_THROW(ops::conv2d(x, ConvWeight::prepare(random_tensor({4, 3, 3, 3}, 2)), random_tensor({5}, 3), ops::Conv2dArgs{}), Error);
}

TEST_P(OpsConvTest, ConvTranspose2x2) {
  for (bool with_bias : {true, false}) {
    const int64_t cin = 5, cout = 3, h = 4, w = 3;
    Tensor x = random_tensor({cin, h, w}, 7), wt = random_tensor({cin, cout, 2, 2}, 8);
    Tensor b = with_bias ? random_tensor({cout}, 9) : Tensor();
    Tensor y = ops::conv_transpose_2x2(x, ConvWeight::prepare_transposed_2x2(wt), b);
    ASSERT_EQ(y.shape(), (Shape{cout, 2 * h, 2 * w}));
    const auto xv = x.to_vector(), wv = wt.to_vector();
    std::vector<double> ref(static_cast<size_t>(cout * 4 * h * w));
    for (int64_t co = 0; co < cout; ++co)
      for (int64_t oy = 0; oy < 2 * h; ++oy)
        for (int64_t ox = 0; ox < 2 * w; ++ox) {
          double s = with_bias ? b.to_vector()[co] : 0.0;
          for (int64_t ci = 0; ci < cin; ++ci)
            s += static_cast<double>(xv[(ci * h + oy / 2) * w + ox / 2]) * wv[((ci * cout + co) * 2 + oy % 2) * 2 + ox % 2];
          ref[(co * 2 * h + oy) * 2 * w + ox] = s;
        }
    EXPECT_LT(max_abs_diff(y.to_vector(), ref), 1e-5);
  }
}

TEST_P(OpsConvTest, MaxPool) {
  for (auto [k, s] : {std::pair<int64_t, int64_t>{2, 2}, {3, 2}, {1, 1}}) {
    const int64_t c = 3, h = 7, w = 9;
    Tensor x = random_tensor({c, h, w}, 11);
    Tensor y = ops::max_pool2d(x, k, s);
    const int64_t ho = (h - k) / s + 1, wo = (w - k) / s + 1;
    ASSERT_EQ(y.shape(), (Shape{c, ho, wo}));
    const auto xv = x.to_vector();
    std::vector<double> ref;
    for (int64_t ch = 0; ch < c; ++ch)
      for (int64_t oy = 0; oy < ho; ++oy)
        for (int64_t ox = 0; ox < wo; ++ox) {
          double m = -INFINITY;
          for (int64_t a = 0; a < k; ++a)
            for (int64_t b = 0; b < k; ++b) m = std::max<double>(m, xv[(ch * h + oy * s + a) * w + ox * s + b]);
          ref.push_back(m);
        }
    EXPECT_EQ(max_abs_diff(y.to_vector(), ref), 0.0) << "kernel " << k << " stride " << s;
  }
}

INSTANTIATE_TEST_SUITE_P(Ops, OpsConvTest, ::testing::Values(1, 2));

}  // namespace
}  // namespace sa2va
