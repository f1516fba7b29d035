// Weight matrices: formats prepared at load (F32, BF16, Q8_0, Q4_0), their packing, the linear
// kernels over every format, conv weights in GEMM layout and row stacking.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <vector>

#include "core/error.h"
#include "models/common/blocks.h"
#include "ops/cpu/simd.h"
#include "ops/ops.h"
#include "ops/weight_matrix.h"
#include "ops_test_util.h"

namespace sa2va {
namespace {

using ops_test::random_tensor;
using ops_test::random_vector;

class WeightMatrixTest : public ops_test::ThreadedTest {};

// Decodes one element straight from the documented layout (not through dequantize_rows).
double decode(const WeightMatrix& m, int64_t r, int64_t k) {
  const int64_t nb = m.blocks_per_row(), b = k / kQuantBlock, i = k % kQuantBlock;
  const double d = f16_to_f32(m.scales().data<uint16_t>()[r * nb + b]);
  const uint8_t* row = m.values().data<uint8_t>() + r * m.values().size(1);
  if (m.format() == WeightFormat::Q8_0) return d * (row[b * kQuantBlock + i] - 128);
  const uint8_t byte = row[b * kQuantBlock / 2 + i % (kQuantBlock / 2)];
  const int code = i < kQuantBlock / 2 ? (byte & 0x0f) : (byte >> 4);
  return d * (code - 8);
}

// Row i of x [M, K] times row n of wd [N, K] plus bias, in double, and Σ|x·w| (the scale a rounding
// error is relative to).
struct ExactProduct {
  double value = 0, scale = 0;
};
ExactProduct exact_product(const std::vector<float>& x, int64_t i, const std::vector<float>& wd, int64_t n,
                           int64_t K, float bias) {
  ExactProduct p{bias, 0};
  for (int64_t k = 0; k < K; ++k) {
    p.value += static_cast<double>(x[i * K + k]) * wd[n * K + k];
    p.scale += std::fabs(static_cast<double>(x[i * K + k]) * wd[n * K + k]);
  }
  return p;
}

TEST_P(WeightMatrixTest, QuantizedFormatsPackAsDocumentedWithinTheirError) {
  for (WeightFormat format : {WeightFormat::Q8_0, WeightFormat::Q4_0}) {
    for (int64_t K : {1, 7, 32, 33, 70, 96}) {
      const int64_t N = 5;
      const Tensor w = random_tensor({N, K}, static_cast<uint32_t>(K), -2.f, 2.f);
      const WeightMatrix m = WeightMatrix::prepare(w, format);
      ASSERT_EQ(m.format(), format);
      ASSERT_EQ(m.rows(), N);
      ASSERT_EQ(m.cols(), K);
      const int64_t nb = (K + 31) / 32;
      ASSERT_EQ(m.scales().shape(), (Shape{N, nb}));
      ASSERT_EQ(m.values().shape(), (Shape{N, nb * (format == WeightFormat::Q8_0 ? 32 : 16)}));
      const Tensor deq = m.dequantize();
      for (int64_t r = 0; r < N; ++r)
        for (int64_t b = 0; b < nb; ++b) {
          double amax = 0;
          for (int64_t k = b * 32; k < std::min(K, b * 32 + 32); ++k) amax = std::max(amax, static_cast<double>(std::fabs(w.f32()[r * K + k])));
          // Q8_0: half a step of amax/127; Q4_0: one step of amax/8 (the side opposite the extreme clamps at +7).
          const double step = format == WeightFormat::Q8_0 ? amax / 127 : amax / 8;
          const double bound = (format == WeightFormat::Q8_0 ? 0.5 : 1.0) * step * 1.002 + 1e-7;
          for (int64_t k = b * 32; k < std::min(K, b * 32 + 32); ++k) {
            const double want = w.f32()[r * K + k];
            ASSERT_EQ(deq.f32()[r * K + k], static_cast<float>(decode(m, r, k))) << "r " << r << " k " << k;
            ASSERT_LE(std::fabs(deq.f32()[r * K + k] - want), bound)
                << weight_format_name(format) << " K " << K << " r " << r << " k " << k;
          }
        }
      // The padding of a partial last block decodes to zero.
      if (K % 32) {
        EXPECT_EQ(decode(m, 0, nb * 32 - 1), 0.0);
      }
    }
  }
}

// Bound on |Σ_k w_k·(x_k − x̂_k)| when x is quantized to 8 bits per 32-value block:
// |x_k − x̂_k| <= half a step, amax(block)/254.
double activation_bound(const std::vector<float>& x, int64_t row, int64_t K, const std::vector<float>& w, int64_t n) {
  double bound = 0;
  for (int64_t b = 0; b * 32 < K; ++b) {
    double amax = 0, wsum = 0;
    for (int64_t k = b * 32; k < std::min(K, b * 32 + 32); ++k) {
      amax = std::max(amax, static_cast<double>(std::fabs(x[row * K + k])));
      wsum += std::fabs(w[n * K + k]);
    }
    bound += wsum * amax / 254 * 1.001;
  }
  return bound;
}

// The integer product's definition, computed in double: x quantized per block (scale amax/127,
// codes rounded to nearest even), times the weights of row n decoded from the documented layout
// (wd: decode() of every element, row-major).
double quantized_reference(const std::vector<double>& wd, const float* x, int64_t K, int64_t n) {
  double total = 0;
  for (int64_t b = 0; b * 32 < K; ++b) {
    float amax = 0;
    for (int64_t k = b * 32; k < std::min(K, b * 32 + 32); ++k) amax = std::max(amax, std::fabs(x[k]));
    const float inv = amax >= 127.f * std::numeric_limits<float>::min() ? 127.f / amax : 0.f;
    const double dx = amax / 127.f;
    double block = 0;
    for (int64_t k = b * 32; k < std::min(K, b * 32 + 32); ++k) block += wd[n * K + k] * std::nearbyint(x[k] * inv);
    total += dx * block;
  }
  return total;
}

// Every instruction-set variant of the integer kernels (AVX-512 VNNI, AVX2, scalar) against the
// definition, on odd shapes (partial blocks, blocks not a multiple of the vector width).
TEST_P(WeightMatrixTest, QuantizedDecodeKernelsMatchTheDefinitionOnEveryInstructionSet) {
  const ops::simd::Isa saved = ops::simd::set_max_isa(ops::simd::Isa::Avx512);
  const ops::simd::Isa best = ops::simd::isa();
  std::vector<ops::simd::Isa> levels;
  for (ops::simd::Isa level : ops_test::isa_levels()) {
    if (static_cast<int>(level) > static_cast<int>(best))
      std::printf("[ note ] %s kernels not run: this CPU lacks them\n", ops::simd::isa_name(level));
    else
      levels.push_back(level);
  }
  uint32_t seed = 500;
  for (WeightFormat format : {WeightFormat::Q8_0, WeightFormat::Q4_0})
    for (int64_t K : {1, 31, 32, 33, 95, 96, 520, 1000})
      for (int64_t M : {1, 2, 5, 8})
        for (int64_t N : {1, 7, 37, 133}) {
          const Tensor w = random_tensor({N, K}, ++seed, -3.f, 3.f);
          std::vector<float> x = random_vector(M * K, ++seed, -2.f, 2.f);
          if (K > 40) std::fill(x.begin() + 32, x.begin() + 64 < x.begin() + K ? x.begin() + 64 : x.begin() + K, 0.f);  // an all-zero block
          const WeightMatrix m = WeightMatrix::prepare(w, format);
          // The definition, once for every instruction set and layout.
          std::vector<double> wd(static_cast<size_t>(N * K));
          for (int64_t n = 0; n < N; ++n)
            for (int64_t k = 0; k < K; ++k) wd[n * K + k] = decode(m, n, k);
          std::vector<double> want(static_cast<size_t>(M * N)), scale(static_cast<size_t>(M * N));
          for (int64_t i = 0; i < M; ++i)
            for (int64_t n = 0; n < N; ++n) {
              want[i * N + n] = quantized_reference(wd, x.data() + i * K, K, n);
              for (int64_t k = 0; k < K; ++k) scale[i * N + n] += std::fabs(wd[n * K + k] * x[i * K + k]);
            }
          // Q4_0 also with its rows interleaved by eight (the AVX2 kernel; scalar when capped there).
          std::vector<WeightMatrix> layouts{m};
          if (format == WeightFormat::Q4_0) layouts.push_back(m.interleaved_rows());
          for (ops::simd::Isa level : levels) {
            ops::simd::set_max_isa(level);
            for (const WeightMatrix& arranged : layouts) {
              std::vector<float> y(static_cast<size_t>(M * N));
              ops::linear(x.data(), M, K, arranged, nullptr, y.data());
              for (int64_t i = 0; i < M; ++i)
                for (int64_t n = 0; n < N; ++n)
                  ASSERT_NEAR(y[i * N + n], want[i * N + n], 1e-6 * scale[i * N + n] + 1e-6)
                      << ops::simd::isa_name(level) << " " << weight_format_name(format)
                      << (arranged.interleaved() ? " interleaved" : "") << " M " << M << " K " << K << " N " << N
                      << " at " << i << "," << n;
            }
          }
        }
  ops::simd::set_max_isa(saved);
}

// ops::linear of M rows of x with w prepared in `format` and arranged as a model load arranges it
// (kernel_layout: Q4_0 interleaved on AVX2, ...), plus bias, against the double product of the
// matrix's dequantized values wd: element (i, n) within tolerance(i, n, Σ|x·w|, wd).
using Tolerance = std::function<double(int64_t, int64_t, double, const std::vector<float>&)>;
void expect_product(const Tensor& w, WeightFormat format, const std::vector<float>& x, int64_t M,
                    const std::vector<float>& bias, const Tolerance& tolerance) {
  const int64_t N = w.size(0), K = w.size(1);
  const WeightMatrix m = ops::kernel_layout(WeightMatrix::prepare(w, format));
  const std::vector<float> wd = m.dequantize().to_vector();
  std::vector<float> y(static_cast<size_t>(M * N));
  ops::linear(x.data(), M, K, m, bias.data(), y.data());
  for (int64_t i = 0; i < M; ++i)
    for (int64_t n = 0; n < N; ++n) {
      const auto [want, scale] = exact_product(x, i, wd, n, K, bias[n]);
      ASSERT_NEAR(y[i * N + n], want, tolerance(i, n, scale, wd))
          << weight_format_name(format) << " M " << M << " K " << K << " N " << N << " at " << i << "," << n;
    }
}

// Many rows: activations, and dequantized weights, may be rounded to bf16.
double many_rows_tolerance(int64_t, int64_t, double scale, const std::vector<float>&) { return 4e-3 * scale + 1e-5; }

TEST_P(WeightMatrixTest, LinearOverEveryFormatEqualsTheDequantizedProduct) {
  // Where the CPU has AMX, the large products run on its tiles and again on vdpbf16ps.
  const bool saved_amx = ops::simd::set_amx_enabled(true);
  const bool has_amx = ops::simd::amx();
  for (bool tiles : {true, false}) {
    if (!tiles && !has_amx) break;  // nothing to switch off
    ops::simd::set_amx_enabled(tiles);
    uint32_t seed = 100;
    for (WeightFormat format : {WeightFormat::F32, WeightFormat::BF16, WeightFormat::Q8_0, WeightFormat::Q4_0})
      for (int64_t M : {1, 3, 8, 9, 40, 300})  // 300: quantized weights through the GEMM path
        for (int64_t K : {17, 64, 70})
          for (int64_t N : {1, 33, 130}) {
            const Tensor w = random_tensor({N, K}, ++seed);
            const std::vector<float> x = random_vector(M * K, ++seed), bias = random_vector(N, ++seed);
            // Activations may be rounded to bf16 (AVX-512 BF16 dot products; with many rows also
            // dequantized weights); quantized weights with up to 256 rows take activations quantized to 8 bits per block.
            const bool bf16_dots = format == WeightFormat::BF16 && ops::simd::isa() == ops::simd::Isa::Avx512;
            const auto tolerance = [&](int64_t i, int64_t n, double scale, const std::vector<float>& wd) {
              if (is_quantized(format) && M <= 256) return 2e-6 * scale + 1e-5 + activation_bound(x, i, K, wd, n);
              return (format != WeightFormat::F32 && (M > 8 || bf16_dots) ? 4e-3 : 2e-6) * scale + 1e-5;
            };
            SCOPED_TRACE(tiles ? "" : "no amx");
            expect_product(w, format, x, M, bias, tolerance);
          }
  }
  ops::simd::set_amx_enabled(saved_amx);
}

// Many rows with K over several of the GEMM's slices (512 pairs each): weights packed slice by
// slice from every format (quantized blocks dequantized from the slice's first column on).
TEST_P(WeightMatrixTest, LargeProductsOverSeveralSlicesOfK) {
  uint32_t seed = 500;
  for (WeightFormat format : {WeightFormat::BF16, WeightFormat::Q8_0, WeightFormat::Q4_0})
    for (int64_t K : {1100, 2100}) {
      const int64_t M = 300, N = 70;
      const Tensor w = random_tensor({N, K}, ++seed);
      const std::vector<float> x = random_vector(M * K, ++seed);
      expect_product(w, format, x, M, std::vector<float>(N, 0.f), many_rows_tolerance);
    }
}

// A matrix much larger than one widened panel of the f32 path (4 MB: Q8_0 without AVX-512 BF16, BF16
// on the scalar fallback; elsewhere the bf16 GEMM over many column blocks): 2050 rows of 4100 in nine
// panels (the last shorter), every output column from the right panel row.
TEST_P(WeightMatrixTest, ProductsOverSeveralWidenedPanels) {
  const int64_t M = 12, K = 4100, N = 2050;
  const Tensor w = random_tensor({N, K}, 901);
  const std::vector<float> x = random_vector(M * K, 902), bias = random_vector(N, 903);
  for (WeightFormat format : {WeightFormat::BF16, WeightFormat::Q8_0})
    expect_product(w, format, x, M, bias, many_rows_tolerance);
}

// Two products of one input in one call (a gated MLP's gate and up projections): the same numbers as
// two linear() calls, for every format and row count, with the first matrix a multiple of 8 rows
// (one streamed pass on the CPU) or not (two calls).
TEST_P(WeightMatrixTest, LinearPairEqualsTwoProducts) {
  const int64_t K = 70;
  uint32_t seed = 300;
  for (WeightFormat format : {WeightFormat::F32, WeightFormat::BF16, WeightFormat::Q8_0, WeightFormat::Q4_0})
    for (int64_t N1 : {64, 136, 37})
      for (int64_t M : {1, 3, 9, 80}) {
        const int64_t N2 = 51;
        const WeightMatrix w1 = ops::kernel_layout(WeightMatrix::prepare(random_tensor({N1, K}, ++seed), format));
        const WeightMatrix w2 = ops::kernel_layout(WeightMatrix::prepare(random_tensor({N2, K}, ++seed), format));
        const std::vector<float> x = random_vector(M * K, ++seed);
        std::vector<float> want1(static_cast<size_t>(M * N1)), want2(static_cast<size_t>(M * N2));
        ops::linear(x.data(), M, K, w1, nullptr, want1.data());
        ops::linear(x.data(), M, K, w2, nullptr, want2.data());
        std::vector<float> y1(want1.size(), std::numeric_limits<float>::quiet_NaN()), y2(want2.size(), y1[0]);
        ops::linear_pair(x.data(), M, K, w1, y1.data(), w2, y2.data());
        EXPECT_EQ(y1, want1) << weight_format_name(format) << " N1 " << N1 << " M " << M;
        EXPECT_EQ(y2, want2) << weight_format_name(format) << " N1 " << N1 << " M " << M;
      }
  EXPECT_THROW(ops::linear_pair(nullptr, 1, K + 1, WeightMatrix::prepare(random_tensor({8, K}, 1), WeightFormat::BF16),
                                nullptr, WeightMatrix::prepare(random_tensor({8, K}, 2), WeightFormat::BF16), nullptr),
               Error);
}

// Decode products split their weight rows over the pool: each thread owns a segment and threads
// that finish take chunks from the back of the others'. More threads than cores (the spare ones
// sleep and wake late, so segments are taken over) must give every row exactly once, bit for bit as
// one thread computes it.
TEST(WeightMatrix, DecodeRowsSplitOverManyThreadsGiveTheOneThreadResult) {
  const int64_t N = 1003, K = 96;  // N not a multiple of the 8-row unit
  const Tensor w = random_tensor({N, K}, 41);
  const std::vector<float> x = random_vector(K, 42);
  for (WeightFormat format : {WeightFormat::BF16, WeightFormat::Q8_0, WeightFormat::Q4_0}) {
    const WeightMatrix m = ops::kernel_layout(WeightMatrix::prepare(w, format));
    std::vector<float> want(static_cast<size_t>(N));
    {
      ThreadPool one(1);
      const ThreadPool::Use use(one);
      ops::linear(x.data(), 1, K, m, nullptr, want.data());
    }
    for (int threads : {2, 3, 7, 11}) {  // 11: more segments than fit on the stack
      ThreadPool pool(threads);
      const ThreadPool::Use use(pool);
      for (int round = 0; round < 20; ++round) {
        std::vector<float> y(static_cast<size_t>(N), std::numeric_limits<float>::quiet_NaN());
        ops::linear(x.data(), 1, K, m, nullptr, y.data());
        ASSERT_EQ(std::memcmp(y.data(), want.data(), sizeof(float) * y.size()), 0)
            << weight_format_name(format) << " with " << threads << " threads, round " << round;
      }
    }
  }
}

// The interleaved Q4_0 layout, element by element as documented in ops/weight_matrix.h: the same
// codes and scales as the plain layout, zero rows padding the last group.
TEST(WeightMatrix, Q4RowsInterleaveAsDocumented) {
  for (int64_t N : {1, 8, 13}) {
    const int64_t K = 70, nb = 3;
    const WeightMatrix plain = WeightMatrix::prepare(random_tensor({N, K}, static_cast<uint32_t>(N), -2.f, 2.f), WeightFormat::Q4_0);
    const WeightMatrix m = plain.interleaved_rows();
    ASSERT_TRUE(m.interleaved());
    EXPECT_FALSE(m.scales().defined());
    const int64_t groups = (N + 7) / 8;
    ASSERT_EQ(m.values().shape(), (Shape{groups, nb * 144}));
    EXPECT_EQ(m.nbytes(), static_cast<size_t>(groups * nb * 144));
    for (int64_t r = 0; r < groups * 8; ++r)
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* block = m.values().data<uint8_t>() + (r / 8) * nb * 144 + b * 144;
        uint16_t scale;
        std::memcpy(&scale, block + 2 * (r % 8), 2);
        for (int64_t j = 0; j < 16; ++j) {
          const uint8_t byte = block[16 + 32 * (j / 4) + 4 * (r % 8) + j % 4];
          if (r >= N) {
            ASSERT_EQ(scale, 0);
            ASSERT_EQ(byte, 0);
            continue;
          }
          ASSERT_EQ(scale, plain.scales().data<uint16_t>()[r * nb + b]);
          ASSERT_EQ(byte, plain.values().data<uint8_t>()[r * nb * 16 + b * 16 + j]) << "r " << r << " b " << b;
        }
      }
    EXPECT_EQ(m.dequantize().to_vector(), plain.dequantize().to_vector());
    std::vector<float> rows(static_cast<size_t>(2 * 32));
    if (N > 2) {  // a block of rows and columns, as the prefill panels take it
      std::vector<float> want(rows.size());
      m.dequantize_block(1, 2, 32, 32, rows.data(), 32);
      plain.dequantize_block(1, 2, 32, 32, want.data(), 32);
      EXPECT_EQ(rows, want);
    }
    // Interleaved rows stay on the CPU and are not stacked again.
    EXPECT_THROW(stack_rows(std::vector<MatrixRowBlock>{{m, 0, N}}), Error);
    EXPECT_THROW(plain.interleaved_rows().interleaved_rows(), Error);
  }
  // Which layout the kernels get: interleaved Q4_0 wherever a SIMD kernel reads it (AVX2, AVX-512).
  const Tensor w = random_tensor({16, 64}, 7);
  for (WeightFormat format : {WeightFormat::F32, WeightFormat::BF16, WeightFormat::Q8_0, WeightFormat::Q4_0}) {
    const WeightMatrix m = WeightMatrix::prepare(w, format), arranged = ops::kernel_layout(m);
    EXPECT_EQ(arranged.interleaved(), format == WeightFormat::Q4_0 && ops::simd::isa() != ops::simd::Isa::Scalar);
    EXPECT_EQ(arranged.dequantize().to_vector(), m.dequantize().to_vector());
  }
}

// linear() with an activation equals linear() and then the activation, bit for bit, for every format
// and arrangement (the bf16 GEMM applies GELU to each finished block of y; the rest take a second pass).
TEST_P(WeightMatrixTest, LinearWithAnActivationEqualsTheActivationOfTheProduct) {
  uint32_t seed = 700;
  for (WeightFormat format : {WeightFormat::F32, WeightFormat::BF16, WeightFormat::Q8_0, WeightFormat::Q4_0})
    for (int64_t M : {1, 9, 77})
      for (int64_t N : {33, 300}) {
        const int64_t K = 70;
        const WeightMatrix rows = WeightMatrix::prepare(random_tensor({N, K}, ++seed), format);
        std::vector<WeightMatrix> arranged{rows, ops::kernel_layout(rows)};
        if (format == WeightFormat::BF16) arranged.push_back(rows.bf16_panels());
        const std::vector<float> x = random_vector(M * K, ++seed), bias = random_vector(N, ++seed);
        for (const WeightMatrix& m : arranged)
          for (ops::Activation activation : {ops::Activation::None, ops::Activation::Relu, ops::Activation::GeluErf}) {
            std::vector<float> want(static_cast<size_t>(M * N)), got(want.size());
            ops::linear(x.data(), M, K, m, bias.data(), want.data());
            ops::activate(activation, want.data(), M * N);
            ops::linear(x.data(), M, K, m, bias.data(), got.data(), activation);
            ASSERT_EQ(got, want) << weight_format_name(format) << (m.in_panels() ? " panels" : "") << " activation "
                                 << static_cast<int>(activation) << " M " << M << " N " << N;
          }
      }
}

// AMX switched off for a scope (and back as it was, also when an assertion returns early).
struct AmxOff {
  bool saved = ops::simd::set_amx_enabled(false);
  ~AmxOff() { ops::simd::set_amx_enabled(saved); }
};

// ops::feed_forward equals linear() with the activation and then linear(), bit for bit, for every
// format and arrangement (the hidden buffer is scratch). With both matrices in panels (AVX-512 BF16,
// AMX not in use) the CPU rounds each finished block of the hidden layer into fc2's operand instead
// of a pass of its own, and with K = 70 (one slice) keeps the block in a per-thread buffer: odd widths
// (fc1's last panel partial, the hidden layer's last pair half padding) and more rows than one block
// of the GEMM check its offsets. K = 1100 takes two slices (the hidden layer written as C).
TEST_P(WeightMatrixTest, FeedForwardEqualsTwoLinears) {
  uint32_t seed = 900;
  const AmxOff amx_off;  // the fused path runs on zmm tiles only (with AMX: the separate products)
  for (WeightFormat format : {WeightFormat::F32, WeightFormat::BF16, WeightFormat::Q8_0, WeightFormat::Q4_0})
    for (int64_t M : {1, 13, 100})
      for (int64_t hidden : {77, 320, 2048})
        for (int64_t K : {70, 1100}) {
        // 2048: hidden rows of 4 KiB in bf16, padded by 64 bytes in fc2's operand (one case suffices)
        if (hidden == 2048 && (format != WeightFormat::BF16 || M != 100 || K != 70)) continue;
        const int64_t N = 45;
        const WeightMatrix fc1 = WeightMatrix::prepare(random_tensor({hidden, K}, ++seed), format);
        const WeightMatrix fc2 = WeightMatrix::prepare(random_tensor({N, hidden}, ++seed), format);
        std::vector<std::pair<WeightMatrix, WeightMatrix>> arranged{{fc1, fc2},
                                                                    {ops::kernel_layout(fc1), ops::kernel_layout(fc2)}};
        if (format == WeightFormat::BF16) {
          arranged.emplace_back(fc1.bf16_panels(), fc2.bf16_panels());
          arranged.emplace_back(fc1.bf16_panels(), fc2);  // one in panels: the two linear() calls
        }
        const std::vector<float> x = random_vector(M * K, ++seed), b1 = random_vector(hidden, ++seed),
                                 b2 = random_vector(N, ++seed);
        for (const auto& [first, second] : arranged)
          for (ops::Activation activation : {ops::Activation::None, ops::Activation::Relu, ops::Activation::GeluErf}) {
            std::vector<float> want_hidden(static_cast<size_t>(M * hidden)), want(static_cast<size_t>(M * N));
            ops::linear(x.data(), M, K, first, b1.data(), want_hidden.data(), activation);
            ops::linear(want_hidden.data(), M, hidden, second, b2.data(), want.data());
            std::vector<float> got_hidden(want_hidden.size()), got(want.size());
            ops::feed_forward(x.data(), M, first, b1.data(), activation, got_hidden.data(), second, b2.data(),
                              got.data());
            const std::string what = std::string(weight_format_name(format)) + (first.in_panels() ? " panels" : "") +
                                     (second.in_panels() ? "+panels" : "") + " activation " +
                                     std::to_string(static_cast<int>(activation)) + " M " + std::to_string(M) +
                                     " hidden " + std::to_string(hidden) + " K " + std::to_string(K);
            ASSERT_EQ(got, want) << what;
          }
      }
}

// ops::gated_feed_forward equals linear_pair, silu_mul and linear(), bit for bit, for every format.
// With BF16 rows and more than decode's rows the CPU multiplies gate and up side by side and rounds
// SiLU(gate) ⊙ up block by block into the down product's operand: partial panels (I = 77), several
// column blocks and both threads' shares (I = 600), row tiles overhanging M, K of one slice (70,
// 1000) and of two (1100: the separate products).
TEST_P(WeightMatrixTest, GatedFeedForwardEqualsItsParts) {
  uint32_t seed = 1300;
  const AmxOff amx_off;  // the fused path runs on zmm tiles only (with AMX: the separate products)
  for (WeightFormat format : {WeightFormat::F32, WeightFormat::BF16, WeightFormat::Q8_0})
    for (int64_t M : {1, 13, 100})
      for (int64_t I : {77, 600, 2048})
        for (int64_t K : {70, 1000, 1100}) {
          if (format != WeightFormat::BF16 && K != 70) continue;
          // 2048: bf16 hidden rows of 4 KiB, padded by 64 bytes in the down product's operand
          if (I == 2048 && (format != WeightFormat::BF16 || M != 100 || K != 70)) continue;
          const int64_t N = 45;
          const WeightMatrix gate_w = ops::kernel_layout(WeightMatrix::prepare(random_tensor({I, K}, ++seed), format));
          const WeightMatrix up_w = ops::kernel_layout(WeightMatrix::prepare(random_tensor({I, K}, ++seed), format));
          const WeightMatrix down_w = ops::kernel_layout(WeightMatrix::prepare(random_tensor({N, I}, ++seed), format));
          const std::vector<float> x = random_vector(M * K, ++seed);
          std::vector<float> gate(static_cast<size_t>(M * I)), up(gate.size()), want(static_cast<size_t>(M * N));
          ops::linear_pair(x.data(), M, K, gate_w, gate.data(), up_w, up.data());
          ops::silu_mul(gate.data(), up.data(), M * I);
          ops::linear(gate.data(), M, I, down_w, nullptr, want.data());
          std::vector<float> got(want.size());
          ops::gated_feed_forward(x.data(), M, K, gate_w, up_w, gate.data(), up.data(), down_w, got.data());
          ASSERT_EQ(got, want) << weight_format_name(format) << " M " << M << " I " << I << " K " << K;
        }
  const WeightMatrix w = WeightMatrix::prepare(random_tensor({40, 16}, 1), WeightFormat::BF16);
  const WeightMatrix narrower = WeightMatrix::prepare(random_tensor({32, 16}, 2), WeightFormat::BF16);
  EXPECT_THROW(ops::gated_feed_forward(nullptr, 1, 16, w, narrower, nullptr, nullptr, w, nullptr), Error);
}

// A feed-forward block over more rows than its scratch holds goes in chunks; every row comes out as
// from the whole product. The hidden layer (24576) is wide enough that 513 rows go in chunks on every
// path (288 + 225 rows, in a scratch of 288 rows with the weights in panels, of 336 elsewhere).
TEST_P(WeightMatrixTest, FeedForwardBlockInChunksEqualsTheWholeProduct) {
  constexpr int64_t kHidden = 24576;
  FeedForward f;
  f.fc1 = ops::many_rows_layout(WeightMatrix::prepare(random_tensor({kHidden, 24}, 61), WeightFormat::BF16));
  f.fc2 = ops::many_rows_layout(WeightMatrix::prepare(random_tensor({9, kHidden}, 62), WeightFormat::BF16));
  f.fc1_bias = random_tensor({kHidden}, 63);
  f.fc2_bias = random_tensor({9}, 64);
  const int64_t rows = 513;
  ASSERT_LT(f.scratch_rows(rows), rows);
  const Tensor x = random_tensor({rows, 24}, 65);
  const std::vector<float> want = f.forward(x).to_vector();
  std::vector<float> hidden(static_cast<size_t>(f.scratch_rows(rows) * kHidden)), got(static_cast<size_t>(rows * 9));
  f.forward(x.kernel_f32(), rows, hidden.data(), got.data());
  for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], want[i], 1e-4 * (std::fabs(want[i]) + 1)) << "at " << i;
}

