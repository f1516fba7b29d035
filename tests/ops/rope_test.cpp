// RoPE: LLM rotate-half (docs/llm.md §2) and SAM2 axial 2-D with interleaved pairs (docs/sam2.md §5.5).
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "ops/ops.h"
#include "ops_test_util.h"

namespace sa2va {
namespace {

using ops_test::max_abs_diff;
using ops_test::random_vector;

class OpsRopeTest : public ops_test::ThreadedTest {};

TEST_P(OpsRopeTest, RotateHalfMatchesDefinition) {
  const int64_t tokens = 5, heads = 3, hd = 10, stride = heads * hd + 4;
  const float theta = 1e6f;
  const std::vector<int64_t> positions = {0, 1, 7, 3001, 40000};
  const std::vector<float> x = random_vector(tokens * stride, 9);
  std::vector<double> ref(x.begin(), x.end());
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t k = 0; k < hd / 2; ++k) {
        // Angle as the reference forms it: f32 inv_freq times f32 position.
        const float inv_freq = 1.f / std::pow(theta, static_cast<float>(2 * k) / hd);
        const double ang = static_cast<float>(positions[t]) * inv_freq;
        const int64_t i = t * stride + h * hd + k;
        // q·cos + rotate_half(q)·sin, rotate_half(q) = [-q2, q1]
        ref[i] = x[i] * std::cos(ang) - x[i + hd / 2] * std::sin(ang);
        ref[i + hd / 2] = x[i + hd / 2] * std::cos(ang) + x[i] * std::sin(ang);
      }
  std::vector<float> y = x;
  ops::rope_rotate_half(y.data(), tokens, heads, hd, stride, positions.data(), theta);
  EXPECT_LT(max_abs_diff(y, ref), 1e-6);
  std::vector<int64_t> zeros(tokens, 0);
  y = x;
  ops::rope_rotate_half(y.data(), tokens, heads, hd, stride, zeros.data(), theta);
  EXPECT_EQ(y, x);  // position 0 is the identity
}

// Every instruction set the CPU has (the pairs are rotated by simd::rotate_pairs), two geometries:
// dim 12 (a partial vector only) and dim 40 on a 7x6 grid (whole vectors and a tail). Calls alternate
// between the geometries, so the cached angle tables are looked up, not only built.
TEST_P(OpsRopeTest, Axial2dInterleavedPairsColumnThenRow) {
  struct Geometry {
    int64_t gw, gh, dim;
  };
  ops_test::for_each_isa([](ops::simd::Isa) {
    for (const Geometry g : {Geometry{5, 3, 12}, Geometry{7, 6, 40}, Geometry{5, 3, 12}}) {
      SCOPED_TRACE("dim " + std::to_string(g.dim));
      const int64_t gw = g.gw, gh = g.gh, dim = g.dim, cells = gw * gh;
      const int64_t tokens = 2 * cells + 4, rope_tokens = 2 * cells;  // keys repeat the grid; last 4 not rotated
      const float theta = 10000.f;
      const std::vector<float> x = random_vector(tokens * dim, 17);
      std::vector<double> ref(x.begin(), x.end());
      for (int64_t n = 0; n < rope_tokens; ++n) {
        const int64_t p = n % cells, col = p % gw, row = p / gw;
        for (int64_t j = 0; j < dim / 2; ++j) {
          const int64_t fj = j % (dim / 4);
          const float freq = 1.f / std::pow(theta, static_cast<float>(4 * fj) / dim);
          const double ang = static_cast<float>(j < dim / 4 ? col : row) * freq;
          const double re = x[n * dim + 2 * j], im = x[n * dim + 2 * j + 1];
          ref[n * dim + 2 * j] = re * std::cos(ang) - im * std::sin(ang);
          ref[n * dim + 2 * j + 1] = re * std::sin(ang) + im * std::cos(ang);
        }
      }
      std::vector<float> y = x;
      ops::rope_axial_2d(y.data(), tokens, dim, gw, gh, theta, rope_tokens);
      EXPECT_LT(max_abs_diff(y, ref), 1e-6);
      for (int64_t i = rope_tokens * dim; i < tokens * dim; ++i) ASSERT_EQ(y[i], x[i]);
      // Token 0 (grid cell 0,0) is unchanged; token 1 (column 1) rotates only its first quarter of pairs.
      for (int64_t i = 0; i < dim; ++i) EXPECT_EQ(y[i], x[i]);
      for (int64_t i = dim + dim / 2; i < 2 * dim; ++i) EXPECT_EQ(y[i], x[i]);
    }
  });
}

INSTANTIATE_TEST_SUITE_P(Ops, OpsRopeTest, ::testing::Values(1, 2));

}  // namespace
}  // namespace sa2va
