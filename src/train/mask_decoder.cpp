#include "train/mask_decoder.h"

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "ops/ops.h"
#include "ops/weight_matrix.h"
#include "train/backward.h"

namespace sa2va::train {
namespace {

constexpr float kTokenNormEps = 1e-5f;    // nn.LayerNorm default in the two-way transformer
constexpr float kLayerNorm2dEps = 1e-6f;  // SAM2 LayerNorm2d

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor y = Tensor::empty(a.shape());
  ops::add(a.f32(), b.f32(), y.f32(), a.numel());
  return y;
}

Tensor layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, float eps) {
  Tensor y = Tensor::empty(x.shape());
  ops::layer_norm(x.f32(), w.f32(), b.f32(), y.f32(), x.size(0), x.size(1), eps);
  return y;
}

// ---- attention ----------------------------------------------------------------------------
struct AttentionSaved {
  Tensor q_in, k_in, v_in, qp, kp, vp, o;
};

ops::AttentionArgs attention_args(const TrainableMaskDecoder::Attention& a, int64_t nq, int64_t nk) {
  ops::AttentionArgs args;
  args.q_len = nq;
  args.kv_len = nk;
  args.q_heads = args.kv_heads = a.heads;
  args.head_dim = a.internal / a.heads;
  args.q_stride = args.k_stride = args.v_stride = args.out_stride = a.internal;
  args.scale = 1.0f / std::sqrt(static_cast<float>(args.head_dim));
  return args;
}

Tensor attention_forward(const TrainableMaskDecoder::Attention& a, const Tensor& q, const Tensor& k, const Tensor& v,
                         AttentionSaved& s) {
  s.q_in = q, s.k_in = k, s.v_in = v;
  s.qp = linear_forward(q, a.q_w, a.q_b);
  s.kp = linear_forward(k, a.k_w, a.k_b);
  s.vp = linear_forward(v, a.v_w, a.v_b);
  s.o = Tensor::empty({q.size(0), a.internal});
  ops::AttentionArgs args = attention_args(a, q.size(0), k.size(0));
  args.q = s.qp.f32(), args.k = s.kp.f32(), args.v = s.vp.f32(), args.out = s.o.f32();
  ops::attention(args);
  return linear_forward(s.o, a.out_w, a.out_b);
}

struct AttentionInputGrads {
  Tensor dq, dk, dv;
};
AttentionInputGrads attention_backward_all(const TrainableMaskDecoder::Attention& a, const AttentionSaved& s,
                                           const Tensor& dy, const std::string& name,
                                           std::map<std::string, Tensor>& grads) {
  const LinearGrads out = linear_backward(s.o, a.out_w, true, dy.contiguous());
  accumulate(grads, name + "out_proj.weight", out.dw);
  accumulate(grads, name + "out_proj.bias", out.db);
  Tensor dqp = Tensor::empty(s.qp.shape()), dkp = Tensor::empty(s.kp.shape()), dvp = Tensor::empty(s.vp.shape());
  ops::AttentionArgs args = attention_args(a, s.qp.size(0), s.kp.size(0));
  args.q = s.qp.f32(), args.k = s.kp.f32(), args.v = s.vp.f32();
  attention_backward(args, out.dx.f32(), a.internal, {dqp.f32(), dkp.f32(), dvp.f32()});
  const LinearGrads q = linear_backward(s.q_in.contiguous(), a.q_w, true, dqp);
  const LinearGrads k = linear_backward(s.k_in.contiguous(), a.k_w, true, dkp);
  const LinearGrads v = linear_backward(s.v_in.contiguous(), a.v_w, true, dvp);
  accumulate(grads, name + "q_proj.weight", q.dw);
  accumulate(grads, name + "q_proj.bias", q.db);
  accumulate(grads, name + "k_proj.weight", k.dw);
  accumulate(grads, name + "k_proj.bias", k.db);
  accumulate(grads, name + "v_proj.weight", v.dw);
  accumulate(grads, name + "v_proj.bias", v.db);
  return {q.dx, k.dx, v.dx};
}

