#include "models/common/blocks.h"

#include <cmath>

#include "core/error.h"

namespace sa2va {

void activate(Activation activation, float* x, int64_t n) {
  switch (activation) {
    case Activation::Relu: ops::relu(x, n); return;
    case Activation::GeluErf: ops::gelu_erf(x, n); return;
  }
}

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

void FeedForward::forward(const float* x, int64_t rows, float* hidden, float* y) const {
  ops::linear(x, rows, in_features(), fc1, fc1_bias.kernel_f32(), hidden);
  activate(activation, hidden, rows * hidden_features());
  ops::linear(hidden, rows, hidden_features(), fc2, fc2_bias.kernel_f32(), y);
}

Tensor FeedForward::forward(const Tensor& x) const {
  Tensor hidden = ops::linear(x, fc1, fc1_bias);
  activate(activation, hidden.kernel_f32(), hidden.numel());
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
