// ops::linear / ops::gemm against a double-precision loop, F32 and BF16 weights, all SIMD levels.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <tuple>
#include <vector>

#include "core/error.h"
#include "ops/cpu/simd.h"
#include "ops/ops.h"
#include "ops_test_util.h"

namespace sa2va {
namespace {

using ops_test::max_abs_diff;
using ops_test::random_vector;

class OpsLinearTest : public ops_test::ThreadedTest {};

// y = x·Wᵀ + b in double; `bound` gets Σ|x||w| per output (scale for the bf16 tolerance).
std::vector<double> reference_linear(const std::vector<float>& x, const std::vector<float>& w, const float* bias,
                                     int64_t M, int64_t K, int64_t N, std::vector<double>* bound) {
  std::vector<double> y(static_cast<size_t>(M * N));
  if (bound) bound->assign(y.size(), 0.0);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double s = bias ? bias[n] : 0.0, a = 0.0;
      for (int64_t k = 0; k < K; ++k) {
        s += static_cast<double>(x[m * K + k]) * w[n * K + k];
        a += std::fabs(static_cast<double>(x[m * K + k]) * w[n * K + k]);
      }
      y[m * N + n] = s;
      if (bound) (*bound)[m * N + n] = a;
    }
  return y;
}

void check_linear(int64_t M, int64_t K, int64_t N, bool bf16, bool with_bias, uint32_t seed) {
  SCOPED_TRACE(::testing::Message() << "M=" << M << " K=" << K << " N=" << N << (bf16 ? " bf16" : " f32")
                                    << (with_bias ? " bias" : "") << " isa=" << ops::simd::isa_name(ops::simd::isa()));
  std::vector<float> x = random_vector(M * K, seed), w = random_vector(N * K, seed + 1),
                     b = random_vector(N, seed + 2);
  Tensor weight = Tensor::from_vector(w, {N, K});
  if (bf16) {
    weight = weight.to(DType::BF16);
    for (auto& v : w) v = round_to_bf16(v);  // the reference sees the weights the kernel sees
  }
  std::vector<double> bound;
  const std::vector<double> ref = reference_linear(x, w, with_bias ? b.data() : nullptr, M, K, N, &bound);
  std::vector<float> y(static_cast<size_t>(M * N), -123.f);
  ops::linear(x.data(), M, K, WeightMatrix::prepare(weight, bf16 ? WeightFormat::BF16 : WeightFormat::F32),
              with_bias ? b.data() : nullptr, y.data());
  for (size_t i = 0; i < y.size(); ++i) {
    // f32 accumulation: ~K ulp; bf16 GEMM (activations rounded to bf16): 2^-8 of Σ|x·w|.
    const double tol = (bf16 ? 4e-3 : 1e-5) * bound[i] + 1e-5;
    ASSERT_NEAR(y[i], ref[i], tol) << "at " << i;
  }
}

TEST_P(OpsLinearTest, MatchesReferenceOnOddShapes) {
  const ops::simd::Isa saved = ops::simd::isa();
  for (auto level : ops_test::isa_levels()) {
    ops::simd::set_max_isa(level);
    uint32_t seed = 1;
    for (int64_t M : {1, 2, 3, 5, 8, 9, 37})
      for (int64_t K : {1, 7, 17, 70})
        for (int64_t N : {1, 5, 33, 130})
          for (bool bf16 : {false, true}) {
            ++seed;
            check_linear(M, K, N, bf16, seed % 2 == 0, seed * 7);
          }
  }
  ops::simd::set_max_isa(saved);
}

TEST_P(OpsLinearTest, Bf16DecodeShapesExact) {
  // Decode-sized products: only f32 rounding error is allowed, after activations are rounded to
  // bf16 where the kernel uses bf16 dot products (AVX-512 BF16).
  for (int64_t M : {1, 4, 5, 8}) {
    const int64_t K = 896 + 3, N = 261;
    std::vector<float> x = random_vector(M * K, 11), w = random_vector(N * K, 12);
    Tensor weight = Tensor::from_vector(w, {N, K}).to(DType::BF16);
    for (auto& v : w) v = round_to_bf16(v);
    if (ops::simd::isa() == ops::simd::Isa::Avx512)
      for (auto& v : x) v = round_to_bf16(v);
    std::vector<double> bound;
    const auto ref = reference_linear(x, w, nullptr, M, K, N, &bound);
    std::vector<float> y(static_cast<size_t>(M * N));
    ops::linear(x.data(), M, K, WeightMatrix::prepare(weight, WeightFormat::BF16), nullptr, y.data());
    for (size_t i = 0; i < y.size(); ++i) ASSERT_NEAR(y[i], ref[i], 1e-6 * bound[i] + 1e-6) << "M=" << M << " at " << i;
  }
}

TEST_P(OpsLinearTest, Bf16LargeMAcrossBlocks) {
  // Several K slices, column blocks and row tiles, odd K. With AVX-512 BF16 the activations are
  // rounded to bf16 and products accumulate in f32 (on AMX tiles where the CPU has them, and on
  // vdpbf16ps with them switched off); on AVX2 x stays f32 in the same GEMM. The second shape
  // has few columns and many rows: tasks split the rows (row blocks overhanging M, odd N). The last
  // two have bf16 rows of x a multiple of 4 KiB, which the zmm tiles' copy pads by 64 bytes.
  struct Shape3 {
    int64_t M, K, N;
  };
  for (const Shape3 shape : {Shape3{29, 1101, 300}, Shape3{197, 613, 70}, Shape3{31, 2047, 40}, Shape3{100, 4096, 70}}) {
    const int64_t M = shape.M, K = shape.K, N = shape.N;
    const std::vector<float> x = random_vector(M * K, 21);
    std::vector<float> w = random_vector(N * K, 22), b = random_vector(N, 23);
    const Tensor weight = Tensor::from_vector(w, {N, K}).to(DType::BF16);
    for (auto& v : w) v = round_to_bf16(v);
    std::vector<float> x_rounded = x;
    for (auto& v : x_rounded) v = round_to_bf16(v);
    const ops::simd::Isa saved = ops::simd::isa();
    const bool saved_amx = ops::simd::set_amx_enabled(true);
    for (auto level : {ops::simd::Isa::Avx2, ops::simd::Isa::Avx512})
      for (bool tiles : {false, true}) {
        ops::simd::set_max_isa(level);
        ops::simd::set_amx_enabled(tiles);
        if (tiles && !ops::simd::amx()) continue;  // this CPU has no AMX (or no AVX-512)
        const bool rounds = ops::simd::isa() == ops::simd::Isa::Avx512;
        std::vector<double> bound;
        const auto ref = reference_linear(rounds ? x_rounded : x, w, b.data(), M, K, N, &bound);
        std::vector<float> y(static_cast<size_t>(M * N));
        ops::linear(x.data(), M, K, WeightMatrix::prepare(weight, WeightFormat::BF16), b.data(), y.data());
        for (size_t i = 0; i < y.size(); ++i)
          ASSERT_NEAR(y[i], ref[i], 1e-6 * bound[i] + 1e-6)
              << ops::simd::isa_name(level) << (tiles ? " amx" : "") << " M " << M << " at " << i;
      }
    ops::simd::set_max_isa(saved);
    ops::simd::set_amx_enabled(saved_amx);
  }
}

TEST_P(OpsLinearTest, TensorFormBatchedWithBias) {
  const int64_t B = 3, T = 11, K = 19, N = 23;
  Tensor x = ops_test::random_tensor({B, T, K}, 3);
  Tensor w = ops_test::random_tensor({N, K}, 4);
  Tensor b = ops_test::random_tensor({N}, 5);
  for (bool bf16_bias : {false, true}) {
    Tensor y = ops::linear(x, WeightMatrix::prepare(w, WeightFormat::F32), bf16_bias ? b.to(DType::BF16) : b);
    ASSERT_EQ(y.shape(), (Shape{B, T, N}));
    std::vector<float> bias_used = bf16_bias ? b.to(DType::BF16).to_vector() : b.to_vector();
    const auto ref = reference_linear(x.to_vector(), w.to_vector(), bias_used.data(), B * T, K, N, nullptr);
    EXPECT_LT(max_abs_diff(y.to_vector(), ref), 1e-5);
  }
  Tensor y_nobias = ops::linear(x, WeightMatrix::prepare(w, WeightFormat::F32));
  const auto ref = reference_linear(x.to_vector(), w.to_vector(), nullptr, B * T, K, N, nullptr);
  EXPECT_LT(max_abs_diff(y_nobias.to_vector(), ref), 1e-5);
}

TEST_P(OpsLinearTest, RejectsMismatchedWeight) {
  Tensor x = ops_test::random_tensor({2, 5}, 1);
  const auto f32 = [](const Tensor& w) { return WeightMatrix::prepare(w, WeightFormat::F32); };
  EXPECT_THROW(ops::linear(x, f32(ops_test::random_tensor({3, 4}, 2))), Error);
  EXPECT_THROW(ops::linear(x, f32(ops_test::random_tensor({3, 5}, 2)), ops_test::random_tensor({4}, 3)), Error);
  EXPECT_THROW(f32(ops_test::random_tensor({15}, 2)), Error);
  EXPECT_THROW(ops::linear(x, WeightMatrix()), Error);
}

TEST_P(OpsLinearTest, GemmStridesTransposeAlphaBeta) {
  const int64_t M = 13, N = 9, K = 21, lda = K + 3, ldc = N + 2;
  for (bool tb : {false, true}) {
    const int64_t ldb = tb ? K + 5 : N + 4;
    std::vector<float> A = random_vector(M * lda, 7), B = random_vector((tb ? N : K) * ldb, 8),
                       C = random_vector(M * ldc, 9);
    std::vector<double> ref(C.begin(), C.end());
    const float alpha = 0.75f, beta = -0.5f;
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        double s = 0;
        for (int64_t k = 0; k < K; ++k) s += static_cast<double>(A[m * lda + k]) * (tb ? B[n * ldb + k] : B[k * ldb + n]);
        ref[m * ldc + n] = alpha * s + beta * C[m * ldc + n];
      }
    ops::gemm(A.data(), lda, B.data(), ldb, C.data(), ldc, M, N, K, tb, alpha, beta);
    EXPECT_LT(max_abs_diff(C, ref), 1e-5) << "transpose_b=" << tb;
  }
}

