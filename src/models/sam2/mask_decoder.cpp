#include "models/sam2/mask_decoder.h"

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "ops/ops.h"

namespace sa2va::sam2 {
namespace {

constexpr float kTokenNormEps = 1e-5f;    // nn.LayerNorm default in the two-way transformer
constexpr float kLayerNorm2dEps = 1e-6f;  // SAM2 LayerNorm2d

Tensor add_tensors(const Tensor& a, const Tensor& b) {
  Tensor out = Tensor::empty(a.shape(), DType::F32, a.device());
  ops::add(a.kernel_f32(), b.kernel_f32(), out.kernel_f32(), a.numel());
  return out;
}

// x = LayerNorm(x + y) over rows of x.size(1), in place on x.
void add_norm(Tensor& x, const Tensor& y, const Tensor& w, const Tensor& b) {
  ops::add(x.kernel_f32(), y.kernel_f32(), x.kernel_f32(), x.numel());
  ops::layer_norm(x.kernel_f32(), w.kernel_f32(), b.kernel_f32(), x.kernel_f32(), x.size(0), x.size(1), kTokenNormEps);
}

}  // namespace

SamMlp SamMlp::load(Weights& wt, const std::string& prefix, const std::vector<int64_t>& dims) {
  SamMlp m;
  for (size_t i = 0; i + 1 < dims.size(); ++i) {
    const std::string p = prefix + "layers." + std::to_string(i) + ".";
    m.w.push_back(wt.matrix(p + "weight", {dims[i + 1], dims[i]}));
    m.b.push_back(wt.f32(p + "bias", {dims[i + 1]}, Init::Bias));
  }
  return m;
}

Tensor SamMlp::forward(const Tensor& x) const {
  Tensor h = x;
  for (size_t i = 0; i < w.size(); ++i) {
    h = ops::linear(h, w[i], b[i]);
    if (i + 1 < w.size()) ops::relu(h.kernel_f32(), h.numel());
  }
  return h;
}

SamAttention SamAttention::load(Weights& w, const std::string& prefix, int64_t embed_dim, int64_t heads,
                                int64_t downsample) {
  SamAttention a;
  a.heads = heads;
  a.embed_dim = embed_dim;
  check(heads > 0 && downsample > 0, "sam2 mask decoder: attention heads and downsample rate must be positive");
  a.internal_dim = embed_dim / downsample;
  check(a.internal_dim % heads == 0, "sam2 mask decoder: attention width not divisible by the heads");
  a.attention = MultiHeadAttention::configure(w, heads, a.internal_dim / heads);
  auto bind = [&](const char* name, int64_t out, int64_t in, WeightMatrix& wt, Tensor& b) {
    wt = w.matrix(prefix + name + ".weight", {out, in});
    b = w.f32(prefix + name + ".bias", {out}, Init::Bias);
  };
  bind("q_proj", a.internal_dim, embed_dim, a.q_w, a.q_b);
  bind("k_proj", a.internal_dim, embed_dim, a.k_w, a.k_b);
  bind("v_proj", a.internal_dim, embed_dim, a.v_w, a.v_b);
  bind("out_proj", embed_dim, a.internal_dim, a.out_w, a.out_b);
  return a;
}

Tensor SamAttention::forward(const Tensor& q, const Tensor& k, const Tensor& v) const {
  const Tensor qp = ops::linear(q, q_w, q_b), kp = ops::linear(k, k_w, k_b), vp = ops::linear(v, v_w, v_b);
  Tensor o = Tensor::empty({q.size(0), internal_dim}, DType::F32, q.device());
  attention.run({qp.kernel_f32(), internal_dim}, {kp.kernel_f32(), internal_dim}, {vp.kernel_f32(), internal_dim}, o.kernel_f32(), internal_dim,
                q.size(0), k.size(0));
  return ops::linear(o, out_w, out_b);
}

MaskDecoder MaskDecoder::load(Weights& w, const Sam2Config& c, const std::string& prefix) {
  MaskDecoder m;
  const int64_t d = c.hidden_dim;
  m.dim = d;
  m.num_mask_tokens = c.num_multimask_outputs + 1;
  m.obj_score_token = w.f32(prefix + "obj_score_token.weight", {1, d}, Init::Small);
  m.iou_token = w.f32(prefix + "iou_token.weight", {1, d}, Init::Small);
  m.mask_tokens = w.f32(prefix + "mask_tokens.weight", {m.num_mask_tokens, d}, Init::Small);

  const std::string t = prefix + "transformer.";
  for (int i = 0; i < c.decoder_depth; ++i) {
    const std::string p = t + "layers." + std::to_string(i) + ".";
    TwoWayBlock b;
    b.skip_first_layer_pe = i == 0;
    b.self_attn = SamAttention::load(w, p + "self_attn.", d, c.decoder_heads, 1);
    b.cross_token_to_image = SamAttention::load(w, p + "cross_attn_token_to_image.", d, c.decoder_heads, 2);
    b.cross_image_to_token = SamAttention::load(w, p + "cross_attn_image_to_token.", d, c.decoder_heads, 2);
    for (int n = 0; n < 4; ++n) {
      b.norm_w[n] = w.f32(p + "norm" + std::to_string(n + 1) + ".weight", {d}, Init::NormWeight);
      b.norm_b[n] = w.f32(p + "norm" + std::to_string(n + 1) + ".bias", {d}, Init::NormBias);
    }
    b.mlp = FeedForward::load(w, p + "mlp.layers.0.", p + "mlp.layers.1.", d, c.decoder_mlp_dim, d, Activation::Relu);
    m.blocks.push_back(std::move(b));
  }
  m.final_attn = SamAttention::load(w, t + "final_attn_token_to_image.", d, c.decoder_heads, 2);
  m.final_norm_w = w.f32(t + "norm_final_attn.weight", {d}, Init::NormWeight);
  m.final_norm_b = w.f32(t + "norm_final_attn.bias", {d}, Init::NormBias);

  m.up1_w = w.conv_transposed_2x2(prefix + "output_upscaling.0.weight", {d, d / 4, 2, 2});
  m.up1_b = w.f32(prefix + "output_upscaling.0.bias", {d / 4}, Init::Bias);
  m.up_norm_w = w.f32(prefix + "output_upscaling.1.weight", {d / 4}, Init::NormWeight);
  m.up_norm_b = w.f32(prefix + "output_upscaling.1.bias", {d / 4}, Init::NormBias);
  m.up2_w = w.conv_transposed_2x2(prefix + "output_upscaling.3.weight", {d / 4, d / 8, 2, 2});
  m.up2_b = w.f32(prefix + "output_upscaling.3.bias", {d / 8}, Init::Bias);
  m.conv_s0_w = w.matrix(prefix + "conv_s0.weight", {d / 8, d, 1, 1}, Init::Linear, MatrixUse::ImageTokens);
  m.conv_s0_b = w.f32(prefix + "conv_s0.bias", {d / 8}, Init::Bias);
  m.conv_s1_w = w.matrix(prefix + "conv_s1.weight", {d / 4, d, 1, 1}, Init::Linear, MatrixUse::ImageTokens);
  m.conv_s1_b = w.f32(prefix + "conv_s1.bias", {d / 4}, Init::Bias);

  for (int64_t i = 0; i < m.num_mask_tokens; ++i)
    m.hypernetworks.push_back(
        SamMlp::load(w, prefix + "output_hypernetworks_mlps." + std::to_string(i) + ".", {d, d, d, d / 8}));
  m.iou_head = SamMlp::load(w, prefix + "iou_prediction_head.", {d, d, d, m.num_mask_tokens});
  m.obj_score_head = SamMlp::load(w, prefix + "pred_obj_score_head.", {d, d, d, 1});
  return m;
}

void MaskDecoder::high_res_conv(int level, const float* fpn_rows, int64_t rows, float* out) const {
  check(level == 0 || level == 1, "mask decoder: high-resolution features come from FPN levels 0 and 1");
  const WeightMatrix& w = level == 0 ? conv_s0_w : conv_s1_w;
  ops::linear(fpn_rows, rows, w.cols(), w, nullptr, out);
  ops::add_rows(out, (level == 0 ? conv_s0_b : conv_s1_b).kernel_f32(), rows, w.rows());
}

Tensor MaskDecoder::feat_s0(const TokenMap& fpn0) const {
  TokenMap f{Tensor::empty({fpn0.h * fpn0.w, conv_s0_w.rows()}, DType::F32, fpn0.tokens.device()), fpn0.h, fpn0.w};
  high_res_conv(0, fpn0.tokens.kernel_f32(), fpn0.h * fpn0.w, f.tokens.kernel_f32());
  return f.to_chw();
}

Tensor MaskDecoder::feat_s1(const TokenMap& fpn1) const {
  TokenMap f{Tensor::empty({fpn1.h * fpn1.w, conv_s1_w.rows()}, DType::F32, fpn1.tokens.device()), fpn1.h, fpn1.w};
  high_res_conv(1, fpn1.tokens.kernel_f32(), fpn1.h * fpn1.w, f.tokens.kernel_f32());
  return f.to_chw();
}

MaskDecoder::Output MaskDecoder::predict(const Tensor& image_embedding, const Tensor& image_pe, const Tensor& sparse,
                                         const float* dense, const Tensor& feat_s0, const Tensor& feat_s1) const {
  check(image_embedding.dim() == 3 && image_embedding.size(0) == dim && image_pe.shape() == image_embedding.shape(),
        "sam2 mask decoder: image embedding " + shape_str(image_embedding.shape()) + " / positional encoding " +
            shape_str(image_pe.shape()) + " do not match");
  check(sparse.dim() == 2 && sparse.size(1) == dim, "sam2 mask decoder: bad sparse prompt " + shape_str(sparse.shape()));
  const int64_t g_h = image_embedding.size(1), g_w = image_embedding.size(2);

  // tokens = [obj_score, iou, mask tokens…, sparse prompts…]
  const int64_t n_tokens = 2 + num_mask_tokens + sparse.size(0);
  Tensor point_embedding = Tensor::empty({n_tokens, dim}, DType::F32, image_embedding.device());
  {
    float* p = point_embedding.kernel_f32();
    ops::copy_rows(obj_score_token.kernel_f32(), dim, p, dim, 1, dim);
    ops::copy_rows(iou_token.kernel_f32(), dim, p + dim, dim, 1, dim);
    ops::copy_rows(mask_tokens.kernel_f32(), dim, p + 2 * dim, dim, num_mask_tokens, dim);
    ops::copy_rows(sparse.contiguous().kernel_f32(), dim, p + (2 + num_mask_tokens) * dim, dim, sparse.size(0), dim);
  }
  // Image side: src = image_embedding + dense, as tokens.
  Tensor keys = TokenMap::from_chw(image_embedding).tokens;
  ops::add_rows(keys.kernel_f32(), dense, keys.size(0), dim);
  const Tensor key_pe = TokenMap::from_chw(image_pe).tokens;

  // Two-way transformer.
  Tensor queries = point_embedding.clone();
  for (const TwoWayBlock& b : blocks) {
    if (b.skip_first_layer_pe) {
      queries = b.self_attn.forward(queries, queries, queries);
      ops::layer_norm(queries.kernel_f32(), b.norm_w[0].kernel_f32(), b.norm_b[0].kernel_f32(), queries.kernel_f32(), n_tokens, dim,
                      kTokenNormEps);
    } else {
      const Tensor q = add_tensors(queries, point_embedding);
      add_norm(queries, b.self_attn.forward(q, q, queries), b.norm_w[0], b.norm_b[0]);
    }
    const Tensor k = add_tensors(keys, key_pe);
    Tensor q = add_tensors(queries, point_embedding);
    add_norm(queries, b.cross_token_to_image.forward(q, k, keys), b.norm_w[1], b.norm_b[1]);

    add_norm(queries, b.mlp.forward(queries), b.norm_w[2], b.norm_b[2]);

    q = add_tensors(queries, point_embedding);
    add_norm(keys, b.cross_image_to_token.forward(k, q, queries), b.norm_w[3], b.norm_b[3]);
  }
  {
    const Tensor q = add_tensors(queries, point_embedding), k = add_tensors(keys, key_pe);
    add_norm(queries, final_attn.forward(q, k, keys), final_norm_w, final_norm_b);
  }

  Output out;
  const Tensor iou_token_out = queries.slice(0, 1, 2);
  out.mask_tokens_out = queries.slice(0, 2, 2 + num_mask_tokens).clone();

  // Upscaling with the high-resolution features.
  const Tensor src = TokenMap{keys, g_h, g_w}.to_chw();
  Tensor u = ops::conv_transpose_2x2(src, up1_w, up1_b);
  check(u.shape() == feat_s1.shape(), "sam2 mask decoder: feat_s1 " + shape_str(feat_s1.shape()) +
                                          " does not match the upscaled embedding " + shape_str(u.shape()));
  ops::add(u.kernel_f32(), feat_s1.contiguous().kernel_f32(), u.kernel_f32(), u.numel());
  ops::layer_norm_2d(u.kernel_f32(), up_norm_w.kernel_f32(), up_norm_b.kernel_f32(), u.kernel_f32(), u.size(0), u.size(1) * u.size(2),
                     kLayerNorm2dEps);
  ops::gelu_erf(u.kernel_f32(), u.numel());
  u = ops::conv_transpose_2x2(u, up2_w, up2_b);
  check(u.shape() == feat_s0.shape(), "sam2 mask decoder: feat_s0 " + shape_str(feat_s0.shape()) +
                                          " does not match the upscaled embedding " + shape_str(u.shape()));
  ops::add(u.kernel_f32(), feat_s0.contiguous().kernel_f32(), u.kernel_f32(), u.numel());
  ops::gelu_erf(u.kernel_f32(), u.numel());

  // Hypernetworks: masks[m] = MLP_m(mask token m) · u.
  const int64_t up_c = u.size(0), up_h = u.size(1), up_w = u.size(2);
  Tensor hyper = Tensor::empty({num_mask_tokens, up_c}, DType::F32, u.device());
  for (int64_t m = 0; m < num_mask_tokens; ++m) {
    const Tensor h = hypernetworks[m].forward(out.mask_tokens_out.slice(0, m, m + 1));
    ops::copy_rows(h.kernel_f32(), up_c, hyper.kernel_f32() + m * up_c, up_c, 1, up_c);
  }
  out.masks = Tensor::empty({num_mask_tokens, up_h, up_w}, DType::F32, u.device());
  ops::gemm(hyper.kernel_f32(), up_c, u.kernel_f32(), up_h * up_w, out.masks.kernel_f32(), up_h * up_w, num_mask_tokens, up_h * up_w,
            up_c, /*transpose_b=*/false);

  out.iou = iou_head.forward(iou_token_out.clone()).view({num_mask_tokens});
  ops::sigmoid(out.iou.kernel_f32(), num_mask_tokens);
  out.object_score_logit = obj_score_head.forward(queries.slice(0, 0, 1).clone()).to(Device::cpu()).f32()[0];
  return out;
}

}  // namespace sa2va::sam2