// ---- 2x2 stride-2 transposed convolution, channel-first -------------------------------------
// out[co, 2i+a, 2j+b] = bias[co] + Σ_ci x[ci, i, j]·W[ci, co, a, b].
Tensor weight_tap(const Tensor& w, int64_t a, int64_t b) {  // W[:, :, a, b] as [Cin, Cout]
  const int64_t cin = w.size(0), cout = w.size(1);
  Tensor t = Tensor::empty({cin, cout});
  const float* src = w.f32();
  float* dst = t.f32();
  for (int64_t i = 0; i < cin; ++i)
    for (int64_t o = 0; o < cout; ++o) dst[i * cout + o] = src[((i * cout + o) * 2 + a) * 2 + b];
  return t;
}

// The inference op, on the weight as it stands (it changes with every optimiser step).
Tensor conv_transpose(const Tensor& x, const Tensor& w, const Tensor& bias) {
  return ops::conv_transpose_2x2(x.contiguous(), ConvWeight::prepare_transposed_2x2(w), bias);
}

struct ConvGrads {
  Tensor dx, dw, db;
};
ConvGrads conv_transpose_backward(const Tensor& x, const Tensor& w, const Tensor& dy) {
  const int64_t cin = x.size(0), h = x.size(1), wd = x.size(2), cout = w.size(1);
  ConvGrads g{Tensor::zeros(x.shape()), Tensor::zeros(w.shape()), Tensor::zeros({cout})};
  Tensor dtap = Tensor::empty({cout, h * wd});
  Tensor dw_tap = Tensor::empty({cin, cout});
  for (int64_t a = 0; a < 2; ++a)
    for (int64_t b = 0; b < 2; ++b) {
      const float* src = dy.f32();
      float* dst = dtap.f32();
      float* db = g.db.f32();
      for (int64_t o = 0; o < cout; ++o)
        for (int64_t i = 0; i < h; ++i)
          for (int64_t j = 0; j < wd; ++j) {
            const float v = src[(o * 2 * h + 2 * i + a) * 2 * wd + 2 * j + b];
            dst[(o * h + i) * wd + j] = v;
            db[o] += v;
          }
      // dx += W_ab·dtap ([Cin, Cout]·[Cout, HW]); dW_ab = x·dtapᵀ ([Cin, HW]·[HW, Cout]).
      const Tensor tap = weight_tap(w, a, b);
      ops::gemm(tap.f32(), cout, dtap.f32(), h * wd, g.dx.f32(), h * wd, cin, h * wd, cout, /*transpose_b=*/false, 1.0f,
                1.0f);
      ops::gemm(x.f32(), h * wd, dtap.f32(), h * wd, dw_tap.f32(), cout, cin, cout, h * wd, /*transpose_b=*/true);  // x·dtapᵀ
      float* dw = g.dw.f32();
      const float* tap_grad = dw_tap.f32();
      for (int64_t i = 0; i < cin; ++i)
        for (int64_t o = 0; o < cout; ++o) dw[((i * cout + o) * 2 + a) * 2 + b] = tap_grad[i * cout + o];
    }
  return g;
}

Tensor chw_to_tokens(const Tensor& chw) { return ops::transpose_2d(chw.contiguous().view({chw.size(0), chw.size(1) * chw.size(2)})); }
Tensor tokens_to_chw(const Tensor& tokens, int64_t h, int64_t w) {
  return ops::transpose_2d(tokens.contiguous()).view({tokens.size(1), h, w});
}

}  // namespace

// ---- activations kept for backward ------------------------------------------------------------
struct TrainableMaskDecoder::Forward {
  Tensor point_embedding, key_pe, keys0;
  struct BlockSaved {
    Tensor queries_in, keys_in;
    AttentionSaved self_attn, to_image, to_token;
    Tensor pre_norm[4];  // inputs of the four LayerNorms
    Tensor q1, q2, q3, keys_out;  // queries after norm1, norm2, norm3; keys after norm4
    Tensor mlp_h;                 // relu input
  };
  std::vector<BlockSaved> blocks;
  AttentionSaved final_attn;
  Tensor final_pre_norm, queries_out, keys_out;
  Tensor u1_pre_norm, u1_norm, u1_act, u2_pre_act, u2_act;  // upscaling [C, H, W]
  Tensor fpn0, fpn1;
  std::vector<std::vector<Tensor>> hyper_acts;  // per mask token: the inputs of each hypernetwork layer
  Tensor hyper;                                 // [4, 32]
  int64_t g_h = 0, g_w = 0;
};

