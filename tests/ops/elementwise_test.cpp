// Activations, softmax, broadcasts and normalisations against double-precision formulas,
// on every SIMD level and with 1 and 2 threads.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "ops/cpu/simd.h"
#include "ops/ops.h"
#include "ops_test_util.h"

namespace sa2va {
namespace {

using ops_test::max_abs_diff;
using ops_test::random_vector;

class OpsElementwiseTest : public ops_test::ThreadedTest {};

struct Activation {
  const char* name;
  void (*op)(float*, int64_t);
  double (*ref)(double);
};

const Activation kActivations[] = {
    {"gelu_erf", ops::gelu_erf, [](double x) { return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0))); }},
    {"gelu_tanh", ops::gelu_tanh,
     [](double x) { return 0.5 * x * (1 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x))); }},
    {"silu", ops::silu, [](double x) { return x / (1 + std::exp(-x)); }},
    {"sigmoid", ops::sigmoid, [](double x) { return 1 / (1 + std::exp(-x)); }},
    {"relu", ops::relu, [](double x) { return x > 0 ? x : 0.0; }},
};

TEST_P(OpsElementwiseTest, ActivationsMatchFormulas) {
  const ops::simd::Isa saved = ops::simd::isa();
  // Odd length (vector tails) and a wide range including the saturated tails.
  std::vector<float> input = random_vector(40000 + 13, 21, -12.f, 12.f);
  for (float v : {0.f, -0.f, 1e-6f, -1e-6f, 30.f, -30.f, 90.f, -90.f, -200.f, 200.f}) input.push_back(v);
  for (auto level : {ops::simd::Isa::Scalar, ops::simd::Isa::Avx2, ops::simd::Isa::Avx512}) {
    ops::simd::set_max_isa(level);
    for (const auto& act : kActivations) {
      for (int64_t n : {int64_t{1}, int64_t{15}, static_cast<int64_t>(input.size())}) {
        std::vector<float> x(input.begin(), input.begin() + n);
        act.op(x.data(), n);
        for (int64_t i = 0; i < n; ++i) {
          const double ref = act.ref(input[i]);
          ASSERT_NEAR(x[i], ref, 1e-6 * std::fabs(ref) + 1e-7)
              << act.name << " isa=" << ops::simd::isa_name(level) << " x=" << input[i];
        }
      }
    }
  }
  ops::simd::set_max_isa(saved);
}

TEST_P(OpsElementwiseTest, SoftmaxRowsStableAndMasked) {
  const int64_t rows = 7, n = 37;
  std::vector<float> x = random_vector(rows * n, 5, -30.f, 30.f);
  x[3] = 1000.f;                                           // would overflow a naive exp
  x[n + 4] = -std::numeric_limits<float>::infinity();      // masked entry
  for (int64_t j = 0; j < n; ++j) x[2 * n + j] = -std::numeric_limits<float>::infinity();  // fully masked row
  std::vector<double> ref(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    double m = -INFINITY, s = 0;
    for (int64_t j = 0; j < n; ++j) m = std::max<double>(m, x[r * n + j]);
    for (int64_t j = 0; j < n; ++j) s += std::isinf(m) ? 0 : std::exp(x[r * n + j] - m);
    for (int64_t j = 0; j < n; ++j) ref[r * n + j] = std::isinf(m) ? 0 : std::exp(x[r * n + j] - m) / s;
  }
  ops::softmax_rows(x.data(), rows, n);
  EXPECT_LT(max_abs_diff(x, ref), 1e-6);
  EXPECT_EQ(x[n + 4], 0.f);
}

