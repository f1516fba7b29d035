// The training losses against the upstream training step (fixture sa2va-tiny-train) and against
// finite differences on odd shapes.
#include "train/losses.h"

#include "core/error.h"

#include <cmath>
#include <cstring>
#include <random>

#include "io/safetensors.h"
#include "test_util.h"

namespace sa2va {
namespace {

Tensor random_tensor(const Shape& shape, uint32_t seed, float lo, float hi) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  Tensor t = Tensor::empty(shape);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = dist(rng);
  return t;
}

// The batch's 10 SAM objects as upstream forms them: each sample's [SEG] logits repeated to 5
// objects (batch.obj_seg_index), sample 0 first.
Tensor object_logits(const std::string& forward) {
  const Tensor s0 = test::load_golden(forward, "s0.pred_mask_logits");
  const Tensor s1 = test::load_golden(forward, "s1.pred_mask_logits");
  const Tensor index = test::load_golden(forward, "batch.obj_seg_index");
  Tensor out = Tensor::empty({index.numel(), 256, 256});
  for (int64_t k = 0; k < index.numel(); ++k) {
    const int64_t seg = index.data<int64_t>()[k];
    const Tensor src = seg < s0.size(0) ? s0.select(0, seg) : s1.select(0, seg - s0.size(0));
    std::copy_n(src.contiguous().f32(), 256 * 256, out.f32() + k * 256 * 256);
  }
  return out;
}

TEST(TrainLosses, MaskTargetsAndPointLossesMatchTheUpstreamStep) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny-train");
  const std::string inputs = dir + "/inputs.safetensors", forward = dir + "/forward.safetensors";
  // Ground truth at 256 x 256 by legacy nearest resizing.
  for (const char* sample : {"s0", "s1"}) {
    const Tensor gt = test::load_golden(inputs, std::string(sample) + ".gt_masks");
    const Tensor resized = train::resize_masks_nearest(gt.data<uint8_t>(), gt.size(0), gt.size(1), gt.size(2), 256);
    const Tensor expected = test::load_golden(forward, std::string(sample) + ".gt_masks_256");
    for (int64_t i = 0; i < expected.numel(); ++i)
      ASSERT_EQ(resized.f32()[i], static_cast<float>(expected.data<uint8_t>()[i])) << sample << " pixel " << i;
  }
  // Point sampling of the logits and of the float targets, object by object.
  const Tensor points = test::load_golden(inputs, "points.coords");
  const Tensor logits = object_logits(forward);
  const Tensor sampled = train::point_sample(logits, points);
  EXPECT_TRUE(test::close_rel(sampled, test::load_golden(forward, "points.sampled_logits"), 1e-5));
  const Tensor index = test::load_golden(forward, "batch.obj_seg_index");
  const Tensor gt0 = test::load_golden(forward, "s0.gt_masks_256"), gt1 = test::load_golden(forward, "s1.gt_masks_256");
  Tensor targets_256 = Tensor::empty({index.numel(), 256, 256});
  for (int64_t k = 0; k < index.numel(); ++k) {
    const int64_t seg = index.data<int64_t>()[k];
    const uint8_t* src = seg < gt0.size(0) ? gt0.data<uint8_t>() + seg * 65536 : gt1.data<uint8_t>() + (seg - gt0.size(0)) * 65536;
    for (int64_t i = 0; i < 65536; ++i) targets_256.f32()[k * 65536 + i] = src[i];
  }
  const Tensor targets = train::point_sample(targets_256, points);
  EXPECT_TRUE(test::close_rel(targets, test::load_golden(forward, "points.sampled_targets"), 1e-6));
  // The losses on the stored samples, weights 2.0 (BCE) and 0.5 (dice).
  const train::MaskLosses losses = train::point_mask_losses(test::load_golden(forward, "points.sampled_logits"),
                                                            test::load_golden(forward, "points.sampled_targets"));
  EXPECT_NEAR(losses.mask, test::load_golden(forward, "loss.mask").f32()[0], 1e-5 * std::fabs(losses.mask));
  EXPECT_NEAR(losses.dice, test::load_golden(forward, "loss.dice").f32()[0], 1e-5 * std::fabs(losses.dice));
  EXPECT_TRUE(test::close_rel(Tensor::from_vector(losses.dice_per_mask, {10}),
                              test::load_golden(forward, "loss.dice_per_mask"), 1e-5));
}

