// SAM2 memory encoder (docs/sam2.md §4): turns a frame's level-2 features and its chosen
// high-resolution mask logits into the 64-channel memory that later frames attend to.
//
//   m = sigmoid(mask)·20 − 10 -> mask downsampler (4× conv k3 s2 + LayerNorm2d + GELU, conv 1×1)
//   x = pix_feat_proj(pix_feat) + m -> fuser (CXBlocks) -> out_proj (1×1, 256 -> 64)
//
// The features are rounded to bf16 in every precision mode, as upstream stores them.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/stages.h"
#include "core/tensor.h"
#include "io/config.h"
#include "io/weights.h"

namespace sa2va::sam2 {

struct MaskDownsamplerStage {
  ConvWeight conv_w;      // Conv2d k3 s2 p1
  Tensor conv_b;
  Tensor norm_w, norm_b;  // LayerNorm2d
};

// ConvNeXt block: x + g ⊙ pwconv2(GELU(pwconv1(LN2d(dwconv(x))))).
struct CXBlock {
  ConvWeight dwconv_w;          // depthwise [C, 1, k, k]
  Tensor dwconv_b;
  Tensor norm_w, norm_b;
  WeightMatrix pwconv1_w, pwconv2_w;  // Linear C -> 4C, Linear 4C -> C
  Tensor pwconv1_b, pwconv2_b;
  Tensor g_weight;              // layer scale [C]
};

struct MemoryEncoder {
  int64_t hidden_dim = 0, out_dim = 0, kernel = 0;
  float sigmoid_scale = 20.f, sigmoid_bias = -10.f;
  std::vector<MaskDownsamplerStage> downsampler;
  ConvWeight downsampler_proj_w, pix_feat_proj_w;  // final 1×1 conv of the mask downsampler; 1×1 conv
  Tensor downsampler_proj_b, pix_feat_proj_b;
  std::vector<CXBlock> fuser;
  ConvWeight out_proj_w;
  Tensor out_proj_b;
  // Top-level `mask_downsample` conv: unused by Sa2VA inference, bound so checkpoints stay complete.
  Tensor unused_mask_downsample_w, unused_mask_downsample_b;

  // Binds `<prefix>memory_encoder.*` and `<prefix>mask_downsample.*` (prefix ends with "sam2_model.").
  static MemoryEncoder load(Weights& w, const Sam2Config& c, const std::string& prefix);

  // pix_feat: F32 [hidden, h, w] raw level-2 features of the frame; mask_logits: F32 [1, 16h, 16w]
  // (or [16h, 16w]) chosen high-resolution mask logits. Returns the bf16-rounded memory features
  // F32 [out_dim, h, w].
  Tensor forward(const Tensor& pix_feat, const Tensor& mask_logits) const;
};

}  // namespace sa2va::sam2