TEST_P(OpsElementwiseTest, Broadcasts) {
  const int64_t rows = 5, dim = 33;
  const std::vector<float> a = random_vector(rows * dim, 1), b = random_vector(rows * dim, 2),
                           row = random_vector(dim, 3), per_row = random_vector(rows, 4);
  std::vector<double> ref(a.size());
  std::vector<float> y(a.size());

  ops::add(a.data(), b.data(), y.data(), rows * dim);
  for (size_t i = 0; i < a.size(); ++i) ref[i] = static_cast<double>(a[i]) + b[i];
  EXPECT_LT(max_abs_diff(y, ref), 1e-6);

  y = a;
  ops::add_rows(y.data(), row.data(), rows, dim);
  for (size_t i = 0; i < a.size(); ++i) ref[i] = static_cast<double>(a[i]) + row[i % dim];
  EXPECT_LT(max_abs_diff(y, ref), 1e-6);

  y = a;
  ops::mul_rows(y.data(), row.data(), rows, dim);
  for (size_t i = 0; i < a.size(); ++i) ref[i] = static_cast<double>(a[i]) * row[i % dim];
  EXPECT_LT(max_abs_diff(y, ref), 1e-6);

  y = a;
  ops::add_scaled_rows(y.data(), b.data(), row.data(), rows, dim);
  for (size_t i = 0; i < a.size(); ++i) ref[i] = a[i] + static_cast<double>(b[i]) * row[i % dim];
  EXPECT_LT(max_abs_diff(y, ref), 1e-6);

  y = a;
  ops::add_per_row(y.data(), per_row.data(), rows, dim);
  for (size_t i = 0; i < a.size(); ++i) ref[i] = static_cast<double>(a[i]) + per_row[i / dim];
  EXPECT_LT(max_abs_diff(y, ref), 1e-6);

  y = a;
  ops::scale(y.data(), -2.5f, rows * dim);
  for (size_t i = 0; i < a.size(); ++i) ref[i] = a[i] * -2.5;
  EXPECT_LT(max_abs_diff(y, ref), 1e-6);

  y = a;
  ops::silu_mul(y.data(), b.data(), rows * dim);
  for (size_t i = 0; i < a.size(); ++i) ref[i] = a[i] / (1 + std::exp(-static_cast<double>(a[i]))) * b[i];
  EXPECT_LT(max_abs_diff(y, ref), 1e-6);

  // Long enough for every thread's share to run in several L1-sized pieces and a ragged last one.
  const int64_t n = 3 * 16384 + 4096 * 5 + 77;
  const std::vector<float> gate = random_vector(n, 5, -6.f, 6.f), up = random_vector(n, 6);
  std::vector<float> out = gate;
  std::vector<double> expected(static_cast<size_t>(n));
  ops::silu_mul(out.data(), up.data(), n);
  for (int64_t i = 0; i < n; ++i) expected[i] = gate[i] / (1 + std::exp(-static_cast<double>(gate[i]))) * up[i];
  EXPECT_LT(max_abs_diff(out, expected), 1e-5);
}

// The scaling kernel (attention's rescale and normalisation) and ReLU on every instruction set:
// vector bodies, tails, one element, in place and out of place.
TEST(OpsSimdKernels, ScaleAndReluOnEveryInstructionSet) {
  ops_test::for_each_isa([](ops::simd::Isa) {
    for (int64_t n : {1, 7, 16, 17, 64, 65}) {
      const std::vector<float> x = random_vector(n, 41, -2.f, 2.f);
      std::vector<float> y(x.size(), 7.f), in_place = x, relu = x;
      ops::simd::scale(-0.375f, x.data(), y.data(), n);
      ops::simd::scale(-0.375f, in_place.data(), in_place.data(), n);
      ops::simd::relu_inplace(relu.data(), n);
      for (int64_t i = 0; i < n; ++i) {
        EXPECT_EQ(y[i], -0.375f * x[i]) << "n=" << n << " i=" << i;  // exact: one rounding either way
        EXPECT_EQ(relu[i], x[i] > 0.f ? x[i] : 0.f) << "n=" << n << " i=" << i;
      }
      EXPECT_EQ(in_place, y) << "n=" << n;
    }
  });
}

// The row maximum (softmax, the fused attention's blocks) on every instruction set: the maximum in
// each of the four vector lanes' streams, in the tail, and at either end.
TEST(OpsSimdKernels, MaxValueOnEveryInstructionSet) {
  ops_test::for_each_isa([](ops::simd::Isa) {
    for (int64_t n : {1, 15, 16, 64, 65, 130, 1000}) {
      const std::vector<float> base = random_vector(n, 44, -5.f, 5.f);
      for (int64_t at : {int64_t{0}, n / 3, n / 2 + 17, n - 1}) {
        if (at >= n) continue;
        std::vector<float> x = base;
        x[at] = 6.f + static_cast<float>(at);
        EXPECT_EQ(ops::simd::max_value(x.data(), n), x[at]) << "n=" << n << " at=" << at;
      }
    }
  });
}