TEST(TrainLosses, TheCrossEntropyOfTheStoredTokensAveragesToTheLlmLoss) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny-train");
  const std::string forward = dir + "/forward.safetensors";
  const Tensor ce0 = test::load_golden(forward, "s0.token_ce"), ce1 = test::load_golden(forward, "s1.token_ce");
  double sum = 0;
  for (const Tensor* t : {&ce0, &ce1})
    for (int64_t i = 0; i < t->numel(); ++i) sum += t->f32()[i];
  // One mean over every supervised token of the batch (not a mean of the samples' means).
  EXPECT_NEAR(sum / static_cast<double>(ce0.numel() + ce1.numel()), test::load_golden(forward, "loss.llm").f32()[0], 1e-5);
}

TEST(TrainLosses, PointSampleBackwardIsTheAdjointOfSampling) {
  // <point_sample(X, p), G> = <X, point_sample_backward(G, p)> for any X, G (odd sizes; points
  // inside, on the border and outside the map).
  const Tensor maps = random_tensor({2, 7, 5}, 1, -2, 2);
  Tensor points = random_tensor({2, 13, 2}, 2, -0.1f, 1.1f);
  points.f32()[0] = 0.0f;
  points.f32()[1] = 1.0f;
  const Tensor g = random_tensor({2, 13}, 3, -1, 1);
  const Tensor y = train::point_sample(maps, points);
  Tensor gx = Tensor::zeros({2, 7, 5});
  train::point_sample_backward(g, points, gx);
  double lhs = 0, rhs = 0;
  for (int64_t i = 0; i < y.numel(); ++i) lhs += static_cast<double>(y.f32()[i]) * g.f32()[i];
  for (int64_t i = 0; i < maps.numel(); ++i) rhs += static_cast<double>(maps.f32()[i]) * gx.f32()[i];
  EXPECT_NEAR(lhs, rhs, 1e-5 * std::max(1.0, std::fabs(lhs)));
  // A point at the centre of pixel (row 3, column 2) reads exactly that pixel.
  Tensor centre = Tensor::empty({2, 1, 2});
  for (int k = 0; k < 2; ++k) {
    centre.f32()[2 * k] = 2.5f / 5;
    centre.f32()[2 * k + 1] = 3.5f / 7;
  }
  EXPECT_FLOAT_EQ(train::point_sample(maps, centre).f32()[0], maps.f32()[3 * 5 + 2]);
}

TEST(TrainLosses, MaskLossGradientMatchesFiniteDifferences) {
  const Tensor logits = random_tensor({3, 11}, 4, -3, 3);
  Tensor targets = random_tensor({3, 11}, 5, 0, 1);
  for (int64_t i = 0; i < targets.numel(); i += 3) targets.f32()[i] = 1.0f;  // hard and soft targets
  const train::MaskLosses base = train::point_mask_losses(logits, targets);
  const auto total = [&](const Tensor& x) {
    const train::MaskLosses l = train::point_mask_losses(x, targets);
    return static_cast<double>(l.mask) + l.dice;
  };
  for (int64_t i = 0; i < logits.numel(); ++i) {
    Tensor plus = logits.clone(), minus = logits.clone();
    const float h = 1e-2f;
    plus.f32()[i] += h;
    minus.f32()[i] -= h;
    const double numeric = (total(plus) - total(minus)) / (2 * h);
    EXPECT_NEAR(base.grad_logits.f32()[i], numeric, 2e-3 * std::max(1e-2, std::fabs(numeric))) << "element " << i;
  }
}

