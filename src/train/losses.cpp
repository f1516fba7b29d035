#include "train/losses.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "ops/ops.h"

namespace sa2va::train {
namespace {

// Upstream divides by python floats that torch rounds to f32: M·P + 1e-4 + 2⁻²³ and M + 1e-4 + 2⁻²³.
float average_denominator(int64_t count) {
  return static_cast<float>(static_cast<double>(count) + 1e-4 + 1.1920928955078125e-07);
}

// Pixel coordinate of a point coordinate in [0, 1] for grid_sample with align_corners = false:
// g = 2p - 1, x = ((g + 1)·W − 1) / 2, all in f32 as upstream.
float pixel_coordinate(float p, int64_t size) {
  const float g = 2.0f * p - 1.0f;
  return ((g + 1.0f) * static_cast<float>(size) - 1.0f) / 2.0f;
}

struct Taps {
  int64_t x0, y0;
  float wx1, wy1;  // weights of x0 + 1 and y0 + 1
};
Taps taps_of(float px, float py, int64_t w, int64_t h) {
  const float x = pixel_coordinate(px, w), y = pixel_coordinate(py, h);
  const float fx = std::floor(x), fy = std::floor(y);
  return {static_cast<int64_t>(fx), static_cast<int64_t>(fy), x - fx, y - fy};
}

void check_points(const Tensor& maps, const Tensor& points) {
  check(maps.defined() && maps.dim() == 3 && maps.dtype() == DType::F32, "point_sample: maps must be F32 [M, H, W]");
  check(points.defined() && points.dim() == 3 && points.dtype() == DType::F32 && points.size(0) == maps.size(0) &&
            points.size(2) == 2,
        "point_sample: points must be F32 [M, P, 2] with M = " + std::to_string(maps.size(0)));
}

}  // namespace

Tensor resize_masks_nearest(const uint8_t* masks, int64_t m, int64_t h, int64_t w, int64_t out) {
  Tensor src = Tensor::empty({m, h, w});
  float* s = src.f32();
  for (int64_t i = 0; i < m * h * w; ++i) s[i] = masks[i] ? 1.0f : 0.0f;
  return ops::interpolate_nearest(src, out, out);
}

Tensor point_sample(const Tensor& maps, const Tensor& points) {
  check_points(maps, points);
  const int64_t m = maps.size(0), h = maps.size(1), w = maps.size(2), p = points.size(1);
  const Tensor mc = maps.contiguous(), pc = points.contiguous();
  Tensor out = Tensor::empty({m, p});
  const float* pts = pc.f32();
  float* o = out.f32();
  for (int64_t k = 0; k < m; ++k) {
    const float* map = mc.f32() + k * h * w;
    const auto at = [&](int64_t y, int64_t x) { return (x < 0 || y < 0 || x >= w || y >= h) ? 0.0f : map[y * w + x]; };
    for (int64_t i = 0; i < p; ++i) {
      const Taps t = taps_of(pts[(k * p + i) * 2], pts[(k * p + i) * 2 + 1], w, h);
      // grid_sample's order: north-west, north-east, south-west, south-east.
      o[k * p + i] = at(t.y0, t.x0) * (1 - t.wx1) * (1 - t.wy1) + at(t.y0, t.x0 + 1) * t.wx1 * (1 - t.wy1) +
                     at(t.y0 + 1, t.x0) * (1 - t.wx1) * t.wy1 + at(t.y0 + 1, t.x0 + 1) * t.wx1 * t.wy1;
    }
  }
  return out;
}

void point_sample_backward(const Tensor& grad_out, const Tensor& points, Tensor& grad_maps) {
  check_points(grad_maps, points);
  check(grad_maps.is_contiguous(), "point_sample_backward: grad_maps must be contiguous");
  const int64_t m = grad_maps.size(0), h = grad_maps.size(1), w = grad_maps.size(2), p = points.size(1);
  check(grad_out.defined() && grad_out.dtype() == DType::F32 && grad_out.numel() == m * p,
        "point_sample_backward: grad_out must be F32 [M, P]");
  const Tensor gc = grad_out.contiguous(), pc = points.contiguous();
  const float* pts = pc.f32();
  for (int64_t k = 0; k < m; ++k) {
    float* map = grad_maps.f32() + k * h * w;
    const auto add = [&](int64_t y, int64_t x, float v) {
      if (x >= 0 && y >= 0 && x < w && y < h) map[y * w + x] += v;
    };
    for (int64_t i = 0; i < p; ++i) {
      const Taps t = taps_of(pts[(k * p + i) * 2], pts[(k * p + i) * 2 + 1], w, h);
      const float g = gc.f32()[k * p + i];
      add(t.y0, t.x0, g * (1 - t.wx1) * (1 - t.wy1));
      add(t.y0, t.x0 + 1, g * t.wx1 * (1 - t.wy1));
      add(t.y0 + 1, t.x0, g * (1 - t.wx1) * t.wy1);
      add(t.y0 + 1, t.x0 + 1, g * t.wx1 * t.wy1);
    }
  }
}

MaskLosses point_mask_losses(const Tensor& logits, const Tensor& targets, MaskLossWeights weights) {
  check(logits.defined() && logits.dim() == 2 && logits.dtype() == DType::F32, "mask losses: logits must be F32 [M, P]");
  check(targets.defined() && targets.shape() == logits.shape() && targets.dtype() == DType::F32,
        "mask losses: targets must match the logits' shape " + shape_str(logits.shape()));
  const int64_t m = logits.size(0), p = logits.size(1);
  const Tensor xc = logits.contiguous(), tc = targets.contiguous();
  const float* x = xc.f32();
  const float* t = tc.f32();
  MaskLosses out;
  out.grad_logits = Tensor::empty({m, p});
  float* g = out.grad_logits.f32();
  const float bce_scale = weights.mask / average_denominator(m * p);
  const float dice_scale = weights.dice / average_denominator(m);
  double bce_sum = 0, dice_sum = 0;
  std::vector<float> s(static_cast<size_t>(p));
  for (int64_t k = 0; k < m; ++k) {
    double st = 0, ss = 0, tt = 0;
    for (int64_t i = 0; i < p; ++i) {
      const float xi = x[k * p + i], ti = t[k * p + i];
      // (1 − t)·x + log(1 + e^(−x)) in its stable form.
      bce_sum += std::max(xi, 0.0f) - xi * ti + std::log1p(std::exp(-std::fabs(xi)));
      const float si = 1.0f / (1.0f + std::exp(-xi));
      s[static_cast<size_t>(i)] = si;
      st += static_cast<double>(si) * ti;
      ss += si;
      tt += ti;
    }
    const double a = 2 * st + 1, b = ss + tt + 1;
    const double dice = 1 - a / b;
    out.dice_per_mask.push_back(static_cast<float>(dice));
    dice_sum += dice;
    for (int64_t i = 0; i < p; ++i) {
      const double si = s[static_cast<size_t>(i)], ti = t[k * p + i];
      const double d_dice_d_s = (a - 2 * ti * b) / (b * b);  // d(1 − a/b)/ds
      g[k * p + i] = static_cast<float>(bce_scale * (si - ti) + dice_scale * d_dice_d_s * si * (1 - si));
    }
  }
  out.mask = static_cast<float>(bce_sum) * bce_scale;
  out.dice = static_cast<float>(dice_sum) * dice_scale;
  return out;
}

Tensor sample_uncertain_points(const Tensor& logits, int64_t num_points, float oversample, float importance,
                               SplitMix64& rng) {
  check(logits.defined() && logits.dim() == 3 && logits.dtype() == DType::F32, "point choice: logits must be F32 [M, H, W]");
  check(num_points > 0 && oversample >= 1.0f && importance >= 0.0f && importance <= 1.0f,
        "point choice: needs points > 0, oversample >= 1 and importance in [0, 1]");
  const int64_t m = logits.size(0);
  const int64_t candidates = static_cast<int64_t>(static_cast<double>(num_points) * oversample);
  const int64_t uncertain = static_cast<int64_t>(static_cast<double>(num_points) * importance);
  Tensor coords = Tensor::empty({m, candidates, 2});
  for (int64_t i = 0; i < coords.numel(); ++i) coords.f32()[i] = rng.uniform();
  const Tensor values = point_sample(logits, coords);  // [M, candidates]
  Tensor out = Tensor::empty({m, num_points, 2});
  std::vector<int64_t> order(static_cast<size_t>(candidates));
  for (int64_t k = 0; k < m; ++k) {
    const float* v = values.f32() + k * candidates;
    for (int64_t c = 0; c < candidates; ++c) order[static_cast<size_t>(c)] = c;
    std::partial_sort(order.begin(), order.begin() + uncertain, order.end(), [v](int64_t a, int64_t b) {
      const float ua = std::fabs(v[a]), ub = std::fabs(v[b]);
      return ua < ub || (ua == ub && a < b);
    });
    float* dst = out.f32() + k * num_points * 2;
    for (int64_t p = 0; p < uncertain; ++p) {
      const float* src = coords.f32() + (k * candidates + order[static_cast<size_t>(p)]) * 2;
      dst[2 * p] = src[0];
      dst[2 * p + 1] = src[1];
    }
  }
  for (int64_t k = 0; k < m; ++k)
    for (int64_t p = uncertain; p < num_points; ++p) {
      float* dst = out.f32() + (k * num_points + p) * 2;
      dst[0] = rng.uniform();
      dst[1] = rng.uniform();
    }
  return out;
}

SupervisedTokens supervised_tokens(const std::vector<int64_t>& labels) {
  SupervisedTokens out;
  for (size_t t = 0; t + 1 < labels.size(); ++t)
    if (labels[t + 1] != -100) {
      out.rows.push_back(static_cast<int64_t>(t));
      out.targets.push_back(labels[t + 1]);
    }
  return out;
}

TokenLoss cross_entropy(const Tensor& logits, const std::vector<int64_t>& targets, Tensor* grad_logits,
                        float grad_scale) {
  check(logits.defined() && logits.dim() == 2 && logits.dtype() == DType::F32, "cross entropy: logits must be F32 [R, V]");
  const int64_t n = logits.size(0), v = logits.size(1);
  check(static_cast<int64_t>(targets.size()) == n, "cross entropy: " + std::to_string(targets.size()) +
                                                       " targets for " + std::to_string(n) + " logit rows");
  const Tensor lc = logits.contiguous();
  TokenLoss out;
  if (grad_logits) *grad_logits = Tensor::empty({n, v});
  double sum = 0;
  for (int64_t t = 0; t < n; ++t) {
    const int64_t target = targets[static_cast<size_t>(t)];
    check(target >= 0 && target < v, "cross entropy: label " + std::to_string(target) + " outside the vocabulary of " +
                                         std::to_string(v));
    const float* row = lc.f32() + t * v;
    const float peak = *std::max_element(row, row + v);
    double z = 0;
    for (int64_t j = 0; j < v; ++j) z += std::exp(static_cast<double>(row[j]) - peak);
    const double log_z = std::log(z) + peak;
    const double ce = log_z - row[target];
    out.per_token.push_back(static_cast<float>(ce));
    sum += ce;
    if (grad_logits) {
      float* g = grad_logits->f32() + t * v;
      for (int64_t j = 0; j < v; ++j) g[j] = static_cast<float>(std::exp(row[j] - log_z) * grad_scale);
      g[target] -= grad_scale;
    }
  }
  out.loss = n ? static_cast<float>(sum / static_cast<double>(n)) : 0.0f;
  return out;
}

}  // namespace sa2va::train