TrainableMaskDecoder TrainableMaskDecoder::load(const Checkpoint& c, const std::string& prefix) {
  TrainableMaskDecoder m;
  const auto get = [&](const std::string& name) {
    m.params_.emplace_back(name, c.get(prefix + name).to(DType::F32));
    return m.params_.back().second;
  };
  m.obj_score_token_ = get("obj_score_token.weight");
  m.iou_token_ = get("iou_token.weight");
  m.mask_tokens_ = get("mask_tokens.weight");
  m.dim_ = m.iou_token_.size(1);
  m.num_mask_tokens_ = m.mask_tokens_.size(0);
  const auto attention = [&](const std::string& p, int64_t downsample) {
    Attention a;
    a.q_w = get(p + "q_proj.weight"), a.q_b = get(p + "q_proj.bias");
    a.k_w = get(p + "k_proj.weight"), a.k_b = get(p + "k_proj.bias");
    a.v_w = get(p + "v_proj.weight"), a.v_b = get(p + "v_proj.bias");
    a.out_w = get(p + "out_proj.weight"), a.out_b = get(p + "out_proj.bias");
    a.internal = m.dim_ / downsample;
    return a;
  };
  for (int i = 0; c.has(prefix + "transformer.layers." + std::to_string(i) + ".norm1.weight"); ++i) {
    const std::string p = "transformer.layers." + std::to_string(i) + ".";
    Block b;
    b.self_attn = attention(p + "self_attn.", 1);
    b.to_image = attention(p + "cross_attn_token_to_image.", 2);
    b.to_token = attention(p + "cross_attn_image_to_token.", 2);
    for (int n = 0; n < 4; ++n) {
      b.norm_w[n] = get(p + "norm" + std::to_string(n + 1) + ".weight");
      b.norm_b[n] = get(p + "norm" + std::to_string(n + 1) + ".bias");
    }
    b.mlp_w1 = get(p + "mlp.layers.0.weight"), b.mlp_b1 = get(p + "mlp.layers.0.bias");
    b.mlp_w2 = get(p + "mlp.layers.1.weight"), b.mlp_b2 = get(p + "mlp.layers.1.bias");
    m.blocks_.push_back(std::move(b));
  }
  check(!m.blocks_.empty(), prefix + ": no two-way transformer layers in the checkpoint");
  m.final_attn_ = attention("transformer.final_attn_token_to_image.", 2);
  m.final_norm_w_ = get("transformer.norm_final_attn.weight");
  m.final_norm_b_ = get("transformer.norm_final_attn.bias");
  m.up1_w_ = get("output_upscaling.0.weight"), m.up1_b_ = get("output_upscaling.0.bias");
  m.up_norm_w_ = get("output_upscaling.1.weight"), m.up_norm_b_ = get("output_upscaling.1.bias");
  m.up2_w_ = get("output_upscaling.3.weight"), m.up2_b_ = get("output_upscaling.3.bias");
  m.conv_s0_w_ = get("conv_s0.weight"), m.conv_s0_b_ = get("conv_s0.bias");
  m.conv_s1_w_ = get("conv_s1.weight"), m.conv_s1_b_ = get("conv_s1.bias");
  const auto mlp = [&](const std::string& p) {
    Mlp l;
    for (int i = 0; c.has(prefix + p + "layers." + std::to_string(i) + ".weight"); ++i) {
      l.w.push_back(get(p + "layers." + std::to_string(i) + ".weight"));
      l.b.push_back(get(p + "layers." + std::to_string(i) + ".bias"));
    }
    return l;
  };
  for (int64_t i = 0; i < m.num_mask_tokens_; ++i) m.hyper_.push_back(mlp("output_hypernetworks_mlps." + std::to_string(i) + "."));
  m.iou_head_ = mlp("iou_prediction_head.");
  m.obj_head_ = mlp("pred_obj_score_head.");
  return m;
}

std::vector<std::string> TrainableMaskDecoder::tensor_names() const {
  std::vector<std::string> names;
  for (const auto& [name, tensor] : params_) names.push_back(name);
  return names;
}

