// text_hidden_fcs (docs/glue.md §1): maps the final-norm hidden state of each [SEG] token to the
// 256-d language embedding that prompts SAM2: Linear(D, D) → ReLU → Linear(D, 256).
#pragma once
#include "core/tensor.h"
#include "io/config.h"
#include "io/weights.h"
#include "models/common/blocks.h"

namespace sa2va {

struct SegProjector {
  static constexpr int kOutDim = 256;
  FeedForward mlp;  // D -> D -> 256, ReLU

  // Binds text_hidden_fcs.0.* and text_hidden_fcs.2.*.
  static SegProjector load(Weights& w, const ModelConfig& c);
  // seg_hidden [S, D] → [S, 256] (S may be 0).
  Tensor forward(const Tensor& seg_hidden) const;
};

}  // namespace sa2va