// Rounding to bf16 in bulk and into GEMM panels (both AVX-512 packers: contiguous lanes, and pairs of
// rows) gives the bits of f32_to_bf16 on every instruction set: ties to even, NaN kept, overflow to
// inf, zeros past the data; except that AVX-512's vcvtneps2bf16 takes a denormal input as zero.
TEST(OpsSimdKernels, RoundToBf16AndPanelsOnEveryInstructionSet) {
  const float denormal = std::numeric_limits<float>::denorm_min() * 1000.f;
  auto bits_of = [](uint32_t b) {
    float f;
    std::memcpy(&f, &b, 4);
    return f;
  };
  std::vector<float> x = random_vector(77, 45, -3.f, 3.f);
  const std::vector<float> special = {bits_of(0x3f808000u), bits_of(0x3f818000u),  // ties: down, up
                                      bits_of(0xbf808001u), bits_of(0x7f7fffffu),  // above a tie; rounds to inf
                                      std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::infinity(),
                                      -0.f, denormal, -denormal, std::numeric_limits<float>::min()};
  std::copy(special.begin(), special.end(), x.begin() + 5);
  auto expected = [&](float v, ops::simd::Isa level) -> uint16_t {
    if (level == ops::simd::Isa::Avx512 && std::fpclassify(v) == FP_SUBNORMAL) return std::signbit(v) ? 0x8000 : 0;
    return f32_to_bf16(v);
  };
  ops_test::for_each_isa([&](ops::simd::Isa level) {
    for (int64_t n : {1, 16, 17, 77}) {
      const int64_t padded = (n + 31) / 32 * 32;
      std::vector<uint16_t> out(static_cast<size_t>(padded) + 8, 0x7777);
      ops::simd::round_to_bf16(x.data(), n, padded, out.data());
      for (int64_t i = 0; i < padded; ++i)
        EXPECT_EQ(out[i], i < n ? expected(x[i], level) : 0) << "n=" << n << " i=" << i;
      EXPECT_EQ(out[padded], 0x7777) << "n=" << n << ": written past the padded length";
    }
    // A panel of 32 lanes: lanes of 11 values 11 apart (contiguous lanes), and the same values with
    // the lanes 1 apart and the values 7 apart (pairs of rows); 7 lanes, 6 pairs (the last half empty).
    constexpr int64_t kLanes = 7, kLength = 11, kPairs = 6;
    for (bool contiguous : {true, false}) {
      const int64_t lane_stride = contiguous ? kLength : 1, pair_stride = contiguous ? 1 : kLanes;
      std::vector<float> src(kLanes * kLength);
      for (int64_t l = 0; l < kLanes; ++l)
        for (int64_t r = 0; r < kLength; ++r) src[l * lane_stride + r * pair_stride] = x[l * kLength + r];
      std::vector<uint32_t> panel(kPairs * ops::simd::kBf16PanelCols, 0x77777777u);
      ops::simd::pack_bf16_panel(src.data(), lane_stride, pair_stride, kLanes, kLength, kPairs, panel.data());
      for (int64_t kp = 0; kp < kPairs; ++kp)
        for (int64_t l = 0; l < ops::simd::kBf16PanelCols; ++l) {
          auto value = [&](int64_t r) -> uint32_t {
            return l < kLanes && r < kLength ? expected(x[l * kLength + r], level) : 0;
          };
          EXPECT_EQ(panel[kp * ops::simd::kBf16PanelCols + l], value(2 * kp) | value(2 * kp + 1) << 16)
              << (contiguous ? "contiguous" : "pairs of rows") << " kp=" << kp << " lane=" << l;
        }
    }
  });
}

// The softmax step of the fused bf16 attention: bf16(exp(scale·s - shift)) with zeros past n up to the
// padded length, and the sum of the exponentials; -inf scores (masked keys) give 0; on every
// instruction set, against double precision (bf16 keeps 8 bits: 2^-8 relative per value).
TEST(OpsSimdKernels, ExpToBf16OnEveryInstructionSet) {
  ops_test::for_each_isa([](ops::simd::Isa) {
    for (int64_t n : {0, 1, 15, 16, 33, 200}) {
      std::vector<float> s = random_vector(std::max<int64_t>(n, 1), 43, -40.f, 40.f);
      if (n > 3) s[3] = -std::numeric_limits<float>::infinity();
      const float scale = 0.125f, shift = n > 0 ? 5.f : 0.f;
      const int64_t padded = (n + 31) / 32 * 32 + 32;
      std::vector<uint16_t> out(static_cast<size_t>(padded), 0x7777);
      const float sum = ops::simd::exp_to_bf16(s.data(), n, scale, shift, padded, out.data());
      double ref_sum = 0;
      for (int64_t i = 0; i < padded; ++i) {
        const double ref = i < n ? std::exp(static_cast<double>(s[i]) * scale - shift) : 0.0;
        ref_sum += ref;
        EXPECT_NEAR(bf16_to_f32(out[i]), ref, ref * (1.0 / 256) + 1e-30) << "n=" << n << " i=" << i;
      }
      EXPECT_NEAR(sum, ref_sum, ref_sum * 1e-4 + 1e-30) << "n=" << n;
    }
  });
}