TrainableMaskDecoder::Output TrainableMaskDecoder::forward(const Inputs& in) const {
  const int64_t d = dim_;
  auto f = std::make_shared<Forward>();
  f->g_h = in.image_embedding.size(1);
  f->g_w = in.image_embedding.size(2);
  // tokens = [obj_score, iou, mask tokens..., sparse prompts...]
  const int64_t s = in.sparse.size(0), n_tokens = 2 + num_mask_tokens_ + s;
  f->point_embedding = Tensor::empty({n_tokens, d});
  float* p = f->point_embedding.f32();
  std::memcpy(p, obj_score_token_.f32(), d * sizeof(float));
  std::memcpy(p + d, iou_token_.f32(), d * sizeof(float));
  std::memcpy(p + 2 * d, mask_tokens_.f32(), num_mask_tokens_ * d * sizeof(float));
  std::memcpy(p + (2 + num_mask_tokens_) * d, in.sparse.contiguous().f32(), s * d * sizeof(float));
  f->keys0 = chw_to_tokens(in.image_embedding);
  ops::add_rows(f->keys0.f32(), in.dense.contiguous().f32(), f->keys0.size(0), d);
  f->key_pe = chw_to_tokens(in.image_pe);

  Tensor queries = f->point_embedding, keys = f->keys0;
  for (size_t i = 0; i < blocks_.size(); ++i) {
    const Block& b = blocks_[i];
    Forward::BlockSaved bs;
    bs.queries_in = queries, bs.keys_in = keys;
    if (i == 0) {  // the first layer attends without positional encodings and has no residual
      bs.pre_norm[0] = attention_forward(b.self_attn, queries, queries, queries, bs.self_attn);
    } else {
      const Tensor q = add(queries, f->point_embedding);
      bs.pre_norm[0] = add(queries, attention_forward(b.self_attn, q, q, queries, bs.self_attn));
    }
    bs.q1 = layer_norm(bs.pre_norm[0], b.norm_w[0], b.norm_b[0], kTokenNormEps);
    const Tensor k = add(keys, f->key_pe);
    bs.pre_norm[1] = add(bs.q1, attention_forward(b.to_image, add(bs.q1, f->point_embedding), k, keys, bs.to_image));
    bs.q2 = layer_norm(bs.pre_norm[1], b.norm_w[1], b.norm_b[1], kTokenNormEps);
    bs.mlp_h = linear_forward(bs.q2, b.mlp_w1, b.mlp_b1);
    Tensor r = bs.mlp_h.clone();
    ops::relu(r.f32(), r.numel());
    bs.pre_norm[2] = add(bs.q2, linear_forward(r, b.mlp_w2, b.mlp_b2));
    bs.q3 = layer_norm(bs.pre_norm[2], b.norm_w[2], b.norm_b[2], kTokenNormEps);
    bs.pre_norm[3] = add(keys, attention_forward(b.to_token, k, add(bs.q3, f->point_embedding), bs.q3, bs.to_token));
    bs.keys_out = layer_norm(bs.pre_norm[3], b.norm_w[3], b.norm_b[3], kTokenNormEps);
    queries = bs.q3;
    keys = bs.keys_out;
    f->blocks.push_back(std::move(bs));
  }
  f->final_pre_norm = add(queries, attention_forward(final_attn_, add(queries, f->point_embedding),
                                                     add(keys, f->key_pe), keys, f->final_attn));
  f->queries_out = layer_norm(f->final_pre_norm, final_norm_w_, final_norm_b_, kTokenNormEps);
  f->keys_out = keys;

  // Upscaling with conv_s1(fpn1) and conv_s0(fpn0).
  f->fpn0 = in.fpn0.contiguous();
  f->fpn1 = in.fpn1.contiguous();
  const int64_t g_h = f->g_h, g_w = f->g_w;
  const Tensor src = tokens_to_chw(keys, g_h, g_w);
  f->u1_pre_norm = conv_transpose(src, up1_w_, up1_b_);
  const Tensor s1 = tokens_to_chw(linear_forward(f->fpn1, conv_s1_w_.view({conv_s1_w_.size(0), d}), conv_s1_b_), 2 * g_h, 2 * g_w);
  accumulate(f->u1_pre_norm, s1);
  const int64_t c1 = f->u1_pre_norm.size(0);
  f->u1_norm = Tensor::empty(f->u1_pre_norm.shape());
  ops::layer_norm_2d(f->u1_pre_norm.f32(), up_norm_w_.f32(), up_norm_b_.f32(), f->u1_norm.f32(), c1,
                     4 * g_h * g_w, kLayerNorm2dEps);
  f->u1_act = f->u1_norm.clone();
  ops::gelu_erf(f->u1_act.f32(), f->u1_act.numel());
  f->u2_pre_act = conv_transpose(f->u1_act, up2_w_, up2_b_);
  const Tensor s0 = tokens_to_chw(linear_forward(f->fpn0, conv_s0_w_.view({conv_s0_w_.size(0), d}), conv_s0_b_), 4 * g_h, 4 * g_w);
  accumulate(f->u2_pre_act, s0);
  f->u2_act = f->u2_pre_act.clone();
  ops::gelu_erf(f->u2_act.f32(), f->u2_act.numel());

  // Hypernetworks and masks.
  const int64_t up_c = f->u2_act.size(0), hw = f->u2_act.size(1) * f->u2_act.size(2);
  f->hyper = Tensor::empty({num_mask_tokens_, up_c});
  f->hyper_acts.resize(static_cast<size_t>(num_mask_tokens_));
  for (int64_t m = 0; m < num_mask_tokens_; ++m) {
    Tensor h = f->queries_out.slice(0, 2 + m, 3 + m).contiguous();
    const Mlp& mlp = hyper_[static_cast<size_t>(m)];
    for (size_t l = 0; l < mlp.w.size(); ++l) {
      f->hyper_acts[static_cast<size_t>(m)].push_back(h);
      h = linear_forward(h, mlp.w[l], mlp.b[l]);
      if (l + 1 < mlp.w.size()) ops::relu(h.f32(), h.numel());
    }
    std::memcpy(f->hyper.f32() + m * up_c, h.f32(), up_c * sizeof(float));
  }
  Output out;
  out.masks = Tensor::empty({num_mask_tokens_, f->u2_act.size(1), f->u2_act.size(2)});
  ops::gemm(f->hyper.f32(), up_c, f->u2_act.f32(), hw, out.masks.f32(), hw, num_mask_tokens_, hw, up_c,
            /*transpose_b=*/false);
  Tensor iou = f->queries_out.slice(0, 1, 2).contiguous();
  for (size_t l = 0; l < iou_head_.w.size(); ++l) {
    iou = linear_forward(iou, iou_head_.w[l], iou_head_.b[l]);
    if (l + 1 < iou_head_.w.size()) ops::relu(iou.f32(), iou.numel());
  }
  ops::sigmoid(iou.f32(), iou.numel());
  out.iou = iou.view({num_mask_tokens_});
  out.saved = f;
  return out;
}