// The BF16 panel layout, word by word as documented in ops/weight_matrix.h: the same values as
// the rows, zeros past N and K, pairs padded to a multiple of 16.
TEST(WeightMatrix, Bf16PanelsArrangeAsDocumented) {
  const ops::simd::Isa saved = ops::simd::set_max_isa(ops::simd::Isa::Avx512);
  for (ops::simd::Isa level : {ops::simd::Isa::Scalar, ops::simd::Isa::Avx512})  // packed by gathers or words
    for (int64_t N : {1, 32, 45})
      for (int64_t K : {1, 2, 33, 70}) {
        ops::simd::set_max_isa(level);
        const WeightMatrix rows = WeightMatrix::prepare(random_tensor({N, K}, static_cast<uint32_t>(N * 100 + K)),
                                                        WeightFormat::BF16);
        const WeightMatrix m = rows.bf16_panels();
        ops::simd::set_max_isa(saved);
        ASSERT_TRUE(m.in_panels());
        ASSERT_EQ(m.rows(), N);
        ASSERT_EQ(m.cols(), K);
        const int64_t panels = (N + 31) / 32, pairs = ((K + 1) / 2 + 15) / 16 * 16;
        ASSERT_EQ(m.panel_pairs(), pairs);
        ASSERT_EQ(m.values().shape(), (Shape{panels, pairs * 64}));
        const uint16_t* v = m.values().data<uint16_t>();
        const uint16_t* w = rows.values().data<uint16_t>();
        for (int64_t p = 0; p < panels; ++p)
          for (int64_t kp = 0; kp < pairs; ++kp)
            for (int64_t lane = 0; lane < 32; ++lane)
              for (int64_t half = 0; half < 2; ++half) {
                const int64_t n = 32 * p + lane, k = 2 * kp + half;
                const uint16_t want = n < N && k < K ? w[n * K + k] : uint16_t{0};
                ASSERT_EQ(v[p * pairs * 64 + (kp * 32 + lane) * 2 + half], want)
                    << "N " << N << " K " << K << " row " << n << " col " << k;
              }
        EXPECT_EQ(m.dequantize().to_vector(), rows.dequantize().to_vector());
        if (N > 2 && K > 3) {
          std::vector<float> got(6), want(6);
          m.dequantize_block(1, 2, 1, 3, got.data(), 3);
          rows.dequantize_block(1, 2, 1, 3, want.data(), 3);
          EXPECT_EQ(got, want);
        }
        // Panels stay on the CPU, are not stacked, and are made from plain BF16 rows only.
        EXPECT_THROW(stack_rows(std::vector<MatrixRowBlock>{{m, 0, N}}), Error);
        EXPECT_THROW(m.bf16_panels(), Error);
        EXPECT_THROW(WeightMatrix::prepare(random_tensor({N, K}, 3), WeightFormat::F32).bf16_panels(), Error);
      }
  ops::simd::set_max_isa(saved);
  // Which layout a matrix applied to whole images gets: panels where the bf16 GEMM's AVX-512 BF16 or
  // AVX2 tiles read them, rows for the scalar fallback.
  const Tensor w = random_tensor({40, 64}, 8);
  for (ops::simd::Isa level : {ops::simd::Isa::Scalar, ops::simd::Isa::Avx2, ops::simd::Isa::Avx512}) {
    ops::simd::set_max_isa(level);
    for (WeightFormat format : {WeightFormat::F32, WeightFormat::BF16, WeightFormat::Q8_0}) {
      const WeightMatrix m = WeightMatrix::prepare(w, format), arranged = ops::many_rows_layout(m);
      EXPECT_EQ(arranged.in_panels(), format == WeightFormat::BF16 && ops::simd::isa() != ops::simd::Isa::Scalar);
      EXPECT_EQ(arranged.dequantize().to_vector(), m.dequantize().to_vector());
    }
  }
  ops::simd::set_max_isa(saved);
}