TEST_P(OpsLinearTest, GemmWithTransposedAStridesAlphaBeta) {
  // Shapes on both sides of the threading threshold: small, and long in M or in N.
  for (const auto& [M, N, K] : {std::tuple<int64_t, int64_t, int64_t>{13, 9, 21}, {301, 7, 250}, {5, 333, 260}}) {
    const int64_t lda = M + 3, ldb = N + 4, ldc = N + 2;
    std::vector<float> A = random_vector(K * lda, 17), B = random_vector(K * ldb, 18), C = random_vector(M * ldc, 19);
    std::vector<double> ref(C.begin(), C.end());
    const float alpha = 1.25f, beta = 0.5f;
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        double s = 0;
        for (int64_t k = 0; k < K; ++k) s += static_cast<double>(A[k * lda + m]) * B[k * ldb + n];
        ref[m * ldc + n] = alpha * s + beta * C[m * ldc + n];
      }
    ops::gemm_at(A.data(), lda, B.data(), ldb, C.data(), ldc, M, N, K, alpha, beta);
    EXPECT_LT(max_abs_diff(C, ref), 1e-4) << M << "x" << N << "x" << K;
  }
  std::vector<float> x(4);
  EXPECT_THROW(ops::gemm_at(x.data(), 1, x.data(), 2, x.data(), 2, 2, 2, 1), Error);  // lda < M
}

INSTANTIATE_TEST_SUITE_P(Ops, OpsLinearTest, ::testing::Values(1, 2));

}  // namespace
}  // namespace sa2va
