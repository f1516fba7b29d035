// SAM2's mask decoder in the upstream training step (fixture sa2va-tiny-train): the frozen image
// features with training normalisation, the decoder forward for every [SEG] (predicted IoUs, the
// chosen mask, its low-resolution logits), then the point losses' gradient back to every mask-decoder
// tensor, compared with the stored gradients.
#include "train/mask_decoder.h"

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/image.h"
#include "io/weights.h"
#include "models/preprocess.h"
#include "models/sam2/sam2_image.h"
#include "ops/ops.h"
#include "test_util.h"
#include "train/gradient_check.h"
#include "train/losses.h"

namespace sa2va {
namespace {

using test::rel_l2;

TEST(TrainMaskDecoder, ForwardAndBackwardMatchTheUpstreamStep) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny-train");
  SA2VA_REQUIRE_FIXTURE(model_dir, "sa2va-tiny");
  const auto inputs = SafetensorsFile::open(dir + "/inputs.safetensors");
  const auto forward = SafetensorsFile::open(dir + "/forward.safetensors");
  const auto grads = SafetensorsFile::open(dir + "/grads.safetensors");
  const Checkpoint checkpoint = Checkpoint::open(model_dir);
  Weights weights(checkpoint, Precision::F32);
  const sam2::Sam2Image sam = sam2::Sam2Image::load(weights, load_config(model_dir));
  weights.finish();
  const std::string prefix = "grounding_encoder.sam2_model.sam_mask_decoder.";
  const train::TrainableMaskDecoder decoder = train::TrainableMaskDecoder::load(checkpoint, prefix);

  // One decoder run per [SEG] (its five objects are copies), sample 0 then sample 1.
  std::vector<train::TrainableMaskDecoder::Output> runs;
  std::vector<int64_t> chosen;
  const char* images[] = {"/inputs/res.png", "/inputs/gcg.png"};
  for (int s = 0; s < 2; ++s) {
    const std::string tag = "s" + std::to_string(s);
    const Tensor x = preprocess::sam2_normalize(preprocess::sam2_resize(load_image(dir + images[s])),
                                                preprocess::Sam2Constants::Float32);
    const std::vector<sam2::TokenMap> levels = sam.neck.forward(sam.trunk.forward(x));
    sam2::FrameFeatures features;
    features.fpn2 = levels[2].to_chw();
    const Tensor embedding = sam.conditioning_embedding(features);
    // The stored embedding is sampled every 4th row and column.
    const int64_t g = embedding.size(1);
    Tensor sub = Tensor::empty({embedding.size(0), g / 4, g / 4});
    for (int64_t c = 0; c < embedding.size(0); ++c)
      for (int64_t i = 0; i < g / 4; ++i)
        for (int64_t j = 0; j < g / 4; ++j)
          sub.f32()[(c * (g / 4) + i) * (g / 4) + j] = embedding.f32()[(c * g + 4 * i) * g + 4 * j];
    EXPECT_LE(rel_l2(sub, forward->get(tag + ".sam.image_embeddings.sub16")), 1e-4) << tag;
    const Tensor seg_embeds = forward->get(tag + ".seg.embeds");
    const Tensor best = forward->get(tag + ".best_mask_idx");
    const Tensor iou_pred = forward->get(tag + ".iou_pred");
    const Tensor logits = forward->get(tag + ".pred_mask_logits");
    for (int64_t k = 0; k < seg_embeds.size(0); ++k) {
      train::TrainableMaskDecoder::Inputs in;
      in.image_embedding = embedding;
      in.image_pe = sam.prompt_encoder.dense_pe();
      in.dense = sam.prompt_encoder.no_mask.view({embedding.size(0)});
      in.sparse = sam.prompt_encoder.sparse_embeddings(seg_embeds.contiguous().f32() + k * seg_embeds.size(1));
      in.fpn0 = levels[0].tokens;
      in.fpn1 = levels[1].tokens;
      train::TrainableMaskDecoder::Output out = decoder.forward(in);
      int64_t pick = 1;
      for (int64_t m = 2; m < 4; ++m)
        if (out.iou.f32()[m] > out.iou.f32()[pick]) pick = m;
      EXPECT_EQ(pick - 1, best.data<int64_t>()[k]) << tag << " [SEG] " << k;
      EXPECT_LE(rel_l2(out.iou.slice(0, 1, 4), iou_pred.select(0, k)), 1e-4) << tag;
      EXPECT_LE(rel_l2(out.masks.select(0, pick), logits.select(0, k)), 1e-4) << tag << " [SEG] " << k;
      runs.push_back(std::move(out));
      chosen.push_back(pick);
    }
  }
  ASSERT_EQ(runs.size(), 3u);

  // The point losses on the ten objects, and their gradient back to each [SEG]'s mask.
  const Tensor index = forward->get("batch.obj_seg_index");
  const int64_t objects = index.numel();
  Tensor object_logits = Tensor::empty({objects, 256, 256});
  for (int64_t k = 0; k < objects; ++k) {
    const int64_t seg = index.data<int64_t>()[k];
    std::copy_n(runs[static_cast<size_t>(seg)].masks.select(0, chosen[static_cast<size_t>(seg)]).contiguous().f32(),
                256 * 256, object_logits.f32() + k * 256 * 256);
  }
  const Tensor points = inputs->get("points.coords");
  const train::MaskLosses losses =
      train::point_mask_losses(train::point_sample(object_logits, points), forward->get("points.sampled_targets"));
  EXPECT_NEAR(losses.mask, forward->get("loss.mask").f32()[0], 1e-4 * losses.mask);
  Tensor d_objects = Tensor::zeros({objects, 256, 256});
  train::point_sample_backward(losses.grad_logits, points, d_objects);
  train::TrainableMaskDecoder::Grads g;
  for (size_t seg = 0; seg < runs.size(); ++seg) {
    Tensor d_mask = Tensor::zeros({256, 256});
    for (int64_t k = 0; k < objects; ++k)
      if (index.data<int64_t>()[k] == static_cast<int64_t>(seg))
        ops::add(d_mask.f32(), d_objects.f32() + k * 256 * 256, d_mask.f32(), 256 * 256);
    decoder.backward(runs[seg], chosen[seg], d_mask, g);
  }

  int compared = 0;
  for (const std::string& name : decoder.tensor_names()) {
    const std::string key = "grad." + prefix + name;
    const Tensor expected = grads->get(key);
    const auto it = g.tensors.find(name);
    if (it == g.tensors.end()) {  // not reached by the loss (IoU and object-score heads, unselected hypernetworks)
      for (float v : expected.to_vector()) EXPECT_EQ(v, 0.0f) << name;
      ++compared;
      continue;
    }
    Tensor actual = it->second;
    if (grads->has("idx." + prefix + name)) {  // sampled entries of a large tensor
      const Tensor idx = grads->get("idx." + prefix + name);
      Tensor picked = Tensor::empty({idx.numel()});
      const Tensor flat = actual.contiguous();
      for (int64_t i = 0; i < idx.numel(); ++i) picked.f32()[i] = flat.f32()[idx.data<int64_t>()[i]];
      actual = picked;
    }
    if (name.find("k_proj.bias") != std::string::npos) {
      // Analytically zero (softmax is shift-invariant): rounding noise only.
      for (float v : actual.to_vector()) EXPECT_LE(std::fabs(v), 1e-5f) << name;
    } else {
      EXPECT_LE(rel_l2(actual, expected), 1e-4) << name;
    }
    ++compared;
  }
  EXPECT_EQ(compared, static_cast<int>(decoder.tensor_names().size()));
}

}  // namespace
}  // namespace sa2va
