#include "models/common/blocks.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace sa2va {

FeedForward FeedForward::load(Weights& w, const std::string& fc1, const std::string& fc2, int64_t in, int64_t hidden,
                              int64_t out, Activation activation, MatrixUse use) {
  FeedForward f;
  f.activation = activation;
  f.fc1 = w.matrix(fc1 + "weight", {hidden, in}, Init::Linear, use);
  f.fc1_bias = w.f32(fc1 + "bias", {hidden}, Init::Bias);
  f.fc2 = w.matrix(fc2 + "weight", {out, hidden}, Init::Linear, use);
  f.fc2_bias = w.f32(fc2 + "bias", {out}, Init::Bias);
  return f;
}

namespace {
// Chunks of rows are whole multiples of this (the CPU GEMM's row tiles of 12, AMX's 16), so that only
// the last chunk may end in a partial tile: 1025 rows go as 288 + 288 + 288 + 161, not in chunks
// whose every end is a tile of one or a few rows that costs as much as a whole one.
constexpr int64_t kChunkRowUnit = 48;
}  // namespace

int64_t FeedForward::scratch_rows(int64_t rows) const {
  // Weights in the bf16 GEMM's panels (AVX-512 BF16 or AVX2): chunks whose hidden layer (4 MB, at
  // least 288 rows) stays in cache from fc1 to fc2 (the fused MLP of ops::feed_forward, or the two
  // products reading the panels in place on AMX and AVX2: 1.02-1.05x over whole rows there).
  // Elsewhere (f32 mode, the scalar fallback's sgemm on panels widened at every call, a GPU) each
  // chunk is two products of their own, which run faster on more rows and widen or read their weights
  // once per call: whole rows, up to a 32 MB hidden layer (bench/README.md).
  const bool in_panels = fc1.in_panels() && fc2.in_panels();
  const int64_t budget_floats = in_panels ? int64_t{1} << 20 : int64_t{1} << 23;
  const int64_t min_rows = in_panels ? 6 * kChunkRowUnit : kChunkRowUnit;
  const int64_t most = std::max(min_rows, budget_floats / std::max<int64_t>(hidden_features(), 1));
  return std::min(rows, most / kChunkRowUnit * kChunkRowUnit);
}

void FeedForward::forward(const float* x, int64_t rows, float* hidden, float* y) const {
  const int64_t in = in_features(), out = out_features();
  const int64_t most = std::max<int64_t>(scratch_rows(rows), 1), chunks = (rows + most - 1) / most;
  const int64_t even = (rows + chunks - 1) / std::max<int64_t>(chunks, 1);
  const int64_t chunk = std::min(most, (even + kChunkRowUnit - 1) / kChunkRowUnit * kChunkRowUnit);
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {  // y may be x: a chunk reads its own rows before writing them
    const int64_t n = std::min(chunk, rows - r0);
    ops::feed_forward(x + r0 * in, n, fc1, fc1_bias.kernel_f32(), activation, hidden, fc2, fc2_bias.kernel_f32(),
                      y + r0 * out);
  }
}

Tensor FeedForward::forward(const Tensor& x) const {
  Tensor hidden = ops::linear(x, fc1, fc1_bias);
  ops::activate(activation, hidden.kernel_f32(), hidden.numel());
  return ops::linear(hidden, fc2, fc2_bias);
}

MultiHeadAttention MultiHeadAttention::configure(const Weights& w, int64_t heads, int64_t head_dim, int64_t kv_heads) {
  check(heads > 0 && head_dim > 0 && kv_heads >= 0 && (kv_heads == 0 || heads % kv_heads == 0),
        "attention: " + std::to_string(heads) + " heads of width " + std::to_string(head_dim) + " with " +
            std::to_string(kv_heads) + " key/value heads is not a valid layout");
  MultiHeadAttention a;
  a.heads = heads;
  a.kv_heads = kv_heads > 0 ? kv_heads : heads;
  a.head_dim = head_dim;
  a.bf16_operands = w.precision() == Precision::BF16;
  return a;
}

ops::AttentionArgs MultiHeadAttention::args(Rows q, Rows k, Rows v, float* out, int64_t out_stride, int64_t q_len,
                                            int64_t kv_len) const {
  ops::AttentionArgs a;
  a.q = q.data;
  a.q_stride = q.stride;
  a.k = k.data;
  a.k_stride = k.stride;
  a.v = v.data;
  a.v_stride = v.stride;
  a.out = out;
  a.out_stride = out_stride;
  a.q_len = q_len;
  a.kv_len = kv_len;
  a.q_heads = heads;
  a.kv_heads = kv_heads;
  a.head_dim = head_dim;
  a.scale = 1.f / std::sqrt(static_cast<float>(head_dim));
  a.bf16_operands = bf16_operands;
  return a;
}

}  // namespace sa2va
