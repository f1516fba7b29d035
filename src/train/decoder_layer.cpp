#include "train/decoder_layer.h"

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
  s.q_rot = lora_forward(w.q, s.n1, &s.q);
  s.k_rot = lora_forward(w.k, s.n1, &s.k);
  s.v = lora_forward(w.v, s.n1, &s.v_in);
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
  LoraGrads q = lora_backward(w.q, s.q, dq);
  LoraGrads k = lora_backward(w.k, s.k, dk);
  LoraGrads v = lora_backward(w.v, s.v_in, dv);
  const Tensor dn1 = sum(sum(q.dx, k.dx), v.dx);
  g.dx = sum(dh, rms_norm_backward(s.x, w.input_norm, w.rms_eps, dn1).dx);
  g.lora["q_proj"] = std::move(q);
  g.lora["k_proj"] = std::move(k);
  g.lora["v_proj"] = std::move(v);
  g.lora["o_proj"] = std::move(o);
  g.lora["gate_proj"] = std::move(gate);
  g.lora["up_proj"] = std::move(up);
  g.lora["down_proj"] = std::move(down);
  return g;
}

}  // namespace sa2va::train