TEST(TrainLosses, CrossEntropyOfTheSupervisedRowsShiftsIgnoresAndDifferentiates) {
  const Tensor logits = random_tensor({5, 7}, 6, -2, 2);
  const std::vector<int64_t> labels = {-100, -100, 3, 6, -100};  // rows 1 and 2 predict 3 and 6
  const train::SupervisedTokens sup = train::supervised_tokens(labels);
  ASSERT_EQ(sup.rows, (std::vector<int64_t>{1, 2}));
  ASSERT_EQ(sup.targets, (std::vector<int64_t>{3, 6}));
  const Tensor rows = logits.slice(0, 1, 3).contiguous();
  Tensor grad;
  const float scale = 0.25f;  // e.g. one mean over a batch of 4 supervised tokens
  const train::TokenLoss loss = train::cross_entropy(rows, sup.targets, &grad, scale);
  const auto ce = [&](int64_t row, int64_t label) {
    double z = 0;
    for (int64_t j = 0; j < 7; ++j) z += std::exp(static_cast<double>(logits.f32()[row * 7 + j]));
    return std::log(z) - logits.f32()[row * 7 + label];
  };
  ASSERT_EQ(loss.per_token.size(), 2u);
  EXPECT_NEAR(loss.per_token[0], ce(1, 3), 1e-6);
  EXPECT_NEAR(loss.loss, (ce(1, 3) + ce(2, 6)) / 2, 1e-6);
  const auto summed = [&](const Tensor& l) {
    const train::TokenLoss r = train::cross_entropy(l, sup.targets);
    return (static_cast<double>(r.per_token[0]) + r.per_token[1]) * scale;
  };
  for (int64_t i = 0; i < rows.numel(); ++i) {
    Tensor plus = rows.clone(), minus = rows.clone();
    plus.f32()[i] += 1e-3f;
    minus.f32()[i] -= 1e-3f;
    const double numeric = (summed(plus) - summed(minus)) / 2e-3;
    EXPECT_NEAR(grad.f32()[i], numeric, 1e-3) << "element " << i;
  }
  EXPECT_THROW(train::cross_entropy(rows, {0, 9}), Error);  // label outside V
  EXPECT_THROW(train::cross_entropy(rows, {0}), Error);     // one target per row
}

TEST(TrainLosses, UncertainPointsAreTheCandidatesNearestTheBoundaryPlusUniformOnes) {
  // A logit map that is 0 on the vertical line x = 0.5 and grows away from it.
  const int64_t h = 32, w = 32;
  Tensor logits = Tensor::empty({2, h, w});
  for (int64_t k = 0; k < 2; ++k)
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x) logits.f32()[(k * h + y) * w + x] = std::fabs((x + 0.5f) / w - 0.5f) * 20.0f;
  SplitMix64 rng{7};
  const Tensor points = train::sample_uncertain_points(logits, 100, 3.0f, 0.75f, rng);
  ASSERT_EQ(points.shape(), (Shape{2, 100, 2}));
  const Tensor values = train::point_sample(logits, points);
  // The 75 chosen points lie nearer the zero line than the 225 candidates' 75th smallest |logit| allows,
  // so their mean |logit| is far below that of uniform points (mean 5 on this map).
  for (int64_t k = 0; k < 2; ++k) {
    double chosen = 0;
    for (int64_t p = 0; p < 75; ++p) chosen += std::fabs(values.f32()[k * 100 + p]);
    EXPECT_LT(chosen / 75, 2.0) << "map " << k;
    for (int64_t p = 0; p < 100; ++p)
      for (int c = 0; c < 2; ++c) {
        const float v = points.f32()[(k * 100 + p) * 2 + c];
        EXPECT_TRUE(v >= 0.0f && v < 1.0f);
      }
  }
  // Same generator state, same points; another state, other points.
  SplitMix64 again{7}, other{8};
  const Tensor repeat = train::sample_uncertain_points(logits, 100, 3.0f, 0.75f, again);
  const Tensor different = train::sample_uncertain_points(logits, 100, 3.0f, 0.75f, other);
  EXPECT_EQ(0, std::memcmp(repeat.f32(), points.f32(), points.numel() * sizeof(float)));
  EXPECT_NE(0, std::memcmp(different.f32(), points.f32(), points.numel() * sizeof(float)));
}

}  // namespace
}  // namespace sa2va
