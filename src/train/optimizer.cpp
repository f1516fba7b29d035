#include "train/optimizer.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace sa2va::train {

double global_grad_norm(const std::vector<std::pair<const float*, int64_t>>& grads) {
  double sum = 0;
  for (const auto& [g, n] : grads)
    for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(g[i]) * g[i];
  return std::sqrt(sum);
}

float clip_coefficient(double norm, float max_norm) {
  const float coef = max_norm / (static_cast<float>(norm) + 1e-6f);
  return std::min(coef, 1.0f);
}

void adamw_step(float* param, const float* grad, float grad_scale, int64_t n, AdamWState& state, int64_t step,
                const AdamWOptions& o) {
  check(step >= 1, "adamw: steps count from 1");
  if (state.exp_avg.empty()) {
    state.exp_avg.assign(static_cast<size_t>(n), 0.0f);
    state.exp_avg_sq.assign(static_cast<size_t>(n), 0.0f);
  }
  check(static_cast<int64_t>(state.exp_avg.size()) == n, "adamw: the moment buffers do not match the tensor");
  // The scalars as torch forms them: Python doubles, each rounded to f32 where it meets the tensor.
  const double lr = o.lr, wd = o.weight_decay, b1 = o.beta1, b2 = o.beta2;
  const float decay = static_cast<float>(1.0 - lr * wd);
  const float one_minus_b1 = static_cast<float>(1.0 - b1), one_minus_b2 = static_cast<float>(1.0 - b2);
  const double bias1 = 1.0 - std::pow(b1, static_cast<double>(step));
  const double bias2 = 1.0 - std::pow(b2, static_cast<double>(step));
  const float step_size = static_cast<float>(lr / bias1);
  const float bias2_sqrt = static_cast<float>(std::sqrt(bias2));
  for (int64_t i = 0; i < n; ++i) {
    const float g = grad[i] * grad_scale;
    float& m = state.exp_avg[static_cast<size_t>(i)];
    float& v = state.exp_avg_sq[static_cast<size_t>(i)];
    param[i] *= decay;
    m = m * o.beta1 + g * one_minus_b1;
    v = v * o.beta2 + g * g * one_minus_b2;
    const float denom = std::sqrt(v) / bias2_sqrt + o.eps;
    param[i] += -step_size * (m / denom);
  }
}

}  // namespace sa2va::train