// A product with the weights in panels equals the product with the same weights in rows: bit for
// bit where both take the GEMM (more than 8 rows: the same panels, packed at load instead of per
// call), and within the error of the exact product for every row count (bf16 rounding of x on
// AVX-512 BF16, f32 sums on AVX2 and in the scalar fallback). Odd shapes: partial panels, odd K, K
// over one 256-pair source slice and over the GEMM's 512-pair slice (C accumulated across slices);
// every instruction set the CPU has, AMX on and off where it has it.
TEST_P(WeightMatrixTest, Bf16PanelsGiveTheProductOfTheRows) {
  const bool saved_amx = ops::simd::set_amx_enabled(true);
  const bool has_amx = ops::simd::amx();
  const ops::simd::Isa saved = ops::simd::isa();
  uint32_t seed = 900;
  for (ops::simd::Isa level : {ops::simd::Isa::Scalar, ops::simd::Isa::Avx2, ops::simd::Isa::Avx512})
    for (bool tiles : {true, false}) {
      ops::simd::set_max_isa(level);
      if (ops::simd::isa() != level) break;  // not on this CPU
      if (!tiles && !(has_amx && level == ops::simd::Isa::Avx512)) break;
      ops::simd::set_amx_enabled(tiles);
      const double tolerance = level == ops::simd::Isa::Avx512 ? 4e-3 : 1e-5;
      const std::string where = std::string(ops::simd::isa_name(level)) + (tiles ? " " : " no amx ");
      for (int64_t M : {1, 5, 13, 77, 300})
        for (int64_t K : {17, 64, 521, 1101})
          for (int64_t N : {1, 33, 130}) {
            const WeightMatrix rows = WeightMatrix::prepare(random_tensor({N, K}, ++seed), WeightFormat::BF16);
            const WeightMatrix panels = rows.bf16_panels();
            const std::vector<float> x = random_vector(M * K, ++seed), bias = random_vector(N, ++seed);
            const std::vector<float> wd = rows.dequantize().to_vector();
            std::vector<float> got(static_cast<size_t>(M * N)), by_rows(got.size());
            ops::linear(x.data(), M, K, panels, bias.data(), got.data());
            ops::linear(x.data(), M, K, rows, bias.data(), by_rows.data());
            if (M > 8) {
              ASSERT_EQ(got, by_rows) << where << "M " << M << " K " << K << " N " << N;
            }
            for (int64_t i = 0; i < M; ++i)
              for (int64_t n = 0; n < N; ++n) {
                const auto [want, scale] = exact_product(x, i, wd, n, K, bias[n]);
                ASSERT_NEAR(got[i * N + n], want, tolerance * scale + 1e-6)
                    << where << "M " << M << " K " << K << " N " << N << " at " << i << "," << n;
              }
          }
    }
  ops::simd::set_max_isa(saved);
  ops::simd::set_amx_enabled(saved_amx);
}

