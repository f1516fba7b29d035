#include "models/sam2/sam2_image.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "core/error.h"
#include "core/profile.h"
#include "ops/ops.h"

namespace sa2va::sam2 {
namespace {
const std::string kPrefix = "grounding_encoder.sam2_model.";
}

Sam2Image Sam2Image::load(Weights& w, const ModelConfig& c) {
  Sam2Image s;
  s.config = c.sam2;
  const Sam2Config& sc = c.sam2;
  check(sc.fpn_d_model == sc.hidden_dim, "sam2_config: fpn d_model must equal hidden_dim");
  check(sc.image_size % 4 == 0 && sc.image_size > 0, "sam2_config: image_size must be a positive multiple of 4");
  s.trunk = HieraTrunk::load(w, sc, kPrefix + "image_encoder.trunk.");
  s.neck = FpnNeck::load(w, sc, kPrefix + "image_encoder.neck.");
  s.prompt_encoder = PromptEncoder::load(w, sc, kPrefix + "sam_prompt_encoder.");
  s.mask_decoder = MaskDecoder::load(w, sc, kPrefix + "sam_mask_decoder.");
  s.no_mem_embed = w.f32(kPrefix + "no_mem_embed", {1, 1, sc.hidden_dim}, Init::Small);
  s.no_mem_pos_enc = w.f32(kPrefix + "no_mem_pos_enc", {1, 1, sc.hidden_dim}, Init::Small);
  return s;
}

FrameFeatures Sam2Image::encode(const Tensor& image, const ExecContext& ctx) const {
  const profile::Scope timed("sam2.image_encoder");
  check(image.dim() == 3 && image.size(0) == 3 && image.size(1) == config.image_size &&
            image.size(2) == config.image_size && image.dtype() == DType::F32,
        "sam2: expected an F32 image [3, " + std::to_string(config.image_size) + ", " +
            std::to_string(config.image_size) + "], got " + shape_str(image.shape()));
  std::vector<TokenMap> trunk_levels;
  {
    const profile::Scope timed_trunk("sam2.hiera");
    trunk_levels = trunk.forward(image, ctx);
  }
  // FPN levels 0 and 1 feed only conv_s0/conv_s1: when they are lateral convs alone, both 1×1 convs
  // run a chunk of tokens at a time, so their 256-channel maps (85 MB at 1024x1024) never exist
  // whole. A recorded run makes them whole, to record them.
  const bool chunk_high_res = !ctx.recorder && !neck.takes_top_down(0) && !neck.takes_top_down(1);
  std::vector<TokenMap> levels;
  FrameFeatures f;
  {
    const profile::Scope timed_neck("sam2.fpn_neck");
    levels = neck.forward(trunk_levels, ctx, chunk_high_res ? 2 : 0);
    if (chunk_high_res) {
      f.feat_s0 = high_res_features(trunk_levels[0], 0);
      trunk_levels[0] = TokenMap();
      f.feat_s1 = high_res_features(trunk_levels[1], 1);
    }
  }
  check(levels.size() >= 3, "sam2: the FPN must keep at least 3 levels");
  const TokenMap& l2 = levels[2];
  check(l2.h == prompt_encoder.grid && l2.w == prompt_encoder.grid,
        "sam2: FPN level 2 is not the " + std::to_string(prompt_encoder.grid) + "² embedding grid");
  if (!chunk_high_res) {
    f.feat_s0 = mask_decoder.feat_s0(levels[0]);
    f.feat_s1 = mask_decoder.feat_s1(levels[1]);
  }
  f.fpn2 = l2.to_chw();
  f.pos2 = position_embedding_sine(neck.d_model, l2.h, l2.w);
  ctx.record("sam.feat_s0", f.feat_s0);
  ctx.record("sam.feat_s1", f.feat_s1);
  return f;
}

Tensor Sam2Image::conditioning_embedding(const FrameFeatures& f) const {
  const int64_t c = f.fpn2.size(0), hw = f.fpn2.size(1) * f.fpn2.size(2);
  Tensor out = f.fpn2.clone();
  ops::add_per_row(out.kernel_f32(), no_mem_embed.kernel_f32(), c, hw);  // channel c gets no_mem_embed[c]
  return out;
}

Tensor Sam2Image::high_res_features(const TokenMap& stage, int level) const {
  const int64_t n = stage.h * stage.w, chunk = std::min(n, kTokensPerChunk);
  const int64_t levels = static_cast<int64_t>(neck.in_channels.size());
  check(level < levels && stage.channels() == neck.in_channels[static_cast<size_t>(levels - 1 - level)],
        "FPN: stage " + std::to_string(level) + " has " + std::to_string(stage.channels()) +
            " channels, not what its lateral conv takes");
  const int64_t channels = (level == 0 ? mask_decoder.conv_s0_w : mask_decoder.conv_s1_w).rows();
  const Device device = stage.tokens.device();
  const Tensor lateral = Tensor::empty({chunk, neck.d_model}, DType::F32, device);
  TokenMap out{Tensor::empty({n, channels}, DType::F32, device), stage.h, stage.w};
  for (int64_t t0 = 0; t0 < n; t0 += chunk) {
    const int64_t rows = std::min(chunk, n - t0);
    neck.lateral(level, stage.tokens.kernel_f32() + t0 * stage.channels(), rows, lateral.kernel_f32());
    mask_decoder.high_res_conv(level, lateral.kernel_f32(), rows, out.tokens.kernel_f32() + t0 * channels);
  }
  return out.to_chw();
}

DecoderOutput Sam2Image::decode(const Tensor& image_embedding, const FrameFeatures& f, const float* language_embedding,
                                const ExecContext& ctx) const {
  const Tensor image_pe = prompt_encoder.dense_pe();
  const profile::Scope timed("sam2.mask_decoder");
  const Tensor sparse = prompt_encoder.sparse_embeddings(language_embedding);
  const float* dense = prompt_encoder.dense_embedding();
  if (ctx.recorder) {
    ctx.record("sam.image_pe", image_pe);
    ctx.record("sam.decoder.image_embeddings", image_embedding);
    ctx.record("sam.decoder.dense_prompt_embeddings.0_0", prompt_encoder.no_mask.view({config.hidden_dim}));
    ctx.record("sam.decoder.sparse_prompt_embeddings", sparse);
  }
  const MaskDecoder::Output m =
      mask_decoder.predict(image_embedding.contiguous(), image_pe, sparse, dense, f.feat_s0, f.feat_s1);

  // Multimask output: candidates are mask tokens 1..n-1; pick the highest predicted IoU.
  const int64_t n = mask_decoder.num_mask_tokens;
  const Tensor host_iou = m.iou.to(Device::cpu());  // the choice is made on the host
  const float* iou = host_iou.f32();
  int64_t best = 1;
  for (int64_t i = 2; i < n; ++i)
    if (iou[i] > iou[best]) best = i;
  if (ctx.recorder) {
    ctx.record("sam.decoder.low_res_multimasks", m.masks.slice(0, 1, n));
    ctx.record("sam.decoder.iou_pred", m.iou.slice(0, 1, n));
    ctx.record("sam.decoder.object_score_logits", Tensor::from_vector({m.object_score_logit}, {1}));
    ctx.record("sam.decoder.sam_tokens_out", m.mask_tokens_out.slice(0, 1, n));
  }
  DecoderOutput out;
  out.low_res_mask = m.masks.select(0, best).clone();
  out.sam_token = m.mask_tokens_out.select(0, best).clone();
  out.iou = iou[best];
  out.object_score_logit = m.object_score_logit;
  return out;
}

DecoderOutput Sam2Image::decode_conditioning(const FrameFeatures& f, const float* language_embedding,
                                             const ExecContext& ctx) const {
  return decode(conditioning_embedding(f), f, language_embedding, ctx);
}

double Sam2Image::encoder_flops() const {
  const int64_t s = config.image_size / 4;
  std::vector<int64_t> level_pixels;
  int64_t side = s;
  for (size_t i = 0; i < trunk.stage_ends.size(); ++i) {
    level_pixels.push_back(side * side);
    side /= 2;
  }
  const double d = static_cast<double>(config.hidden_dim);
  return trunk.flops(config.image_size) + neck.flops(level_pixels) + 2.0 * d * (d / 8) * static_cast<double>(s * s) +
         2.0 * d * (d / 4) * static_cast<double>(s * s / 4);
}

}  // namespace sa2va::sam2
