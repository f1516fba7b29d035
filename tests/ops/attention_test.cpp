// ops::attention against a double-precision softmax(QKᵀ·scale + mask)·V, for every code path
// (short decode queries, blocked long queries, the fused f32 and bf16 kernels), causal with offsets, GQA,
// masks and strides. The bf16 reference rounds q, k, v to bf16 as the kernel does; the remaining
// difference is the bf16 rounding of the probabilities.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "ops/cpu/simd.h"
#include "ops/ops.h"
#include "ops_test_util.h"

namespace sa2va {
namespace {

using ops_test::random_vector;

class OpsAttentionTest : public ops_test::ThreadedTest {};

struct Case {
  int64_t q_len, kv_len, q_heads, kv_heads, head_dim, v_head_dim;
  bool causal;
  int64_t q_offset;
  bool with_mask;
  int64_t pad;  // extra elements at the end of each token row (strided views)
};

void run_case(const Case& c, bool bf16 = false) {
  SCOPED_TRACE(::testing::Message() << "Sq=" << c.q_len << " Sk=" << c.kv_len << " H=" << c.q_heads << "/"
                                    << c.kv_heads << " D=" << c.head_dim << "/" << c.v_head_dim
                                    << " causal=" << c.causal << " off=" << c.q_offset << " mask=" << c.with_mask
                                    << " bf16=" << bf16);
  const int64_t Dv = c.v_head_dim ? c.v_head_dim : c.head_dim;
  const int64_t qs = c.q_heads * c.head_dim + c.pad, ks = c.kv_heads * c.head_dim + c.pad,
                vs = c.kv_heads * Dv + c.pad, os = c.q_heads * Dv + c.pad;
  const std::vector<float> q = random_vector(c.q_len * qs, 1, -2.f, 2.f), k = random_vector(c.kv_len * ks, 2, -2.f, 2.f),
                           v = random_vector(c.kv_len * vs, 3);
  auto operand = [&](const std::vector<float>& x) {  // what the kernel multiplies
    std::vector<float> r = x;
    if (bf16)
      for (float& e : r) e = round_to_bf16(e);
    return r;
  };
  const std::vector<float> qr = operand(q), kr = operand(k), vr = operand(v);
  std::vector<float> mask = random_vector(c.q_len * c.kv_len, 4, -3.f, 0.f);
  if (c.with_mask && c.kv_len > 1) mask[0] = -std::numeric_limits<float>::infinity();  // a hard-masked key
  std::vector<float> out(static_cast<size_t>(c.q_len * os), 7.f);
  const float scale = 1.f / std::sqrt(static_cast<float>(c.head_dim));

  ops::AttentionArgs a;
  a.q = q.data(), a.q_stride = qs, a.k = k.data(), a.k_stride = ks, a.v = v.data(), a.v_stride = vs;
  a.out = out.data(), a.out_stride = os;
  a.q_len = c.q_len, a.kv_len = c.kv_len, a.q_heads = c.q_heads, a.kv_heads = c.kv_heads;
  a.head_dim = c.head_dim, a.v_head_dim = c.v_head_dim, a.scale = scale, a.causal = c.causal;
  a.q_offset = c.q_offset, a.mask = c.with_mask ? mask.data() : nullptr;
  a.bf16_operands = bf16;
  ops::attention(a);

  const int64_t n_rep = c.q_heads / c.kv_heads;
  for (int64_t i = 0; i < c.q_len; ++i)
    for (int64_t h = 0; h < c.q_heads; ++h) {
      const int64_t hk = h / n_rep;
      std::vector<double> s(static_cast<size_t>(c.kv_len), -INFINITY);
      double mx = -INFINITY;
      for (int64_t j = 0; j < c.kv_len; ++j) {
        if (c.causal && j > c.q_offset + i) continue;
        double d = 0;
        for (int64_t e = 0; e < c.head_dim; ++e)
          d += static_cast<double>(qr[i * qs + h * c.head_dim + e]) * kr[j * ks + hk * c.head_dim + e];
        s[j] = d * scale + (c.with_mask ? mask[i * c.kv_len + j] : 0.0);
        mx = std::max(mx, s[j]);
      }
      double sum = 0;
      for (auto& x : s) sum += (x = std::isinf(mx) ? 0 : std::exp(x - mx));
      for (int64_t e = 0; e < Dv; ++e) {
        double o = 0;
        for (int64_t j = 0; j < c.kv_len; ++j) o += s[j] / (sum > 0 ? sum : 1) * vr[j * vs + hk * Dv + e];
        // bf16 probabilities carry 2^-9 relative error each; |v| <= 1.
        ASSERT_NEAR(out[i * os + h * Dv + e], o, bf16 ? 4e-3 : 2e-5) << "i=" << i << " h=" << h << " e=" << e;
      }
    }
  for (int64_t i = 0; i < c.q_len; ++i)  // padding between rows is untouched
    for (int64_t e = c.q_heads * Dv; e < os; ++e) ASSERT_EQ(out[i * os + e], 7.f);
}

TEST_P(OpsAttentionTest, FullAndCausalGqaMaskOffset) {
  const Case cases[] = {
      // short-query (decode) path
      {1, 1, 1, 1, 8, 0, false, 0, false, 0},
      {1, 37, 6, 2, 16, 0, true, 36, false, 3},   // decode step with KV cache, GQA 3
      {3, 29, 4, 4, 9, 5, true, 26, true, 0},     // odd dims, Dv != D, mask
      {2, 17, 2, 1, 7, 0, false, 0, true, 1},
      // blocked path
      {33, 33, 3, 1, 17, 0, true, 0, false, 2},   // prefill, causal, GQA
      {21, 50, 4, 2, 12, 0, true, 29, false, 0},  // chunked prefill after 29 cached tokens
      {45, 19, 2, 2, 10, 6, false, 0, true, 1},   // full attention with mask, Dv != D
      {600, 70, 1, 1, 5, 0, false, 0, false, 0},  // several query blocks
      {9, 4, 2, 1, 3, 0, true, 0, false, 0},      // causal with fewer keys than queries
  };
  for (const auto& c : cases) run_case(c);
}

// The decode path (a few query rows against the KV cache: one query's scores against every key,
// then the probabilities times the values summed in registers) on every instruction set, with the
// language models' head sizes (64, 128), a value width with a tail (72 = 64 + 8, 100) and long caches.
TEST_P(OpsAttentionTest, DecodePathOnEveryInstructionSet) {
  const Case cases[] = {
      {1, 300, 14, 2, 64, 0, true, 299, false, 0},   // Sa2VA-1B's LLM after 300 tokens
      {1, 129, 8, 8, 128, 0, true, 128, false, 4},  // 128-wide heads, strided rows
      {2, 90, 6, 3, 40, 72, true, 88, true, 0},     // Dv 72, mask
      {3, 65, 2, 1, 33, 100, false, 0, false, 1},   // Dv 100, odd head size
  };
  ops_test::for_each_isa([&](ops::simd::Isa) {
    for (const auto& c : cases) run_case(c);
  });
}

// The fused f32 kernel (AVX2, value width a multiple of 8; run with the instruction set capped at
// AVX2 so that AVX-512 machines test it too): several query and key blocks and key chunks, ragged
// tails, causal with offsets, GQA, masks, Dv != D with a 16 + 8 column tail, strides.
TEST_P(OpsAttentionTest, FusedF32MatchesReference) {
  const ops::simd::Isa saved = ops::simd::set_max_isa(ops::simd::Isa::Avx2);
  if (ops::simd::isa() != ops::simd::Isa::Avx2) {
    ops::simd::set_max_isa(saved);
    GTEST_SKIP() << "this CPU lacks AVX2";
  }
  const Case cases[] = {
      {70, 200, 4, 2, 64, 0, true, 130, true, 1},
      {50, 300, 2, 2, 72, 16, false, 0, true, 0},
      {13, 9, 1, 1, 8, 0, false, 0, false, 0},
      {100, 100, 3, 1, 20, 24, true, 0, false, 2},
      {49, 5, 2, 2, 8, 8, true, 0, true, 0},
      {7, 1, 1, 1, 5, 8, false, 0, false, 0},
      // more keys than one packed chunk (8192): the running max and sum carry over chunks
      {13, 16500, 2, 1, 16, 8, false, 0, false, 0},
      {30, 8200, 1, 1, 8, 8, true, 8180, true, 1},  // the first rows end inside the first chunk
  };
  for (const auto& c : cases) run_case(c);
  ops::simd::set_max_isa(saved);
}

// The fused bf16 kernel: several query and key blocks, ragged tails, causal blocks skipped, rows
// whose first key blocks are fully masked, GQA, Dv != D, odd dims and strides.
TEST_P(OpsAttentionTest, FusedBf16MatchesRoundedReference) {
  if (ops::simd::isa() != ops::simd::Isa::Avx512) GTEST_SKIP() << "no AVX-512 BF16 here; bf16 attention runs in f32";
  const Case cases[] = {
      {100, 1300, 2, 1, 32, 0, false, 0, false, 0},  // 3 key blocks of 448, ragged last block and query block
      {60, 1025, 2, 2, 64, 0, false, 0, false, 0},   // InternViT's keys: 2 blocks of 544, above the nominal 512
      {20, 730, 1, 1, 16, 0, false, 0, true, 0},     // 23 panels: one block of 736 keys
      {130, 130, 4, 2, 17, 9, true, 0, false, 3},    // causal prefill, odd D, Dv != D, strides
      {50, 600, 2, 2, 64, 40, true, 550, true, 1},   // causal after cached keys, mask
      {5, 3, 1, 1, 8, 0, false, 0, true, 0},         // fewer keys than a panel
      {60, 300, 1, 1, 256, 0, false, 0, false, 0},   // SAM2 memory attention head size
      {64, 64, 2, 2, 72, 0, false, 0, false, 0},     // a Hiera window (head size 72: pairs padded for AMX)
      {16, 16, 2, 2, 144, 0, false, 0, true, 0},     // a 4x4 Hiera window: one 32-key block, half padding
  };
  // On AMX tiles where the CPU has them, and on vdpbf16ps.
  const bool saved_amx = ops::simd::set_amx_enabled(true);
  const bool has_amx = ops::simd::amx();
  for (bool tiles : {true, false}) {
    if (!tiles && !has_amx) break;
    ops::simd::set_amx_enabled(tiles);
    for (const auto& c : cases) run_case(c, true);
  }
  ops::simd::set_amx_enabled(saved_amx);
}

// A query whose whole first key block (448 of 1300 keys) is masked out (-inf) still gets the right mix of the rest.
TEST_P(OpsAttentionTest, FusedBf16FullyMaskedLeadingBlock) {
  if (ops::simd::isa() != ops::simd::Isa::Avx512) GTEST_SKIP() << "no AVX-512 BF16 here";
  const int64_t Sq = 8, Sk = 1300, D = 16, masked = 700;
  const std::vector<float> q = random_vector(Sq * D, 5), k = random_vector(Sk * D, 6), v = random_vector(Sk * D, 7);
  std::vector<float> mask(static_cast<size_t>(Sq * Sk), 0.f);
  for (int64_t i = 0; i < Sq; ++i)
    for (int64_t j = 0; j < masked; ++j) mask[i * Sk + j] = -std::numeric_limits<float>::infinity();
  std::vector<float> fused(static_cast<size_t>(Sq * D)), reference(static_cast<size_t>(Sq * D));
  ops::AttentionArgs a;
  a.q = q.data(), a.k = k.data(), a.v = v.data(), a.q_stride = a.k_stride = a.v_stride = a.out_stride = D;
  a.q_len = Sq, a.kv_len = Sk, a.head_dim = D, a.scale = 0.25f, a.mask = mask.data();
  a.out = reference.data();
  ops::attention(a);
  a.out = fused.data(), a.bf16_operands = true;
  ops::attention(a);
  for (size_t i = 0; i < fused.size(); ++i) ASSERT_NEAR(fused[i], reference[i], 1e-2) << i;
}

// The same on AVX2's fused f32 kernel (blocks of 128 keys, chunks of 8192): the rows see nothing
// in their first five blocks, then the rest, against a double-precision reference.
TEST_P(OpsAttentionTest, FusedF32FullyMaskedLeadingBlocks) {
  const ops::simd::Isa saved = ops::simd::set_max_isa(ops::simd::Isa::Avx2);
  if (ops::simd::isa() != ops::simd::Isa::Avx2) {
    ops::simd::set_max_isa(saved);
    GTEST_SKIP() << "this CPU lacks AVX2";
  }
  const int64_t Sq = 8, Sk = 1300, D = 16, masked = 700;
  const std::vector<float> q = random_vector(Sq * D, 5), k = random_vector(Sk * D, 6), v = random_vector(Sk * D, 7);
  std::vector<float> mask(static_cast<size_t>(Sq * Sk), 0.f);
  for (int64_t i = 0; i < Sq; ++i)
    for (int64_t j = 0; j < masked + 37 * i; ++j) mask[i * Sk + j] = -std::numeric_limits<float>::infinity();
  std::vector<float> out(static_cast<size_t>(Sq * D));
  ops::AttentionArgs a;
  a.q = q.data(), a.k = k.data(), a.v = v.data(), a.out = out.data();
  a.q_stride = a.k_stride = a.v_stride = a.out_stride = D;
  a.q_len = Sq, a.kv_len = Sk, a.head_dim = D, a.scale = 0.25f, a.mask = mask.data();
  ops::attention(a);
  ops::simd::set_max_isa(saved);
  for (int64_t i = 0; i < Sq; ++i) {
    std::vector<double> p(static_cast<size_t>(Sk), 0.0);
    double top = -INFINITY, sum = 0;
    for (int64_t j = masked + 37 * i; j < Sk; ++j) {
      for (int64_t e = 0; e < D; ++e) p[j] += static_cast<double>(q[i * D + e]) * k[j * D + e] * 0.25;
      top = std::max(top, p[j]);
    }
    for (int64_t j = masked + 37 * i; j < Sk; ++j) sum += (p[j] = std::exp(p[j] - top));
    for (int64_t e = 0; e < D; ++e) {
      double o = 0;
      for (int64_t j = masked + 37 * i; j < Sk; ++j) o += p[j] / sum * v[j * D + e];
      ASSERT_NEAR(out[i * D + e], o, 1e-5) << "row " << i << " column " << e;
    }
  }
}

TEST_P(OpsAttentionTest, RejectsBadHeads) {
  std::vector<float> buf(64);
  ops::AttentionArgs a;
  a.q = a.k = a.v = buf.data();
  a.out = buf.data();
  a.q_len = a.kv_len = 2, a.q_heads = 3, a.kv_heads = 2, a.head_dim = 2;
  a.q_stride = 6, a.k_stride = 4, a.v_stride = 4, a.out_stride = 6;
  EXPECT_THROW(ops::attention(a), Error);
  a.q_heads = 2, a.q_stride = 1;
  EXPECT_THROW(ops::attention(a), Error);
}

INSTANTIATE_TEST_SUITE_P(Ops, OpsAttentionTest, ::testing::Values(1, 2));

}  // namespace
}  // namespace sa2va
