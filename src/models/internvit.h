// InternViT-300M-448px vision encoder and the mlp1 projector (docs/internvit.md, docs/preprocess.md §3).
//
// pixel_values [n,3,H,W] -> patch conv 14x14 -> [CLS, patches] + position embedding ->
// pre-norm encoder layers with layer scale -> drop CLS -> pixel shuffle (0.5, v2) -> mlp1 ->
// vit_embeds [n,(H/28)·(W/28),D] (256 tokens per 448 tile).
#pragma once
#include <vector>

#include "core/context.h"
#include "core/stages.h"
#include "core/tensor.h"
#include "io/config.h"
#include "io/weights.h"
#include "models/common/blocks.h"

namespace sa2va {

struct VisionEncoderLayer {
  Tensor norm1_weight, norm1_bias;  // LayerNorm before attention
  WeightMatrix qkv_weight;          // [3C, C]: rows Q | K | V, heads contiguous inside each block
  Tensor qkv_bias;
  WeightMatrix proj_weight;
  Tensor proj_bias;
  Tensor ls1;                       // layer scale on the attention branch [C]
  Tensor norm2_weight, norm2_bias;  // LayerNorm before the MLP
  FeedForward mlp;                  // fc1 -> GELU -> fc2
  Tensor ls2;                       // layer scale on the MLP branch [C]
};

struct VisionEncoder {
  int hidden_size = 0, num_heads = 0, patch_size = 0, checkpoint_grid = 0;  // grid of position_embedding
  int layers_to_run = 0;  // from select_layer: the encoder output taken is hidden_states[layers_to_run]
  float layer_norm_eps = 1e-6f;
  MultiHeadAttention attention;     // every layer's self-attention setup

  ConvWeight patch_weight;          // Conv2d(3 -> C, kernel = stride = patch)
  Tensor patch_bias;
  Tensor class_embedding;           // [C]
  Tensor position_embedding;        // [1 + grid², C]
  std::vector<VisionEncoderLayer> layers;

  // mlp1: LayerNorm(4C, eps 1e-5) -> Linear(4C, D) -> GELU -> Linear(D, D)
  Tensor mlp_norm_weight, mlp_norm_bias;
  FeedForward projector;
  int output_size = 0;  // D (the LLM's hidden size)

  static VisionEncoder load(Weights& w, const ModelConfig& c);

  // pixel_values: F32 [n,3,H,W], normalised (docs/preprocess.md §2.3); H = W, a multiple of 2·patch.
  // Returns vit_embeds F32 [n,(H/(2·patch))²,D]. Records "vit.last_hidden_state" [n,1+(H/patch)²,C]
  // and "vit_embeds".
  Tensor forward(const Tensor& pixel_values, const ExecContext& ctx = {}) const;
  // The same up to the pixel shuffle, without mlp1: F32 [n,(H/(2·patch))²,4C], what training feeds
  // its own (trained) mlp1.
  Tensor shuffled_features(const Tensor& pixel_values) const;

 private:
  Tensor encode(const Tensor& pixel_values, const ExecContext& ctx, bool through_mlp1) const;
  Tensor position_table(int64_t grid) const;  // [1 + grid², C], resampled when grid != checkpoint_grid
  struct LayerScratch;
  void run_layer(const VisionEncoderLayer& layer, float* x, int64_t tokens, LayerScratch& scratch) const;
  Tensor project(const Tensor& patch_tokens, int64_t grid) const;  // [grid², C] -> [(grid/2)², D]
};

}  // namespace sa2va
