// The optimiser step upstream takes (docs/training.md §3): the gradients of all trainable tensors
// clipped together to a global L2 norm, then AdamW (decoupled weight decay) on every tensor, as
// torch 1.13's single-tensor AdamW computes it in f32.
#pragma once
#include <cstdint>
#include <vector>

namespace sa2va::train {

// sqrt(Σ over tensors of ||g||²), accumulated in double.
double global_grad_norm(const std::vector<std::pair<const float*, int64_t>>& grads);
// min(1, max_norm / (norm + 1e-6)) in f32, as torch's clip_grad_norm_ (and DeepSpeed ZeRO-2).
float clip_coefficient(double norm, float max_norm);

struct AdamWOptions {
  float lr = 4e-5f;
  float beta1 = 0.9f, beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.05f;
};

// Moment buffers of one tensor.
struct AdamWState {
  std::vector<float> exp_avg, exp_avg_sq;
};

// One step (step = 1, 2, ...) on n parameters with gradient g·grad_scale (grad_scale carries the
// clip coefficient). A tensor with a zero gradient is still decayed, as under upstream's ZeRO-2.
void adamw_step(float* param, const float* grad, float grad_scale, int64_t n, AdamWState& state, int64_t step,
                const AdamWOptions& options);

}  // namespace sa2va::train
