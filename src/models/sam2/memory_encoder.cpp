#include "models/sam2/memory_encoder.h"

#include <cmath>

#include "core/error.h"
#include "core/profile.h"
#include "models/sam2/hiera.h"
#include "ops/ops.h"

namespace sa2va::sam2 {
namespace {

constexpr float kLayerNorm2dEps = 1e-6f;
// MaskDownSampler(kernel 3, stride 2, padding 1, total_stride 16): channels ×4 per stage.
constexpr int kDownsamplerStages = 4;
constexpr int64_t kDownsamplerStride = 2;

}  // namespace

MemoryEncoder MemoryEncoder::load(Weights& w, const Sam2Config& c, const std::string& prefix) {
  check(c.hidden_dim > 0 && c.mem_out_dim > 0, "config.json: sam2_config hidden_dim and memory out_dim must be positive");
  check(c.fuser_kernel > 0 && c.fuser_kernel % 2 == 1, "config.json: sam2_config.memory_encoder.cx_kernel_size must be odd");
  MemoryEncoder e;
  e.hidden_dim = c.hidden_dim;
  e.out_dim = c.mem_out_dim;
  e.kernel = c.fuser_kernel;
  const int64_t C = e.hidden_dim, k = e.kernel;
  const std::string p = prefix + "memory_encoder.";

  // nn.Sequential indices: stage s has conv 3s, LayerNorm2d 3s+1, GELU 3s+2; the 1×1 projection follows.
  int64_t in_ch = 1;
  for (int s = 0; s < kDownsamplerStages; ++s) {
    const int64_t out_ch = in_ch * kDownsamplerStride * kDownsamplerStride;
    const std::string conv = p + "mask_downsampler.encoder." + std::to_string(3 * s) + ".";
    const std::string norm = p + "mask_downsampler.encoder." + std::to_string(3 * s + 1) + ".";
    MaskDownsamplerStage st;
    st.conv_w = w.conv(conv + "weight", {out_ch, in_ch, 3, 3});
    st.conv_b = w.f32(conv + "bias", {out_ch}, Init::Bias);
    st.norm_w = w.f32(norm + "weight", {out_ch}, Init::NormWeight);
    st.norm_b = w.f32(norm + "bias", {out_ch}, Init::NormBias);
    e.downsampler.push_back(std::move(st));
    in_ch = out_ch;
  }
  const std::string proj = p + "mask_downsampler.encoder." + std::to_string(3 * kDownsamplerStages) + ".";
  e.downsampler_proj_w = w.conv(proj + "weight", {C, in_ch, 1, 1});
  e.downsampler_proj_b = w.f32(proj + "bias", {C}, Init::Bias);

  e.pix_feat_proj_w = w.conv(p + "pix_feat_proj.weight", {C, C, 1, 1});
  e.pix_feat_proj_b = w.f32(p + "pix_feat_proj.bias", {C}, Init::Bias);
  for (int i = 0; i < c.fuser_layers; ++i) {
    const std::string q = p + "fuser.layers." + std::to_string(i) + ".";
    CXBlock b;
    b.dwconv_w = w.conv(q + "dwconv.weight", {C, 1, k, k});
    b.dwconv_b = w.f32(q + "dwconv.bias", {C}, Init::Bias);
    b.norm_w = w.f32(q + "norm.weight", {C}, Init::NormWeight);
    b.norm_b = w.f32(q + "norm.bias", {C}, Init::NormBias);
    b.pwconv1_w = w.matrix(q + "pwconv1.weight", {4 * C, C}, Init::Linear, MatrixUse::ImageTokens);
    b.pwconv1_b = w.f32(q + "pwconv1.bias", {4 * C}, Init::Bias);
    b.pwconv2_w = w.matrix(q + "pwconv2.weight", {C, 4 * C}, Init::Linear, MatrixUse::ImageTokens);
    b.pwconv2_b = w.f32(q + "pwconv2.bias", {C}, Init::Bias);
    b.g_weight = w.f32(q + "g_weight", {C}, Init::Small);
    e.fuser.push_back(std::move(b));
  }
  e.out_proj_w = w.conv(p + "out_proj.weight", {e.out_dim, C, 1, 1});
  e.out_proj_b = w.f32(p + "out_proj.bias", {e.out_dim}, Init::Bias);

  e.unused_mask_downsample_w = w.stored(prefix + "mask_downsample.weight", {1, 1, 4, 4});
  e.unused_mask_downsample_b = w.f32(prefix + "mask_downsample.bias", {1}, Init::Bias);
  return e;
}

Tensor MemoryEncoder::forward(const Tensor& pix_feat, const Tensor& mask_logits) const {
  const profile::Scope timed("sam2.memory_encoder");
  check(pix_feat.defined() && pix_feat.dtype() == DType::F32 && pix_feat.dim() == 3 && pix_feat.size(0) == hidden_dim,
        "memory encoder: pix_feat must be F32 [" + std::to_string(hidden_dim) + ", h, w]");
  const int64_t H = pix_feat.size(1), W = pix_feat.size(2), P = H * W, C = hidden_dim;
  const int64_t total_stride = 16;
  check(mask_logits.defined() && mask_logits.dtype() == DType::F32 &&
            mask_logits.numel() == H * total_stride * W * total_stride,
        "memory encoder: mask logits must be F32 [" + std::to_string(H * total_stride) + ", " +
            std::to_string(W * total_stride) + "]");

  // Mask for memory: sigmoid(logits)·scale + bias.
  Tensor m = mask_logits.contiguous().clone().view({1, H * total_stride, W * total_stride});
  ops::sigmoid(m.kernel_f32(), m.numel());
  ops::scale_shift(m.kernel_f32(), sigmoid_scale, sigmoid_bias, m.numel());

  ops::Conv2dArgs down;
  down.stride_h = down.stride_w = kDownsamplerStride;
  down.pad_h = down.pad_w = 1;
  for (const MaskDownsamplerStage& st : downsampler) {
    m = ops::conv2d(m, st.conv_w, st.conv_b, down);
    const int64_t ch = m.size(0), px = m.size(1) * m.size(2);
    ops::layer_norm_2d(m.kernel_f32(), st.norm_w.kernel_f32(), st.norm_b.kernel_f32(), m.kernel_f32(), ch, px, kLayerNorm2dEps);
    ops::gelu_erf(m.kernel_f32(), m.numel());
  }
  m = ops::conv2d(m, downsampler_proj_w, downsampler_proj_b, ops::Conv2dArgs{});

  Tensor x = ops::conv2d(pix_feat.contiguous(), pix_feat_proj_w, pix_feat_proj_b, ops::Conv2dArgs{});
  ops::add(x.kernel_f32(), m.kernel_f32(), x.kernel_f32(), x.numel());

  ops::Conv2dArgs depthwise;
  depthwise.pad_h = depthwise.pad_w = kernel / 2;
  depthwise.groups = C;
  for (const CXBlock& b : fuser) {
    Tensor y = ops::conv2d(x, b.dwconv_w, b.dwconv_b, depthwise);
    ops::layer_norm_2d(y.kernel_f32(), b.norm_w.kernel_f32(), b.norm_b.kernel_f32(), y.kernel_f32(), C, P, kLayerNorm2dEps);
    TokenMap tokens = TokenMap::from_chw(y);  // per-pixel linears run on [P, C] tokens
    Tensor hidden = ops::linear(tokens.tokens, b.pwconv1_w, b.pwconv1_b);
    ops::gelu_erf(hidden.kernel_f32(), hidden.numel());
    tokens.tokens = ops::linear(hidden, b.pwconv2_w, b.pwconv2_b);
    ops::mul_rows(tokens.tokens.kernel_f32(), b.g_weight.kernel_f32(), P, C);
    ops::add(x.kernel_f32(), tokens.to_chw().kernel_f32(), x.kernel_f32(), x.numel());
  }
  Tensor out = ops::conv2d(x, out_proj_w, out_proj_b, ops::Conv2dArgs{});
  ops::round_bf16(out.kernel_f32(), out.numel());
  return out;
}

}  // namespace sa2va::sam2
