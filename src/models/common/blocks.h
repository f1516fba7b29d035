// Building blocks shared by InternViT, the language model and SAM2 where the math is the same:
// one attention setup, one feed-forward block. Weights are prepared at load (ops/weight_matrix.h);
// the compute precision comes from the load policy.
#pragma once
#include <cstdint>
#include <string>

#include "core/tensor.h"
#include "io/weights.h"
#include "ops/ops.h"
#include "ops/weight_matrix.h"

namespace sa2va {

using ops::Activation;  // Relu or GeluErf after fc1

// Linear -> activation -> Linear: the MLPs of InternViT layers, mlp1, Hiera blocks, SAM2's
// two-way transformer and memory attention, and text_hidden_fcs.
struct FeedForward {
  WeightMatrix fc1, fc2;
  Tensor fc1_bias, fc2_bias;  // F32
  Activation activation = Activation::GeluErf;

  // Binds `<fc1>weight`, `<fc1>bias`, `<fc2>weight`, `<fc2>bias` (in that order) for
  // in -> hidden -> out.
  static FeedForward load(Weights& w, const std::string& fc1, const std::string& fc2, int64_t in, int64_t hidden,
                          int64_t out, Activation activation, MatrixUse use = MatrixUse::General);
  int64_t in_features() const { return fc1.cols(); }
  int64_t hidden_features() const { return fc1.rows(); }
  int64_t out_features() const { return fc2.rows(); }

  // x [rows, in] -> y [rows, out] (y may be x), using `hidden` [scratch_rows(rows), hidden_features()]
  // as scratch. With the weights in the bf16 GEMM's panels (AVX-512 BF16 or AVX2) the rows go in
  // chunks whose hidden layer (about 4 MB, at least 288 rows, a multiple of 48) stays in cache from
  // fc1 to fc2, instead of going out to memory and back; otherwise in chunks of up to 32 MB of hidden
  // layer (whole, for every model here).
  void forward(const float* x, int64_t rows, float* hidden, float* y) const;
  int64_t scratch_rows(int64_t rows) const;
  Tensor forward(const Tensor& x) const;  // F32 [..., in] -> [..., out]
};

// Multi-head scaled dot-product attention as every component sets it up: `heads` query heads and
// `kv_heads` key/value heads (grouped-query when fewer), each `head_dim` wide and side by side in
// a token's row; scale 1/√head_dim; q, k, v and probabilities rounded to bf16 in the bf16 compute
// precision (as upstream runs attention in bf16), f32 otherwise.
struct MultiHeadAttention {
  int64_t heads = 1, kv_heads = 1, head_dim = 0;
  bool bf16_operands = false;

  // kv_heads 0 = heads. The precision comes from the weights' load policy.
  static MultiHeadAttention configure(const Weights& w, int64_t heads, int64_t head_dim, int64_t kv_heads = 0);

  // Token rows: row t of a [tokens, heads·head_dim] block starts at data + t·stride.
  struct Rows {
    const float* data;
    int64_t stride;
  };
  // The op's arguments for q_len queries over kv_len keys (no mask, not causal): callers add
  // causality, offsets or batching to them.
  ops::AttentionArgs args(Rows q, Rows k, Rows v, float* out, int64_t out_stride, int64_t q_len,
                          int64_t kv_len) const;
  void run(Rows q, Rows k, Rows v, float* out, int64_t out_stride, int64_t q_len, int64_t kv_len) const {
    ops::attention(args(q, k, v, out, out_stride, q_len, kv_len));
  }
};

}  // namespace sa2va