void TrainableMaskDecoder::backward(const Output& out, int64_t mask_index, const Tensor& d_mask, Grads& g) const {
  const Forward& f = *out.saved;
  const int64_t d = dim_, up_c = f.u2_act.size(0), hw = f.u2_act.size(1) * f.u2_act.size(2);
  check(mask_index >= 0 && mask_index < num_mask_tokens_ && d_mask.numel() == hw,
        "mask decoder backward: the gradient must be one low-resolution mask of a mask token");
  const Tensor dm = d_mask.contiguous();
  // masks[m] = hyper[m]·u2: d hyper[m] = u2·dm, d u2 = hyper[m]ᵀ·dm.
  Tensor d_hyper = Tensor::empty({1, up_c});
  ops::gemm(dm.f32(), hw, f.u2_act.f32(), hw, d_hyper.f32(), up_c, 1, up_c, hw, /*transpose_b=*/true);
  Tensor d_u2 = Tensor::empty(f.u2_act.shape());
  ops::gemm(f.hyper.f32() + mask_index * up_c, 1, dm.f32(), hw, d_u2.f32(), hw, up_c, hw, 1, /*transpose_b=*/false);
  // Hypernetwork of that token.
  Tensor d_queries_out = Tensor::zeros(f.queries_out.shape());
  {
    const Mlp& mlp = hyper_[static_cast<size_t>(mask_index)];
    const auto& acts = f.hyper_acts[static_cast<size_t>(mask_index)];
    Tensor dy = d_hyper;
    const std::string p = "output_hypernetworks_mlps." + std::to_string(mask_index) + ".layers.";
    for (size_t l = mlp.w.size(); l-- > 0;) {
      // acts[l] is the input of layer l; for l > 0 it is relu(pre-activation), and relu' is read from it.
      const LinearGrads lg = linear_backward(acts[l], mlp.w[l], true, dy);
      accumulate(g.tensors, p + std::to_string(l) + ".weight", lg.dw);
      accumulate(g.tensors, p + std::to_string(l) + ".bias", lg.db);
      dy = l > 0 ? relu_backward(acts[l], lg.dx) : lg.dx;
    }
    std::memcpy(d_queries_out.f32() + (2 + mask_index) * d, dy.f32(), d * sizeof(float));
  }
  // Upscaling: u2 = gelu(convT(u1) + conv_s0(fpn0)), u1 = gelu(LN2d(convT(keys) + conv_s1(fpn1))).
  const Tensor d_u2_pre = gelu_erf_backward(f.u2_pre_act, d_u2);
  {
    const Tensor d_tokens = chw_to_tokens(d_u2_pre);  // [4g·4g, 32]
    const LinearGrads lg = linear_backward(f.fpn0, conv_s0_w_.view({conv_s0_w_.size(0), d}), true, d_tokens);
    accumulate(g.tensors, "conv_s0.weight", lg.dw.view(conv_s0_w_.shape()));
    accumulate(g.tensors, "conv_s0.bias", lg.db);
  }
  const ConvGrads up2 = conv_transpose_backward(f.u1_act, up2_w_, d_u2_pre);
  accumulate(g.tensors, "output_upscaling.3.weight", up2.dw);
  accumulate(g.tensors, "output_upscaling.3.bias", up2.db);
  const Tensor d_u1_norm = gelu_erf_backward(f.u1_norm, up2.dx);
  const NormGrads ln = layer_norm_backward(chw_to_tokens(f.u1_pre_norm), up_norm_w_, kLayerNorm2dEps,
                                           chw_to_tokens(d_u1_norm));
  accumulate(g.tensors, "output_upscaling.1.weight", ln.dw);
  accumulate(g.tensors, "output_upscaling.1.bias", ln.db);
  const Tensor d_u1_pre = tokens_to_chw(ln.dx, f.u1_pre_norm.size(1), f.u1_pre_norm.size(2));
  {
    const LinearGrads lg = linear_backward(f.fpn1, conv_s1_w_.view({conv_s1_w_.size(0), d}), true, ln.dx);
    accumulate(g.tensors, "conv_s1.weight", lg.dw.view(conv_s1_w_.shape()));
    accumulate(g.tensors, "conv_s1.bias", lg.db);
  }
  const ConvGrads up1 = conv_transpose_backward(tokens_to_chw(f.keys_out, f.g_h, f.g_w), up1_w_, d_u1_pre);
  accumulate(g.tensors, "output_upscaling.0.weight", up1.dw);
  accumulate(g.tensors, "output_upscaling.0.bias", up1.db);
  Tensor d_keys = chw_to_tokens(up1.dx);

  // Final attention: queries_out = LN(q + attn(q + pe, keys + kpe, keys)).
  Tensor d_pe = Tensor::zeros(f.point_embedding.shape());
  const NormGrads fn = layer_norm_backward(f.final_pre_norm, final_norm_w_, kTokenNormEps, d_queries_out);
  accumulate(g.tensors, "transformer.norm_final_attn.weight", fn.dw);
  accumulate(g.tensors, "transformer.norm_final_attn.bias", fn.db);
  Tensor d_queries = fn.dx.clone();
  {
    const AttentionInputGrads ag =
        attention_backward_all(final_attn_, f.final_attn, fn.dx, "transformer.final_attn_token_to_image.", g.tensors);
    accumulate(d_queries, ag.dq);
    accumulate(d_pe, ag.dq);
    accumulate(d_keys, ag.dk);
    accumulate(d_keys, ag.dv);
  }
  // The two-way blocks in reverse.
  for (size_t i = blocks_.size(); i-- > 0;) {
    const Block& b = blocks_[i];
    const Forward::BlockSaved& bs = f.blocks[i];
    const std::string p = "transformer.layers." + std::to_string(i) + ".";
    const auto norm_backward = [&](int n, const Tensor& dy) {
      const NormGrads ng = layer_norm_backward(bs.pre_norm[n], b.norm_w[n], kTokenNormEps, dy);
      accumulate(g.tensors, p + "norm" + std::to_string(n + 1) + ".weight", ng.dw);
      accumulate(g.tensors, p + "norm" + std::to_string(n + 1) + ".bias", ng.db);
      return ng.dx;
    };
    // keys_out = LN4(keys_in + to_token(keys_in + kpe, q3 + pe, q3)); queries leaving = q3.
    const Tensor d_pre3 = norm_backward(3, d_keys);
    Tensor d_keys_in = d_pre3.clone();
    Tensor d_q3 = d_queries.clone();
    {
      const AttentionInputGrads ag = attention_backward_all(b.to_token, bs.to_token, d_pre3, p + "cross_attn_image_to_token.", g.tensors);
      accumulate(d_keys_in, ag.dq);  // the image side queries: keys_in + kpe
      accumulate(d_q3, ag.dk);
      accumulate(d_pe, ag.dk);
      accumulate(d_q3, ag.dv);
    }
    // q3 = LN3(q2 + mlp(q2)).
    const Tensor d_pre2 = norm_backward(2, d_q3);
    Tensor d_q2 = d_pre2.clone();
    {
      Tensor r = bs.mlp_h.clone();
      ops::relu(r.f32(), r.numel());
      const LinearGrads l2 = linear_backward(r, b.mlp_w2, true, d_pre2);
      const LinearGrads l1 = linear_backward(bs.q2, b.mlp_w1, true, relu_backward(bs.mlp_h, l2.dx));
      accumulate(g.tensors, p + "mlp.layers.1.weight", l2.dw);
      accumulate(g.tensors, p + "mlp.layers.1.bias", l2.db);
      accumulate(g.tensors, p + "mlp.layers.0.weight", l1.dw);
      accumulate(g.tensors, p + "mlp.layers.0.bias", l1.db);
      accumulate(d_q2, l1.dx);
    }
    // q2 = LN2(q1 + to_image(q1 + pe, keys_in + kpe, keys_in)).
    const Tensor d_pre1 = norm_backward(1, d_q2);
    Tensor d_q1 = d_pre1.clone();
    {
      const AttentionInputGrads ag = attention_backward_all(b.to_image, bs.to_image, d_pre1, p + "cross_attn_token_to_image.", g.tensors);
      accumulate(d_q1, ag.dq);
      accumulate(d_pe, ag.dq);
      accumulate(d_keys_in, ag.dk);
      accumulate(d_keys_in, ag.dv);
    }
    // q1 = LN1(self_attn(...)) (+ residual after the first layer).
    const Tensor d_pre0 = norm_backward(0, d_q1);
    Tensor d_queries_in = Tensor::zeros(bs.queries_in.shape());
    {
      const AttentionInputGrads ag = attention_backward_all(b.self_attn, bs.self_attn, d_pre0, p + "self_attn.", g.tensors);
      if (i == 0) {
        accumulate(d_queries_in, ag.dq);
        accumulate(d_queries_in, ag.dk);
        accumulate(d_queries_in, ag.dv);
      } else {
        accumulate(d_queries_in, d_pre0);
        accumulate(d_queries_in, ag.dq);
        accumulate(d_queries_in, ag.dk);
        accumulate(d_pe, ag.dq);
        accumulate(d_pe, ag.dk);
        accumulate(d_queries_in, ag.dv);
      }
    }
    d_queries = d_queries_in;
    d_keys = d_keys_in;
  }
  accumulate(d_pe, d_queries);  // the first queries are the tokens themselves
  // The tokens: obj_score, iou, mask tokens (trained) and the sparse prompts.
  accumulate(g.tensors, "obj_score_token.weight", d_pe.slice(0, 0, 1));
  accumulate(g.tensors, "iou_token.weight", d_pe.slice(0, 1, 2));
  accumulate(g.tensors, "mask_tokens.weight", d_pe.slice(0, 2, 2 + num_mask_tokens_));
  g.sparse = d_pe.slice(0, 2 + num_mask_tokens_, d_pe.size(0)).contiguous().clone();
}

}  // namespace sa2va::train
