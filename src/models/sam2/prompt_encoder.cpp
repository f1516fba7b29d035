#include "models/sam2/prompt_encoder.h"

#include <cmath>
#include <cstring>
#include <numbers>
#include <vector>

#include "core/error.h"
#include "ops/ops.h"

namespace sa2va::sam2 {

PromptEncoder PromptEncoder::load(Weights& w, const Sam2Config& c, const std::string& prefix) {
  check(c.backbone_stride > 0 && c.image_size % c.backbone_stride == 0,
        "sam2_config: image_size must be a multiple of backbone_stride");
  PromptEncoder p;
  p.embed_dim = c.hidden_dim;
  p.grid = c.image_size / c.backbone_stride;
  const int64_t d = p.embed_dim;
  p.gaussian = w.f32(prefix + "pe_layer.positional_encoding_gaussian_matrix", {2, d / 2}, Init::Gaussian);
  for (int i = 0; i < 4; ++i)
    p.point_embeddings[i] = w.f32(prefix + "point_embeddings." + std::to_string(i) + ".weight", {1, d}, Init::Small);
  p.not_a_point = w.f32(prefix + "not_a_point_embed.weight", {1, d}, Init::Small);
  p.no_mask = w.f32(prefix + "no_mask_embed.weight", {1, d}, Init::Small);
  // mask_downscaling: conv(1→4, k2 s2), LN2d, GELU, conv(4→16, k2 s2), LN2d, GELU, conv(16→d, k1).
  const int64_t mask_in = 16, chans[3][2] = {{1, mask_in / 4}, {mask_in / 4, mask_in}, {mask_in, d}};
  const int idx[3] = {0, 3, 6}, norm_idx[2] = {1, 4};
  for (int i = 0; i < 3; ++i) {
    const std::string n = prefix + "mask_downscaling." + std::to_string(idx[i]) + ".";
    const int64_t k = i < 2 ? 2 : 1;
    p.mask_down_w[i] = w.stored(n + "weight", {chans[i][1], chans[i][0], k, k});
    p.mask_down_b[i] = w.f32(n + "bias", {chans[i][1]}, Init::Bias);
  }
  for (int i = 0; i < 2; ++i) {
    const std::string n = prefix + "mask_downscaling." + std::to_string(norm_idx[i]) + ".";
    p.mask_norm_w[i] = w.f32(n + "weight", {chans[i][1]}, Init::NormWeight);
    p.mask_norm_b[i] = w.f32(n + "bias", {chans[i][1]}, Init::NormBias);
  }
  return p;
}

Tensor PromptEncoder::dense_pe() const {
  return ops::position_embedding_random(gaussian, grid);  // gaussian [2, embed_dim/2]
}

Tensor PromptEncoder::sparse_embeddings(const float* language_embedding) const {
  const int64_t tokens = language_embedding ? 3 : 2;
  Tensor out = Tensor::empty({tokens, embed_dim}, DType::F32, not_a_point.device());
  float* o = out.kernel_f32();
  const int64_t d = embed_dim;
  ops::copy_rows(not_a_point.kernel_f32(), d, o, d, 1, d);
  ops::copy_rows(not_a_point.kernel_f32(), d, o + d, d, 1, d);
  if (language_embedding) ops::copy_rows(language_embedding, d, o + 2 * d, d, 1, d);
  return out;
}

}  // namespace sa2va::sam2
