// The training losses of Sa2VA, forward and backward, as upstream computes them (docs/training.md §2):
// the shifted token cross-entropy of the language model and the point-sampled BCE and dice losses
// on SAM2's 256 x 256 low-resolution mask logits.
#pragma once
#include <cstdint>
#include <vector>

#include "core/random.h"
#include "core/tensor.h"

namespace sa2va::train {

// Ground-truth masks [M, H, W] (0/1 bytes) to [M, out, out] floats by legacy nearest resizing
// (source index floor(dst · in/out) in f32, clamped), as the mask targets are made.
Tensor resize_masks_nearest(const uint8_t* masks, int64_t m, int64_t h, int64_t w, int64_t out);

// Values of maps [M, H, W] at points [M, P, 2] (x, y in [0, 1]) by bilinear sampling with
// align_corners = false and zero padding (mmcv point_sample = grid_sample at 2p - 1): [M, P].
Tensor point_sample(const Tensor& maps, const Tensor& points);
// Adds the gradient of point_sample's output `grad_out` [M, P] to `grad_maps` [M, H, W].
void point_sample_backward(const Tensor& grad_out, const Tensor& points, Tensor& grad_maps);

// Upstream's choice of the mask-loss points (mmdet get_uncertain_point_coords_with_randomness):
// oversample·P uniform candidates per map, the ⌊importance·P⌋ whose sampled logit is nearest 0
// (uncertainty −|logit|, ties to the earlier candidate), then fresh uniform points up to P:
// [M, P, 2] for logits [M, H, W]. Deterministic for a given generator state.
Tensor sample_uncertain_points(const Tensor& logits, int64_t num_points, float oversample, float importance,
                               SplitMix64& rng);

struct MaskLosses {
  float mask = 0;                   // weight · Σ BCE(x, t) / (M·P)   (upstream's denominators)
  float dice = 0;                   // weight · Σ_m dice_m / M
  std::vector<float> dice_per_mask; // 1 − (2 Σ s·t + 1) / (Σ s + Σ t + 1), s = sigmoid(x)
  Tensor grad_logits;               // d(mask + dice) / d logits [M, P]
};
struct MaskLossWeights {
  float mask = 2.0f, dice = 0.5f;
};
// The point losses of logits and targets [M, P] (targets may be fractional).
MaskLosses point_mask_losses(const Tensor& logits, const Tensor& targets, MaskLossWeights weights = {});

// The positions a shifted label sequence supervises: row t (its hidden state) predicts labels[t + 1]
// wherever that is not -100.
struct SupervisedTokens {
  std::vector<int64_t> rows, targets;
};
SupervisedTokens supervised_tokens(const std::vector<int64_t>& labels);

struct TokenLoss {
  float loss = 0;               // mean over the rows
  std::vector<float> per_token; // cross entropy of each row
};
// Cross entropy of logit rows [R, V] against targets[r] (in [0, V)); `grad_logits` [R, V] (when
// given) receives d(grad_scale · Σ_r ce_r)/d logits = (softmax − onehot)·grad_scale, so that a batch
// sharing one mean over its T tokens passes grad_scale = 1/T. Logits of only the supervised rows are
// needed: a whole sequence's [N, V] matrix is never formed.
TokenLoss cross_entropy(const Tensor& logits, const std::vector<int64_t>& targets, Tensor* grad_logits = nullptr,
                        float grad_scale = 1.0f);

}  // namespace sa2va::train