// With a weight arena (a CPU model load), every quantized matrix for the CPU kernels is copied into
// it, slice by slice with `consumed` covering the stored rows in order, and reads as before;
// unquantized ones stay in place.
TEST(WeightMatrix, KernelLayoutCopiesIntoTheWeightArena) {
  const Tensor w = random_tensor({1500, 96}, 9);
  const std::vector<float> x = random_vector(96, 10);
  WeightArena arena;
  for (WeightFormat format : {WeightFormat::F32, WeightFormat::BF16}) {
    const WeightMatrix m = WeightMatrix::prepare(w, format);
    EXPECT_EQ(ops::kernel_layout(m, {}, &arena).values().raw(), m.values().raw());
  }
  for (WeightFormat format : {WeightFormat::Q8_0, WeightFormat::Q4_0}) {
    const WeightMatrix m = WeightMatrix::prepare(w, format);
    int64_t next_row = 0;
    const WeightMatrix arranged = ops::kernel_layout(m, [&](int64_t first, int64_t rows) {
      EXPECT_EQ(first, next_row);
      next_row = first + rows;
    }, &arena);
    EXPECT_EQ(next_row, m.rows()) << weight_format_name(format);
    EXPECT_NE(arranged.values().raw(), m.values().raw()) << weight_format_name(format);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(arranged.values().raw()) % 64, 0u);
    EXPECT_EQ(arranged.dequantize().to_vector(), m.dequantize().to_vector()) << weight_format_name(format);
    std::vector<float> want(1500), got(1500);
    ops::linear(x.data(), 1, 96, ops::kernel_layout(m), nullptr, want.data());
    ops::linear(x.data(), 1, 96, arranged, nullptr, got.data());
    EXPECT_EQ(got, want) << weight_format_name(format);
  }
}

