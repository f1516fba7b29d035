// SAM2 prompt encoder as Sa2VA uses it (docs/sam2.md §2): no points, boxes or mask inputs.
// The sparse prompt is two "not a point" embeddings, followed by the [SEG] language embedding
// when there is one; the dense prompt is `no_mask_embed` everywhere; the image positional
// encoding is the random-Fourier `PositionEmbeddingRandom` of the embedding grid.
#pragma once
#include <string>

#include "core/tensor.h"
#include "io/config.h"
#include "io/weights.h"

namespace sa2va::sam2 {

struct PromptEncoder {
  int64_t embed_dim = 256;
  int64_t grid = 64;  // image_size / backbone_stride
  Tensor gaussian;    // pe_layer.positional_encoding_gaussian_matrix [2, embed_dim/2]
  Tensor not_a_point; // [1, embed_dim]
  Tensor no_mask;     // [1, embed_dim]
  // Bound so that checkpoints round-trip; Sa2VA never prompts with points or masks.
  Tensor point_embeddings[4];
  Tensor mask_down_w[3], mask_down_b[3], mask_norm_w[2], mask_norm_b[2];

  // Binds `<prefix>*` (prefix ends with "sam_prompt_encoder.").
  static PromptEncoder load(Weights& w, const Sam2Config& c, const std::string& prefix);

  // F32 [embed_dim, grid, grid]: [sin(2π·p), cos(2π·p)] with p = (2·(c+½)/grid − 1, 2·(r+½)/grid − 1) · G.
  Tensor dense_pe() const;
  // F32 [2, embed_dim] = [NAP, NAP], or [3, embed_dim] = [NAP, NAP, language] when given.
  Tensor sparse_embeddings(const float* language_embedding) const;
  // The dense prompt at every pixel: no_mask_embed [embed_dim].
  const float* dense_embedding() const { return no_mask.kernel_f32(); }  // for the ops, on the model's device
};

}  // namespace sa2va::sam2
