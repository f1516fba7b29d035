#include "train/decoder_layer.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "ops/ops.h"
#include "train/backward.h"

namespace sa2va::train {
namespace {

Tensor rms_norm(const Tensor& x, const Tensor& weight, float eps) {
  Tensor y = Tensor::empty(x.shape());
  ops::rms_norm(x.f32(), weight.contiguous().f32(), y.f32(), x.size(0), x.size(1), eps);
  return y;
}

ops::AttentionArgs attention_args(const DecoderLayerWeights& w, int64_t n) {
  ops::AttentionArgs a;
  a.q_len = a.kv_len = n;
  a.q_heads = w.heads;
  a.kv_heads = w.kv_heads;
  a.head_dim = w.head_dim;
  a.q_stride = w.heads * w.head_dim;
  a.k_stride = a.v_stride = w.kv_heads * w.head_dim;
  a.scale = 1.0f / std::sqrt(static_cast<float>(w.head_dim));
  a.causal = true;
  return a;
}

Tensor sum(const Tensor& a, const Tensor& b) {
  Tensor y = Tensor::empty(a.shape());
  ops::add(a.f32(), b.f32(), y.f32(), a.numel());
  return y;
}

}  // namespace

Tensor decoder_layer_forward(const DecoderLayerWeights& w, const Tensor& x_in, const std::vector<int64_t>& positions,
                             DecoderLayerSaved* saved) {
  check(x_in.defined() && x_in.dim() == 2 && x_in.dtype() == DType::F32 && x_in.size(1) == w.input_norm.numel(),
        "decoder layer: hidden states must be F32 [N, " + std::to_string(w.input_norm.numel()) + "]");
  const Tensor x = x_in.contiguous();
  const int64_t n = x.size(0);
  check(static_cast<int64_t>(positions.size()) == n, "decoder layer: one position per token is needed");
  DecoderLayerSaved s;
  s.x = x;
  s.n1 = rms_norm(x, w.input_norm, w.rms_eps);
  const int64_t q_dim = w.heads * w.head_dim, kv_dim = w.kv_heads * w.head_dim;
  if (w.fused_qkv) {
    const Tensor qkv = lora_forward(w.qkv, s.n1, &s.qkv);
    s.q_rot = qkv.slice(1, 0, q_dim).contiguous();
    s.k_rot = qkv.slice(1, q_dim, q_dim + kv_dim).contiguous();
    s.v = qkv.slice(1, q_dim + kv_dim, q_dim + 2 * kv_dim).contiguous();
  } else {
    s.q_rot = lora_forward(w.q, s.n1, &s.q);
    s.k_rot = lora_forward(w.k, s.n1, &s.k);
    s.v = lora_forward(w.v, s.n1, &s.v_in);
  }
  ops::rope_rotate_half(s.q_rot.f32(), n, w.heads, w.head_dim, w.heads * w.head_dim, positions.data(), w.rope_theta);
  ops::rope_rotate_half(s.k_rot.f32(), n, w.kv_heads, w.head_dim, w.kv_heads * w.head_dim, positions.data(),
                        w.rope_theta);
  s.attn = Tensor::empty({n, w.heads * w.head_dim});
  ops::AttentionArgs a = attention_args(w, n);
  a.q = s.q_rot.f32();
  a.k = s.k_rot.f32();
  a.v = s.v.f32();
  a.out = s.attn.f32();
  a.out_stride = w.heads * w.head_dim;
  ops::attention(a);
  s.h = sum(x, lora_forward(w.o, s.attn, &s.o));
  s.n2 = rms_norm(s.h, w.post_norm, w.rms_eps);
  s.gate = lora_forward(w.gate, s.n2, &s.gate_in);
  s.up = lora_forward(w.up, s.n2, &s.up_in);
  s.act = s.gate.clone();
  ops::silu_mul(s.act.f32(), s.up.f32(), s.act.numel());
  Tensor y = sum(s.h, lora_forward(w.down, s.act, &s.down));
  if (saved) *saved = std::move(s);
  return y;
}

DecoderLayerGrads decoder_layer_backward(const DecoderLayerWeights& w, const DecoderLayerSaved& s,
                                         const std::vector<int64_t>& positions, const Tensor& dy_in) {
  const Tensor dy = dy_in.contiguous();
  const int64_t n = s.x.size(0);
  DecoderLayerGrads g;
  // MLP branch: y = h + down(silu(gate(n2))·up(n2)), n2 = rms_norm(h).
  LoraGrads down = lora_backward(w.down, s.down, dy);
  Tensor dgate, dup;
  silu_mul_backward(s.gate, s.up, down.dx, dgate, dup);
  LoraGrads gate = lora_backward(w.gate, s.gate_in, dgate);
  LoraGrads up = lora_backward(w.up, s.up_in, dup);
  const Tensor dh = sum(dy, rms_norm_backward(s.h, w.post_norm, w.rms_eps, sum(gate.dx, up.dx)).dx);
  // Attention branch: h = x + o(attention(rope(q(n1)), rope(k(n1)), v(n1))), n1 = rms_norm(x).
  LoraGrads o = lora_backward(w.o, s.o, dh);
  Tensor dq = Tensor::empty(s.q_rot.shape()), dk = Tensor::empty(s.k_rot.shape()), dv = Tensor::empty(s.v.shape());
  ops::AttentionArgs a = attention_args(w, n);
  a.q = s.q_rot.f32();
  a.k = s.k_rot.f32();
  a.v = s.v.f32();
  attention_backward(a, o.dx.f32(), w.heads * w.head_dim, {dq.f32(), dk.f32(), dv.f32()});
  rope_rotate_half_backward(dq.f32(), n, w.heads, w.head_dim, w.heads * w.head_dim, positions.data(), w.rope_theta);
  rope_rotate_half_backward(dk.f32(), n, w.kv_heads, w.head_dim, w.kv_heads * w.head_dim, positions.data(),
                            w.rope_theta);
  Tensor dn1;
  if (w.fused_qkv) {
    const int64_t q_dim = dq.size(1), kv_dim = dk.size(1), width = q_dim + 2 * kv_dim;
    Tensor dqkv = Tensor::empty({n, width});
    for (int64_t t = 0; t < n; ++t) {
      float* row = dqkv.f32() + t * width;
      std::copy_n(dq.f32() + t * q_dim, q_dim, row);
      std::copy_n(dk.f32() + t * kv_dim, kv_dim, row + q_dim);
      std::copy_n(dv.f32() + t * kv_dim, kv_dim, row + q_dim + kv_dim);
    }
    LoraGrads qkv = lora_backward(w.qkv, s.qkv, dqkv);
    dn1 = qkv.dx;
    g.lora[w.names.qkv] = std::move(qkv);
  } else {
    LoraGrads q = lora_backward(w.q, s.q, dq);
    LoraGrads k = lora_backward(w.k, s.k, dk);
    LoraGrads v = lora_backward(w.v, s.v_in, dv);
    dn1 = sum(sum(q.dx, k.dx), v.dx);
    g.lora[w.names.q] = std::move(q);
    g.lora[w.names.k] = std::move(k);
    g.lora[w.names.v] = std::move(v);
  }
  g.dx = sum(dh, rms_norm_backward(s.x, w.input_norm, w.rms_eps, dn1).dx);
  g.lora[w.names.o] = std::move(o);
  g.lora[w.names.gate] = std::move(gate);
  g.lora[w.names.up] = std::move(up);
  g.lora[w.names.down] = std::move(down);
  return g;
}

}  // namespace sa2va::train