TEST(WeightMatrix, UnquantizedFormatsUseMatchingStorageInPlace) {
  const Tensor w = random_tensor({4, 6}, 1).to(DType::BF16);
  const WeightMatrix m = WeightMatrix::prepare(w, WeightFormat::BF16);
  EXPECT_EQ(m.values().raw(), w.raw());  // no copy of a checkpoint's bf16 matrix
  EXPECT_EQ(WeightMatrix::prepare(w, WeightFormat::F32).values().dtype(), DType::F32);
  EXPECT_FALSE(WeightMatrix::prepare(Tensor(), WeightFormat::Q4_0).defined());  // declaring mode
}

TEST(WeightMatrix, FormatNames) {
  for (WeightFormat f : {WeightFormat::F32, WeightFormat::BF16, WeightFormat::Q8_0, WeightFormat::Q4_0})
    EXPECT_EQ(parse_weight_format(weight_format_name(f)), f);
  EXPECT_THROW(parse_weight_format("q5_1"), Error);
  EXPECT_THROW(parse_weight_format(""), Error);
}

TEST(WeightMatrix, StackRowsFusesAndReorders) {
  const Tensor a = random_tensor({3, 4}, 3).to(DType::BF16), b = random_tensor({2, 4}, 4).to(DType::BF16);
  const Tensor s = stack_rows({{b, 1, 1}, {a, 0, 3}, {b, 0, 1}});
  ASSERT_EQ(s.shape(), (Shape{5, 4}));
  ASSERT_EQ(s.dtype(), DType::BF16);
  const std::vector<float> sv = s.to_vector(), av = a.to_vector(), bv = b.to_vector();
  const std::vector<float> want_rows[] = {{bv.begin() + 4, bv.end()}, {av.begin(), av.begin() + 4},
                                          {av.begin() + 4, av.begin() + 8}, {av.begin() + 8, av.end()},
                                          {bv.begin(), bv.begin() + 4}};
  for (int r = 0; r < 5; ++r) EXPECT_EQ(std::vector<float>(sv.begin() + r * 4, sv.begin() + r * 4 + 4), want_rows[r]);
  EXPECT_FALSE(stack_rows({{a, 0, 3}, {Tensor(), 0, 0}}).defined());
  EXPECT_THROW(stack_rows({{a, 0, 4}}), Error);
  EXPECT_THROW(stack_rows({{a, 0, 1}, {random_tensor({2, 5}, 5), 0, 1}}), Error);
}

