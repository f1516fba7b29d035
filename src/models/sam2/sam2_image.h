// SAM2 image path as Sa2VA uses it (docs/sam2.md §1-§3): image encoder (Hiera trunk + FPN neck),
// prompt encoder and mask decoder, plus the top-level `no_mem_embed` / `no_mem_pos_enc`.
//
// Stable API shared with the video tracker (memory encoder / memory attention live elsewhere):
//   FrameFeatures f = sam.encode(image);                 // once per frame
//   Tensor emb = sam.conditioning_embedding(f);           // conditioning frame: fpn2 + no_mem_embed
//         (or the memory-attention output [256, 64, 64] for a tracked frame)
//   DecoderOutput o = sam.decode(emb, f, language_embedding /* 256 floats or nullptr */);
// Multimask output is always on (as in Sa2VA): masks 1..3 are candidates, the one with the highest
// predicted IoU (first on ties) is selected. Masks are NOT replaced when the object is absent.
#pragma once
#include <string>

#include "core/context.h"
#include "core/stages.h"
#include "core/tensor.h"
#include "io/config.h"
#include "io/weights.h"
#include "models/sam2/fpn_neck.h"
#include "models/sam2/hiera.h"
#include "models/sam2/mask_decoder.h"
#include "models/sam2/prompt_encoder.h"

namespace sa2va::sam2 {

// Per-frame backbone outputs (g = image_size / backbone_stride = 64 for real checkpoints).
struct FrameFeatures {
  Tensor fpn2;     // F32 [256, g, g]   raw FPN level 2 ("vision_features"; memory-encoder input)
  Tensor pos2;     // F32 [256, g, g]   sine position encoding of level 2 (memory-attention curr_pos)
  Tensor feat_s0;  // F32 [32, 4g, 4g]  conv_s0(FPN level 0)
  Tensor feat_s1;  // F32 [64, 2g, 2g]  conv_s1(FPN level 1)
};

struct DecoderOutput {
  Tensor low_res_mask;            // F32 [4g, 4g] logits of the selected mask
  Tensor sam_token;               // F32 [256] mask-token output of the selected mask (object-pointer input)
  float iou = 0;                  // predicted IoU of the selected mask
  float object_score_logit = 0;   // > 0: object present
};

struct Sam2Image {
  Sam2Config config;
  HieraTrunk trunk;
  FpnNeck neck;
  PromptEncoder prompt_encoder;
  MaskDecoder mask_decoder;
  Tensor no_mem_embed;    // [1, 1, 256]
  Tensor no_mem_pos_enc;  // [1, 1, 256] (bound, unused: directly_add_no_mem_embed)

  // Binds grounding_encoder.sam2_model.{image_encoder.*, sam_prompt_encoder.*, sam_mask_decoder.*,
  // no_mem_embed, no_mem_pos_enc}. Memory modules are bound by the video tracker.
  static Sam2Image load(Weights& w, const ModelConfig& c);

  // image: F32 [3, S, S] normalised SAM2 input (S = image_size). Records sam.trunk.*, sam.fpn.*,
  // sam.feat_s0, sam.feat_s1 (full tensors).
  FrameFeatures encode(const Tensor& image, const ExecContext& ctx = {}) const;

  // conv_s0/conv_s1 (level 0/1) of the FPN level made from trunk `stage`, a chunk of tokens at a time:
  // F32 [channels, h, w].
  Tensor high_res_features(const TokenMap& stage, int level) const;

  // fpn2 + no_mem_embed: the mask-decoder input of a conditioning frame (no memory).
  Tensor conditioning_embedding(const FrameFeatures& f) const;

  // image_embedding: [256, g, g] (conditioning embedding or memory-conditioned features);
  // language_embedding: 256 floats in the model's device memory ([SEG] prompt) or nullptr (tracking: two padding points only).
  // Records sam.image_pe, sam.decoder.{image_embeddings, dense_prompt_embeddings.0_0,
  // sparse_prompt_embeddings, low_res_multimasks, iou_pred, object_score_logits, sam_tokens_out}.
  DecoderOutput decode(const Tensor& image_embedding, const FrameFeatures& f, const float* language_embedding,
                       const ExecContext& ctx = {}) const;

  // decode(conditioning_embedding(f), f, language_embedding, rec).
  DecoderOutput decode_conditioning(const FrameFeatures& f, const float* language_embedding,
                                    const ExecContext& ctx = {}) const;

  // FLOPs of encode() (trunk, neck, conv_s0/conv_s1), for benchmarks.
  double encoder_flops() const;
};

}  // namespace sa2va::sam2
