// Scaled dot-product attention. Long queries: per head and block of query rows, scores by sgemm,
// masked stable softmax, then sgemm with V. Short queries (decode): one task per (query, head),
// dot products and axpy over the visible keys.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/error.h"
#include "core/threadpool.h"
#include "ops/ops.h"
#include "ops/simd.h"

namespace sa2va::ops {
namespace {

constexpr int64_t kShortQuery = 4;             // up to this many queries use the per-row path
constexpr int64_t kScoreBudget = int64_t{1} << 20;  // floats in one block of scores (4 MiB)

// Adds the mask, applies the causal limit (keys >= visible get probability 0) and normalises.
void softmax_row(float* s, const float* mask_row, int64_t visible, int64_t total) {
  if (mask_row)
    for (int64_t j = 0; j < visible; ++j) s[j] += mask_row[j];
  simd::softmax_inplace(s, visible, total);
}

void attention_short(const AttentionArgs& a, int64_t Dv) {
  const int64_t n_rep = a.q_heads / a.kv_heads;
  parallel_for(a.q_len * a.q_heads, [&](int64_t t0, int64_t t1) {
    std::vector<float> scores(static_cast<size_t>(a.kv_len));
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t i = t / a.q_heads, h = t % a.q_heads, hk = h / n_rep;
      const int64_t visible = a.causal ? std::clamp<int64_t>(a.q_offset + i + 1, 0, a.kv_len) : a.kv_len;
      const float* q = a.q + i * a.q_stride + h * a.head_dim;
      for (int64_t j = 0; j < visible; ++j)
        scores[j] = a.scale * simd::dot(q, a.k + j * a.k_stride + hk * a.head_dim, a.head_dim);
      softmax_row(scores.data(), a.mask ? a.mask + i * a.kv_len : nullptr, visible, visible);
      float* out = a.out + i * a.out_stride + h * Dv;
      std::fill(out, out + Dv, 0.f);
      for (int64_t j = 0; j < visible; ++j) simd::axpy(scores[j], a.v + j * a.v_stride + hk * Dv, out, Dv);
    }
  });
}

void attention_blocked(const AttentionArgs& a, int64_t Dv) {
  const int64_t n_rep = a.q_heads / a.kv_heads;
  const int64_t block = std::clamp<int64_t>(kScoreBudget / a.kv_len, 16, 512);
  std::vector<float> scores(static_cast<size_t>(std::min(block, a.q_len) * a.kv_len));
  for (int64_t h = 0; h < a.q_heads; ++h) {
    const int64_t hk = h / n_rep;
    for (int64_t i0 = 0; i0 < a.q_len; i0 += block) {
      const int64_t rows = std::min(block, a.q_len - i0);
      // Keys any row of this block may see; rows see a prefix of them when causal.
      const int64_t keys = a.causal ? std::clamp<int64_t>(a.q_offset + i0 + rows, 0, a.kv_len) : a.kv_len;
      float* out = a.out + i0 * a.out_stride + h * Dv;
      if (keys == 0) {
        for (int64_t r = 0; r < rows; ++r) std::fill(out + r * a.out_stride, out + r * a.out_stride + Dv, 0.f);
        continue;
      }
      gemm(a.q + i0 * a.q_stride + h * a.head_dim, a.q_stride, a.k + hk * a.head_dim, a.k_stride, scores.data(),
           keys, rows, keys, a.head_dim, /*transpose_b=*/true, a.scale);
      parallel_for(rows, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          const int64_t i = i0 + r;
          const int64_t visible = a.causal ? std::clamp<int64_t>(a.q_offset + i + 1, 0, keys) : keys;
          softmax_row(scores.data() + r * keys, a.mask ? a.mask + i * a.kv_len : nullptr, visible, keys);
        }
      }, 8);
      gemm(scores.data(), keys, a.v + hk * Dv, a.v_stride, out, a.out_stride, rows, Dv, keys, /*transpose_b=*/false);
    }
  }
}

}  // namespace

void attention(const AttentionArgs& a) {
  const int64_t Dv = a.v_head_dim > 0 ? a.v_head_dim : a.head_dim;
  check(a.q && a.k && a.v && a.out, "attention: null q/k/v/out");
  check(a.q_len >= 0 && a.kv_len >= 0 && a.head_dim > 0 && a.q_heads > 0 && a.kv_heads > 0 &&
            a.q_heads % a.kv_heads == 0 && a.q_offset >= 0,
        "attention: invalid sizes (heads must divide, lengths non-negative)");
  check(a.q_stride >= a.q_heads * a.head_dim && a.k_stride >= a.kv_heads * a.head_dim &&
            a.v_stride >= a.kv_heads * Dv && a.out_stride >= a.q_heads * Dv,
        "attention: a row stride is smaller than heads x head_dim");
  if (a.q_len == 0) return;
  if (a.q_len <= kShortQuery || a.kv_len == 0) {
    attention_short(a, Dv);
  } else {
    attention_blocked(a, Dv);
  }
}

}  // namespace sa2va::ops