TEST(WeightMatrix, ConvWeightsInGemmLayout) {
  const Tensor w = random_tensor({4, 3, 2, 5}, 6);
  const ConvWeight c = ConvWeight::prepare(w.to(DType::BF16));
  EXPECT_EQ(c.matrix.format(), WeightFormat::F32);  // widened once, at load
  EXPECT_EQ(c.matrix.rows(), 4);
  EXPECT_EQ(c.matrix.cols(), 3 * 2 * 5);
  EXPECT_EQ(c.matrix.values().to_vector(), w.to(DType::BF16).to_vector());

  const Tensor t = random_tensor({3, 2, 2, 2}, 7);  // [Cin, Cout, 2, 2]
  const ConvWeight tc = ConvWeight::prepare_transposed_2x2(t);
  ASSERT_EQ(tc.matrix.rows(), 2 * 4);
  ASSERT_EQ(tc.matrix.cols(), 3);
  for (int64_t ci = 0; ci < 3; ++ci)
    for (int64_t tap = 0; tap < 8; ++tap)
      EXPECT_EQ(tc.matrix.values().f32()[tap * 3 + ci], t.f32()[ci * 8 + tap]);
  EXPECT_THROW(ConvWeight::prepare(random_tensor({4, 3}, 8)), Error);
  EXPECT_THROW(ConvWeight::prepare_transposed_2x2(random_tensor({3, 2, 3, 3}, 8)), Error);
}

INSTANTIATE_TEST_SUITE_P(Ops, WeightMatrixTest, ::testing::Values(1, 2));

}  // namespace
}  // namespace sa2va
