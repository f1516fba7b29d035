#include "models/seg_projector.h"

#include "core/error.h"
#include "ops/ops.h"

namespace sa2va {

SegProjector SegProjector::load(Weights& w, const ModelConfig& c) {
  const int64_t D = c.llm.hidden_size;
  SegProjector p;
  p.fc1_weight = w.matrix("text_hidden_fcs.0.weight", {D, D});
  p.fc1_bias = w.f32("text_hidden_fcs.0.bias", {D}, Init::Bias);
  p.fc2_weight = w.matrix("text_hidden_fcs.2.weight", {kOutDim, D});
  p.fc2_bias = w.f32("text_hidden_fcs.2.bias", {kOutDim}, Init::Bias);
  return p;
}

Tensor SegProjector::forward(const Tensor& seg_hidden) const {
  const int64_t D = fc1_weight.cols();
  check(seg_hidden.defined() && seg_hidden.dim() == 2 && seg_hidden.size(1) == D,
        "text_hidden_fcs: [SEG] hidden states " +
            (seg_hidden.defined() ? shape_str(seg_hidden.shape()) : std::string("(none)")) + " are not [S, " +
            std::to_string(D) + "]");
  if (seg_hidden.size(0) == 0) return Tensor::zeros({0, kOutDim});
  Tensor h = ops::linear(seg_hidden.dtype() == DType::F32 ? seg_hidden : seg_hidden.to(DType::F32), fc1_weight,
                         fc1_bias);
  ops::relu(h.f32(), h.numel());
  return ops::linear(h, fc2_weight, fc2_bias);
}

}  // namespace sa2va
