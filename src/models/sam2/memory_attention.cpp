#include "models/sam2/memory_attention.h"

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/profile.h"
#include "ops/ops.h"

namespace sa2va::sam2 {
namespace {

constexpr float kLayerNormEps = 1e-5f;  // nn.LayerNorm default
constexpr float kInputPosScale = 0.1f;  // pos_enc_at_input

RoPEAttentionWeights load_attention(Weights& w, const std::string& p, int64_t d, int64_t in) {
  RoPEAttentionWeights a;
  a.q_w = w.matrix(p + "q_proj.weight", {d, d});
  a.q_b = w.f32(p + "q_proj.bias", {d}, Init::Bias);
  a.k_w = w.matrix(p + "k_proj.weight", {d, in});
  a.k_b = w.f32(p + "k_proj.bias", {d}, Init::Bias);
  a.v_w = w.matrix(p + "v_proj.weight", {d, in});
  a.v_b = w.f32(p + "v_proj.bias", {d}, Init::Bias);
  a.out_w = w.matrix(p + "out_proj.weight", {d, d});
  a.out_b = w.f32(p + "out_proj.bias", {d}, Init::Bias);
  return a;
}

// [S, heads·hd] -> head-major [heads, S, hd] (x itself when there is one head).
Tensor head_major(const Tensor& x, int64_t heads) {
  if (heads == 1) return x;
  const int64_t S = x.size(0), d = x.size(1);
  return ops::transpose_01(x.view({S, heads, d / heads}));
}

}  // namespace

MemoryAttention MemoryAttention::load(Weights& w, const Sam2Config& c, const std::string& prefix) {
  check(c.hidden_dim > 0 && c.mem_attn_heads > 0 && c.hidden_dim % (4 * c.mem_attn_heads) == 0,
        "config.json: sam2_config memory attention head dim (hidden_dim / num_heads) must be a multiple of 4");
  check(c.mem_attn_kv_dim > 0 && c.mem_attn_ffn > 0, "config.json: sam2_config memory attention kv_in_dim and "
                                                     "dim_feedforward must be positive");
  MemoryAttention m;
  m.d_model = c.hidden_dim;
  m.kv_dim = c.mem_attn_kv_dim;
  m.heads = c.mem_attn_heads;
  m.ffn = c.mem_attn_ffn;
  m.rope_theta = c.mem_attn_rope_theta;
  m.attention = MultiHeadAttention::configure(w, 1, m.d_model / m.heads);
  const int64_t d = m.d_model, f = m.ffn;
  const std::string p = prefix + "memory_attention.";
  for (int i = 0; i < c.mem_attn_layers; ++i) {
    const std::string q = p + "layers." + std::to_string(i) + ".";
    MemoryAttentionLayer L;
    L.self_attn = load_attention(w, q + "self_attn.", d, d);
    L.cross_attn = load_attention(w, q + "cross_attn_image.", d, m.kv_dim);
    L.ffn = FeedForward::load(w, q + "linear1.", q + "linear2.", d, f, d, Activation::Relu);
    L.norm1_w = w.f32(q + "norm1.weight", {d}, Init::NormWeight);
    L.norm1_b = w.f32(q + "norm1.bias", {d}, Init::NormBias);
    L.norm2_w = w.f32(q + "norm2.weight", {d}, Init::NormWeight);
    L.norm2_b = w.f32(q + "norm2.bias", {d}, Init::NormBias);
    L.norm3_w = w.f32(q + "norm3.weight", {d}, Init::NormWeight);
    L.norm3_b = w.f32(q + "norm3.bias", {d}, Init::NormBias);
    m.layers.push_back(std::move(L));
  }
  m.norm_w = w.f32(p + "norm.weight", {d}, Init::NormWeight);
  m.norm_b = w.f32(p + "norm.bias", {d}, Init::NormBias);
  return m;
}

void MemoryAttention::attend(const RoPEAttentionWeights& a, const Tensor& q_in, const Tensor& k_in,
                             const Tensor& v_in, int64_t k_no_rope, int64_t h, int64_t w, float* out) const {
  const int64_t Sq = q_in.size(0), Sk = k_in.size(0), d = d_model, hd = d / heads, v_dim = v_in.size(1);
  const Tensor q = head_major(ops::linear(q_in, a.q_w, a.q_b), heads);
  const Tensor k = head_major(ops::linear(k_in, a.k_w, a.k_b), heads);
  // Each row of softmax weights sums to one, so with one head  Σ_j p_j (W_v v_j + b_v) = W_v (Σ_j p_j v_j) + b_v:
  // when the values come in fewer channels than the head (the memory's 64 against 256), the weighted
  // sum runs over the raw values and W_v is applied once per query instead of once per memory token.
  const bool project_after_sum = heads == 1 && v_dim < hd;
  const Tensor v = project_after_sum ? v_in.contiguous() : head_major(ops::linear(v_in, a.v_w, a.v_b), heads);
  const int64_t dv = project_after_sum ? v_dim : hd;
  Tensor attn = Tensor::empty({Sq, heads * dv}, DType::F32, q_in.device());
  for (int64_t head = 0; head < heads; ++head) {
    float* qh = q.kernel_f32() + head * Sq * hd;
    float* kh = k.kernel_f32() + head * Sk * hd;
    ops::rope_axial_2d(qh, Sq, hd, w, h, rope_theta, Sq);
    ops::rope_axial_2d(kh, Sk, hd, w, h, rope_theta, Sk - k_no_rope);
    // Heads are head-major here (RoPE rotates each head's rows): one single-head attention each.
    ops::AttentionArgs args = attention.args({qh, hd}, {kh, hd}, {v.kernel_f32() + head * Sk * dv, dv},
                                             attn.kernel_f32() + head * dv, heads * dv, Sq, Sk);
    args.v_head_dim = dv;
    ops::attention(args);
  }
  if (project_after_sum) attn = ops::linear(attn, a.v_w, a.v_b);
  ops::linear(attn.kernel_f32(), Sq, d, a.out_w, a.out_b.kernel_f32(), out);
}

Tensor MemoryAttention::forward(const Tensor& curr, const Tensor& curr_pos, const Tensor& memory,
                                const Tensor& memory_pos, int64_t num_ptr_tokens, int64_t h, int64_t w) const {
  const profile::Scope timed("sam2.memory_attention");
  const int64_t S = h * w, d = d_model;
  check(curr.defined() && curr.dtype() == DType::F32 && curr.dim() == 2 && curr.size(0) == S && curr.size(1) == d &&
            curr_pos.defined() && curr_pos.shape() == curr.shape(),
        "memory attention: current features must be F32 [" + std::to_string(S) + ", " + std::to_string(d) + "]");
  check(memory.defined() && memory.dtype() == DType::F32 && memory.dim() == 2 && memory.size(1) == kv_dim &&
            memory_pos.defined() && memory_pos.shape() == memory.shape(),
        "memory attention: memory must be F32 [M, " + std::to_string(kv_dim) + "] with a matching position encoding");
  const int64_t M = memory.size(0);
  check(num_ptr_tokens >= 0 && num_ptr_tokens <= M && (M - num_ptr_tokens) % S == 0,
        "memory attention: spatial memory tokens must be whole " + std::to_string(h) + "x" + std::to_string(w) + " maps");

  Tensor x = curr.contiguous().clone();
  {
    const Tensor pos = curr_pos.contiguous();
    ops::add_scaled(x.kernel_f32(), pos.kernel_f32(), kInputPosScale, S * d);
  }
  const Tensor mem = memory.contiguous();
  Tensor keys = mem.clone();
  {
    const Tensor pos = memory_pos.contiguous();
    ops::add(keys.kernel_f32(), pos.kernel_f32(), keys.kernel_f32(), keys.numel());
  }

  Tensor y = Tensor::empty({S, d}, DType::F32, curr.device());
  Tensor branch = Tensor::empty({S, d}, DType::F32, curr.device());
  const int64_t ffn_rows = layers.empty() ? 0 : layers[0].ffn.scratch_rows(S);
  Tensor hidden = Tensor::empty({ffn_rows, ffn}, DType::F32, curr.device());
  for (const MemoryAttentionLayer& L : layers) {
    ops::layer_norm(x.kernel_f32(), L.norm1_w.kernel_f32(), L.norm1_b.kernel_f32(), y.kernel_f32(), S, d, kLayerNormEps);
    {
      const profile::Scope timed_self("sam2.memory_attention.self");
      attend(L.self_attn, y, y, y, 0, h, w, branch.kernel_f32());
    }
    ops::add(x.kernel_f32(), branch.kernel_f32(), x.kernel_f32(), S * d);

    ops::layer_norm(x.kernel_f32(), L.norm2_w.kernel_f32(), L.norm2_b.kernel_f32(), y.kernel_f32(), S, d, kLayerNormEps);
    {
      const profile::Scope timed_cross("sam2.memory_attention.cross");
      attend(L.cross_attn, y, keys, mem, num_ptr_tokens, h, w, branch.kernel_f32());
    }
    ops::add(x.kernel_f32(), branch.kernel_f32(), x.kernel_f32(), S * d);

    ops::layer_norm(x.kernel_f32(), L.norm3_w.kernel_f32(), L.norm3_b.kernel_f32(), y.kernel_f32(), S, d, kLayerNormEps);
    {
      const profile::Scope timed_ffn("sam2.memory_attention.ffn");
      L.ffn.forward(y.kernel_f32(), S, hidden.kernel_f32(), branch.kernel_f32());
    }
    ops::add(x.kernel_f32(), branch.kernel_f32(), x.kernel_f32(), S * d);
  }
  Tensor out = Tensor::empty({S, d}, DType::F32, curr.device());
  ops::layer_norm(x.kernel_f32(), norm_w.kernel_f32(), norm_b.kernel_f32(), out.kernel_f32(), S, d, kLayerNormEps);
  return out;
}

}  // namespace sa2va::sam2