// The softmax step of the f32 attention and softmax: x = exp(scale·x - shift) in place and the sum,
// against double precision on every instruction set. The exponents run from 0 down past the
// underflow (-inf, a masked key, gives 0; the vector kernels give 0 below -86.5), with exponents
// just above that threshold, a rounding's worth above 0 (shift = scale·max rounded), and the scale
// 1 of softmax; a NaN stays NaN.
TEST(OpsSimdKernels, ExpShiftedSumOnEveryInstructionSet) {
  ops_test::for_each_isa([](ops::simd::Isa level) {
    const char* isa = ops::simd::isa_name(level);
    for (const float scale : {1.f, 0.125f, 0.0625f}) {
      for (int64_t n : {0, 1, 7, 8, 9, 33, 200}) {
        std::vector<float> x = random_vector(std::max<int64_t>(n, 1), 45, -120.f, 8.f);
        if (n > 3) x[3] = -std::numeric_limits<float>::infinity();
        const float max = *std::max_element(x.begin(), x.begin() + std::max<int64_t>(n, 1));
        const float shift = scale * max;
        // Exponents -86.4 and -86.45 (below max: the max is unchanged), where a threshold set
        // too high would give 0.
        if (n > 6) x[5] = (shift - 86.4f) / scale, x[6] = (shift - 86.45f) / scale;
        std::vector<float> y = x;
        const float sum = ops::simd::exp_shifted_sum(y.data(), n, scale, shift);
        double ref_sum = 0;
        for (int64_t i = 0; i < n; ++i) {
          // The exponent as every kernel rounds it (one fused multiply-add in f32): its rounding
          // (~4e-6 at 60) is the argument's error, not the exponential's.
          const float exponent = std::fma(x[i], scale, -shift);
          const double ref = std::exp(static_cast<double>(exponent));
          ref_sum += ref;
          if (exponent < -86.5f) {
            EXPECT_TRUE(y[i] >= 0.f && y[i] <= 2.8e-38f) << isa << " n=" << n << " i=" << i << " y=" << y[i];
          } else {
            EXPECT_NEAR(y[i], ref, ref * 1e-6) << isa << " n=" << n << " i=" << i << " exponent=" << exponent
                                               << " scale=" << scale;
          }
        }
        if (n > 6) {
          EXPECT_GT(std::fma(x[6], scale, -shift), -86.5f) << "the case meant to sit above the threshold";
        }
        EXPECT_NEAR(sum, ref_sum, ref_sum * 1e-6) << isa << " n=" << n;
        if (n > 3) {
          EXPECT_EQ(y[3], 0.f) << isa;
        }
      }
    }
    std::vector<float> with_nan(17, -1.f);  // a NaN in the vector body and in the tail
    with_nan[2] = with_nan[16] = std::numeric_limits<float>::quiet_NaN();
    ops::simd::exp_shifted_sum(with_nan.data(), 17, 1.f, 0.f);
    EXPECT_TRUE(std::isnan(with_nan[2]) && std::isnan(with_nan[16])) << isa;
    EXPECT_NEAR(with_nan[0], std::exp(-1.0), 1e-7) << isa;
  });
}

// The activations but ReLU (NaN -> 0, documented) pass a NaN on, in a vector body and in the tail,
// on every instruction set: a NaN from upstream must not come out as a number (GELU's erf skips the
// exponential's NaN test, its product with x carries the NaN; the general exponential clamps its
// argument with the NaN passing through).
TEST(OpsSimdKernels, ActivationsKeepNan) {
  ops_test::for_each_isa([](ops::simd::Isa level) {
    for (const auto& act : kActivations) {
      if (std::string(act.name) == "relu") continue;
      for (int64_t n : {int64_t{5}, int64_t{37}}) {
        std::vector<float> x(static_cast<size_t>(n), 0.5f);
        x[3] = x[static_cast<size_t>(n - 1)] = std::numeric_limits<float>::quiet_NaN();
        act.op(x.data(), n);
        EXPECT_TRUE(std::isnan(x[3]) && std::isnan(x[static_cast<size_t>(n - 1)]))
            << act.name << " " << ops::simd::isa_name(level) << " n=" << n;
        EXPECT_NEAR(x[0], act.ref(0.5), 1e-6 * std::fabs(act.ref(0.5)) + 1e-7)
            << act.name << " " << ops::simd::isa_name(level);
      }
    }
  });
}

