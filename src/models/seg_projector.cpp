#include "models/seg_projector.h"

#include "core/error.h"
#include "ops/ops.h"

namespace sa2va {

SegProjector SegProjector::load(Weights& w, const ModelConfig& c) {
  const int64_t D = c.llm.hidden_size;
  SegProjector p;
  p.mlp = FeedForward::load(w, "text_hidden_fcs.0.", "text_hidden_fcs.2.", D, D, kOutDim, Activation::Relu);
  return p;
}

Tensor SegProjector::forward(const Tensor& seg_hidden) const {
  const int64_t D = mlp.in_features();
  check(seg_hidden.defined() && seg_hidden.dim() == 2 && seg_hidden.size(1) == D,
        "text_hidden_fcs: [SEG] hidden states " +
            (seg_hidden.defined() ? shape_str(seg_hidden.shape()) : std::string("(none)")) + " are not [S, " +
            std::to_string(D) + "]");
  if (seg_hidden.size(0) == 0) return Tensor::zeros({0, kOutDim});
  return mlp.forward(seg_hidden.dtype() == DType::F32 ? seg_hidden : seg_hidden.to(DType::F32));
}

}  // namespace sa2va
