// Interpolation (PyTorch formulas, docs/preprocess.md §5-§6) and pixel shuffle v2 (docs/preprocess.md §3).
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

class OpsResampleTest : public ops_test::ThreadedTest {};

// Source taps for one output index along one axis, as PyTorch forms them (float32 index math).
struct Taps {
  std::vector<int64_t> idx;
  std::vector<double> w;
};

Taps bilinear_taps(int64_t in, int64_t out, int64_t o, bool align_corners) {
  float src;
  if (align_corners) {
    const float scale = out > 1 ? static_cast<float>(in - 1) / (out - 1) : 0.f;
    src = scale * o;
  } else {
    const float scale = static_cast<float>(in) / out;
    src = std::max((o + 0.5f) * scale - 0.5f, 0.f);
  }
  const int64_t i0 = std::min<int64_t>(static_cast<int64_t>(src), in - 1);
  const int64_t i1 = std::min<int64_t>(i0 + 1, in - 1);
  const double l1 = src - i0;
  return {{i0, i1}, {1 - l1, l1}};
}

Taps bicubic_taps(int64_t in, int64_t out, int64_t o) {
  const double A = -0.75;
  const float src = (o + 0.5f) * (static_cast<float>(in) / out) - 0.5f;
  const int64_t i = static_cast<int64_t>(std::floor(src));
  const double t = src - std::floor(src);
  auto w1 = [&](double d) { return ((A + 2) * d - (A + 3)) * d * d + 1; };
  auto w2 = [&](double d) { return ((A * d - 5 * A) * d + 8 * A) * d - 4 * A; };
  Taps r{{}, {w2(t + 1), w1(t), w1(1 - t), w2(2 - t)}};
  for (int k = 0; k < 4; ++k) r.idx.push_back(std::min<int64_t>(std::max<int64_t>(i - 1 + k, 0), in - 1));
  return r;
}

template <typename TapFn>
std::vector<double> reference_resample(const Tensor& x, int64_t oh, int64_t ow, TapFn taps) {
  const int64_t c = x.size(0), h = x.size(1), w = x.size(2);
  const auto xv = x.to_vector();
  std::vector<double> y;
  for (int64_t ch = 0; ch < c; ++ch)
    for (int64_t oy = 0; oy < oh; ++oy)
      for (int64_t ox = 0; ox < ow; ++ox) {
        const Taps ty = taps(h, oh, oy), tx = taps(w, ow, ox);
        double s = 0;
        for (size_t a = 0; a < ty.idx.size(); ++a)
          for (size_t b = 0; b < tx.idx.size(); ++b) s += ty.w[a] * tx.w[b] * xv[(ch * h + ty.idx[a]) * w + tx.idx[b]];
        y.push_back(s);
      }
  return y;
}

TEST_P(OpsResampleTest, BilinearBothAlignModes) {
  const int64_t sizes[][4] = {{5, 7, 12, 3}, {9, 4, 9, 4}, {3, 3, 17, 1}, {1, 1, 4, 5}, {16, 16, 37, 23}};
  for (bool ac : {false, true})
    for (const auto& s : sizes) {
      Tensor x = random_tensor({2, s[0], s[1]}, 3);
      Tensor y = ops::interpolate_bilinear(x, s[2], s[3], ac);
      ASSERT_EQ(y.shape(), (Shape{2, s[2], s[3]}));
      const auto ref = reference_resample(x, s[2], s[3],
                                          [&](int64_t in, int64_t out, int64_t o) { return bilinear_taps(in, out, o, ac); });
      EXPECT_LT(max_abs_diff(y.to_vector(), ref), 2e-6) << "align_corners=" << ac << " " << s[0] << "x" << s[1];
    }
  // Known values: 2× upsampling of [0, 1] gives [0, 0.25, 0.75, 1]; align_corners gives [0, 1/3, 2/3, 1].
  Tensor ramp = Tensor::from_vector({0.f, 1.f}, {1, 1, 2});
  EXPECT_EQ(ops::interpolate_bilinear(ramp, 1, 4, false).to_vector(), (std::vector<float>{0.f, 0.25f, 0.75f, 1.f}));
  const auto v = ops::interpolate_bilinear(ramp, 1, 4, true).to_vector();
  EXPECT_NEAR(v[1], 1.0 / 3, 1e-7);
  EXPECT_NEAR(v[2], 2.0 / 3, 1e-7);
}