// LayerNorm on every instruction set (vector bodies, tails, one element) and in place; RMSNorm.
TEST_P(OpsElementwiseTest, LayerNormAndRmsNorm) {
  ops_test::for_each_isa([](ops::simd::Isa level) {
    for (int64_t dim : {1, 7, 17, 33, 65, 1027}) {
      const int64_t rows = 9;
      std::vector<float> x = random_vector(rows * dim, 31, -3.f, 5.f);
      for (auto& v : x) v += 100.f;  // large mean: the two-pass variance must stay accurate
      const std::vector<float> w = random_vector(dim, 32), b = random_vector(dim, 33);
      const float eps = 1e-5f;
      for (bool affine : {true, false}) {
        std::vector<double> ref(x.size()), ref_rms(x.size());
        for (int64_t r = 0; r < rows; ++r) {
          double mean = 0, var = 0, sq = 0;
          for (int64_t i = 0; i < dim; ++i) mean += x[r * dim + i];
          mean /= dim;
          for (int64_t i = 0; i < dim; ++i) var += (x[r * dim + i] - mean) * (x[r * dim + i] - mean);
          for (int64_t i = 0; i < dim; ++i) sq += static_cast<double>(x[r * dim + i]) * x[r * dim + i];
          var /= dim;
          for (int64_t i = 0; i < dim; ++i) {
            const double n = (x[r * dim + i] - mean) / std::sqrt(var + eps);
            ref[r * dim + i] = affine ? n * w[i] + b[i] : n;
            ref_rms[r * dim + i] = x[r * dim + i] / std::sqrt(sq / dim + eps) * (affine ? w[i] : 1.0);
          }
        }
        const char* isa = ops::simd::isa_name(level);
        std::vector<float> y(x.size());
        ops::layer_norm(x.data(), affine ? w.data() : nullptr, affine ? b.data() : nullptr, y.data(), rows, dim, eps);
        EXPECT_LT(max_abs_diff(y, ref), 2e-4) << isa << " layer_norm dim=" << dim;  // inputs ~100: f32 centring error
        std::vector<float> in_place = x;
        ops::layer_norm(in_place.data(), affine ? w.data() : nullptr, affine ? b.data() : nullptr, in_place.data(),
                        rows, dim, eps);
        EXPECT_EQ(in_place, y) << isa << " layer_norm in place, dim=" << dim;
        ops::rms_norm(x.data(), affine ? w.data() : nullptr, y.data(), rows, dim, 1e-6f);
        EXPECT_LT(max_abs_diff(y, ref_rms), 1e-5) << isa << " rms_norm dim=" << dim;
      }
    }
  });
}

TEST_P(OpsElementwiseTest, LayerNorm2dNormalisesOverChannels) {
  for (int64_t pixels : {1, 300, 513}) {
    const int64_t channels = 11;
    const std::vector<float> x = random_vector(channels * pixels, 41, -2.f, 3.f), w = random_vector(channels, 42),
                             b = random_vector(channels, 43);
    std::vector<double> ref(x.size());
    for (int64_t p = 0; p < pixels; ++p) {
      double mean = 0, var = 0;
      for (int64_t c = 0; c < channels; ++c) mean += x[c * pixels + p];
      mean /= channels;
      for (int64_t c = 0; c < channels; ++c) var += (x[c * pixels + p] - mean) * (x[c * pixels + p] - mean);
      var /= channels;
      for (int64_t c = 0; c < channels; ++c)
        ref[c * pixels + p] = (x[c * pixels + p] - mean) / std::sqrt(var + 1e-6) * w[c] + b[c];
    }
    std::vector<float> y(x.size());
    ops::layer_norm_2d(x.data(), w.data(), b.data(), y.data(), channels, pixels, 1e-6f);
    EXPECT_LT(max_abs_diff(y, ref), 1e-5) << "pixels=" << pixels;
    std::vector<float> in_place = x;
    ops::layer_norm_2d(in_place.data(), w.data(), b.data(), in_place.data(), channels, pixels, 1e-6f);
    EXPECT_EQ(in_place, y);
  }
}

INSTANTIATE_TEST_SUITE_P(Ops, OpsElementwiseTest, ::testing::Values(1, 2));

}  // namespace
}  // namespace sa2va
