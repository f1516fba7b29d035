// ops::attention against a double-precision softmax(QKᵀ·scale + mask)·V, for both code paths
// (short decode queries and blocked long queries), causal with offsets, GQA, masks and strides.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "core/error.h"
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

void run_case(const Case& c) {
  SCOPED_TRACE(::testing::Message() << "Sq=" << c.q_len << " Sk=" << c.kv_len << " H=" << c.q_heads << "/"
                                    << c.kv_heads << " D=" << c.head_dim << "/" << c.v_head_dim
                                    << " causal=" << c.causal << " off=" << c.q_offset << " mask=" << c.with_mask);
  const int64_t Dv = c.v_head_dim ? c.v_head_dim : c.head_dim;
  const int64_t qs = c.q_heads * c.head_dim + c.pad, ks = c.kv_heads * c.head_dim + c.pad,
                vs = c.kv_heads * Dv + c.pad, os = c.q_heads * Dv + c.pad;
  const std::vector<float> q = random_vector(c.q_len * qs, 1, -2.f, 2.f), k = random_vector(c.kv_len * ks, 2, -2.f, 2.f),
                           v = random_vector(c.kv_len * vs, 3);
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
          d += static_cast<double>(q[i * qs + h * c.head_dim + e]) * k[j * ks + hk * c.head_dim + e];
        s[j] = d * scale + (c.with_mask ? mask[i * c.kv_len + j] : 0.0);
        mx = std::max(mx, s[j]);
      }
      double sum = 0;
      for (auto& x : s) sum += (x = std::isinf(mx) ? 0 : std::exp(x - mx));
      for (int64_t e = 0; e < Dv; ++e) {
        double o = 0;
        for (int64_t j = 0; j < c.kv_len; ++j) o += s[j] / (sum > 0 ? sum : 1) * v[j * vs + hk * Dv + e];
        ASSERT_NEAR(out[i * os + h * Dv + e], o, 2e-5) << "i=" << i << " h=" << h << " e=" << e;
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
