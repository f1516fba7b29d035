// SAM2 mask decoder (docs/sam2.md §3): two-way transformer between the prompt tokens and the
// image embedding, upscaling with the high-resolution backbone features, hypernetwork MLPs
// producing the mask logits, IoU and object-score heads. Also owns conv_s0/conv_s1, the 1×1
// convs that turn FPN levels 0/1 into the high-resolution features.
#pragma once
#include <string>
#include <vector>

#include "core/stages.h"
#include "core/tensor.h"
#include "io/config.h"
#include "io/weights.h"
#include "models/common/blocks.h"
#include "models/sam2/hiera.h"

namespace sa2va::sam2 {

// SAM2 MLP: Linear layers with ReLU between them (none after the last).
// Binds `<prefix>layers.{i}.weight/bias` for dims[0] → dims[1] → … → dims.back().
struct SamMlp {
  std::vector<WeightMatrix> w;
  std::vector<Tensor> b;
  static SamMlp load(Weights& wt, const std::string& prefix, const std::vector<int64_t>& dims);
  Tensor forward(const Tensor& x) const;  // [M, dims[0]] -> [M, dims.back()]
};

// SAM "Attention": q/k/v projections to an internal width (downsampled for cross attention),
// multi-head softmax(q·kᵀ/√d)·v, output projection back to the embedding width.
struct SamAttention {
  int64_t heads = 8, internal_dim = 256, embed_dim = 256;
  MultiHeadAttention attention;  // heads of internal_dim / heads
  WeightMatrix q_w, k_w, v_w, out_w;
  Tensor q_b, k_b, v_b, out_b;
  static SamAttention load(Weights& w, const std::string& prefix, int64_t embed_dim, int64_t heads, int64_t downsample);
  // q [nq, E], k/v [nk, E] -> [nq, E]
  Tensor forward(const Tensor& q, const Tensor& k, const Tensor& v) const;
};

struct TwoWayBlock {
  bool skip_first_layer_pe = false;
  SamAttention self_attn, cross_token_to_image, cross_image_to_token;
  Tensor norm_w[4], norm_b[4];
  FeedForward mlp;  // dim -> decoder_mlp_dim -> dim, ReLU
};

struct MaskDecoder {
  int64_t dim = 256, num_mask_tokens = 4;
  Tensor obj_score_token, iou_token, mask_tokens;  // [1, dim], [1, dim], [num_mask_tokens, dim]
  std::vector<TwoWayBlock> blocks;
  SamAttention final_attn;
  Tensor final_norm_w, final_norm_b;
  ConvWeight up1_w, up2_w;                  // ConvT 256→64, ConvT 64→32
  WeightMatrix conv_s0_w, conv_s1_w;        // 1×1 convs, applied as Linear layers on tokens
  Tensor up1_b, up_norm_w, up_norm_b, up2_b;       // (LayerNorm2d between the transposed convs)
  Tensor conv_s0_b, conv_s1_b;
  std::vector<SamMlp> hypernetworks;
  SamMlp iou_head, obj_score_head;

  // Binds `<prefix>*` (prefix ends with "sam_mask_decoder.").
  static MaskDecoder load(Weights& w, const Sam2Config& c, const std::string& prefix);

  // conv_s0(fpn level 0) [32, 4g, 4g] and conv_s1(fpn level 1) [64, 2g, 2g] (g = embedding grid).
  Tensor feat_s0(const TokenMap& fpn0) const;
  Tensor feat_s1(const TokenMap& fpn1) const;
  // The same over `rows` tokens of level `level` (0 or 1): out [rows, dim/8 or dim/4], bias added.
  void high_res_conv(int level, const float* fpn_rows, int64_t rows, float* out) const;

  struct Output {
    Tensor masks;        // [num_mask_tokens, 4g, 4g] low-resolution logits of every mask token
    Tensor iou;          // [num_mask_tokens] sigmoid IoU predictions
    Tensor mask_tokens_out;  // [num_mask_tokens, dim]
    float object_score_logit = 0;
  };
  // image_embedding/image_pe [dim, g, g]; sparse [S, dim]; dense [dim] (the same at every pixel).
  Output predict(const Tensor& image_embedding, const Tensor& image_pe, const Tensor& sparse, const float* dense,
                 const Tensor& feat_s0, const Tensor& feat_s1) const;
};

}  // namespace sa2va::sam2