TEST_P(OpsResampleTest, NearestLegacyFormula) {
  // src = min(floor(dst · float(in/out)), in − 1)
  const int64_t sizes[][4] = {{64, 48, 16, 16}, {3, 5, 5, 3}, {7, 7, 14, 14}, {5, 5, 5, 5}, {1, 1, 3, 2}};
  for (const auto& s : sizes) {
    Tensor x = random_tensor({3, s[0], s[1]}, 5);
    Tensor y = ops::interpolate_nearest(x, s[2], s[3]);
    auto idx = [](int64_t in, int64_t out, int64_t o) {
      return std::min<int64_t>(static_cast<int64_t>(std::floor(o * (static_cast<float>(in) / out))), in - 1);
    };
    const auto xv = x.to_vector(), yv = y.to_vector();
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t oy = 0; oy < s[2]; ++oy)
        for (int64_t ox = 0; ox < s[3]; ++ox)
          ASSERT_EQ(yv[(c * s[2] + oy) * s[3] + ox], xv[(c * s[0] + idx(s[0], s[2], oy)) * s[1] + idx(s[1], s[3], ox)]);
  }
}

TEST_P(OpsResampleTest, BicubicPyTorchA075) {
  const int64_t sizes[][4] = {{7, 7, 32, 32}, {5, 9, 3, 4}, {4, 4, 4, 4}, {1, 2, 3, 5}};
  for (const auto& s : sizes) {
    Tensor x = random_tensor({2, s[0], s[1]}, 7);
    Tensor y = ops::interpolate_bicubic(x, s[2], s[3]);
    const auto ref = reference_resample(x, s[2], s[3], bicubic_taps);
    EXPECT_LT(max_abs_diff(y.to_vector(), ref), 4e-6) << s[0] << "x" << s[1] << " -> " << s[2] << "x" << s[3];
  }
  Tensor x = random_tensor({3, 6, 5}, 9);
  EXPECT_EQ(ops::interpolate_bicubic(x, 6, 5).to_vector(), x.to_vector());  // same size is exact
}

TEST_P(OpsResampleTest, RejectsEmptySizes) {
  Tensor x = random_tensor({1, 4, 4}, 1);
  EXPECT_THROW(ops::interpolate_bilinear(x, 0, 4, false), Error);
  EXPECT_THROW(ops::interpolate_nearest(random_tensor({4, 4}, 1), 2, 2), Error);
}

TEST_P(OpsResampleTest, PixelShuffleV2) {
  const int64_t side = 6, c = 5, half = side / 2;
  Tensor x = random_tensor({side * side, c}, 13);
  Tensor y = ops::pixel_shuffle_v2(x, side);
  ASSERT_EQ(y.shape(), (Shape{half * half, 4 * c}));
  const auto xv = x.to_vector(), yv = y.to_vector();
  for (int64_t i = 0; i < half; ++i)
    for (int64_t j = 0; j < half; ++j)
      for (int64_t m = 0; m < 2; ++m)
        for (int64_t k = 0; k < 2; ++k)
          for (int64_t ch = 0; ch < c; ++ch)
            ASSERT_EQ(yv[(i * half + j) * 4 * c + m * 2 * c + k * c + ch], xv[((2 * i + m) * side + 2 * j + k) * c + ch]);
  EXPECT_THROW(ops::pixel_shuffle_v2(random_tensor({25, 3}, 1), 5), Error);
}

INSTANTIATE_TEST_SUITE_P(Ops, OpsResampleTest, ::testing::Values(1, 2));

}  // namespace
}  // namespace sa2va
