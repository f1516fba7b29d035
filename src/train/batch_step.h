// One micro-batch of Sa2VA training (docs/training.md §2, §8), shared by `sa2va train-step` and
// `sa2va train`: the language side per sample, SAM2's mask decoder once per [SEG] and frame, each
// frame's objects made up to a fixed number, the point-sampled mask losses and the token loss, and
// the gradient of every trainable tensor.
#pragma once
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/image.h"
#include "models/sam2/sam2_image.h"
#include "train/mask_decoder.h"
#include "train/sa2va_llm.h"

namespace sa2va::train {

inline const std::string kMaskDecoderPrefix = "grounding_encoder.sam2_model.sam_mask_decoder.";
inline constexpr int64_t kLowResMask = 256;  // SAM2's low-resolution mask side, where the mask losses are taken

// The frozen SAM2 image side of one frame, at training normalisation (float32 mean/std).
struct FrameFeatures {
  Tensor embedding;   // [C, g, g]: FPN level 2 + no_mem_embed
  Tensor fpn0, fpn1;  // FPN levels 0 and 1 as tokens [4g·4g, C], [2g·2g, C]
};
FrameFeatures frozen_frame_features(const sam2::Sam2Image& sam, const Image& image);

struct BatchSample {
  TrainableLanguageModel::Sample text;
  std::vector<FrameFeatures> frames;  // empty for a sample without masks
  std::vector<Tensor> targets;        // per frame: [S, 256, 256] 0/1 floats, S = the sample's [SEG] count
};

// What upstream draws at random, made explicit so that a fixture can fix it.
struct BatchChoices {
  // The [SEG] index of each object of one frame, given the sample's [SEG] count.
  std::function<std::vector<int64_t>(int64_t segs)> objects;
  // The points [M, P, 2] (x, y in [0, 1]) of the batch's M objects from their low-resolution logits [M, 256, 256].
  std::function<Tensor(const Tensor& object_logits)> points;
};
// Upstream's rule for few objects: the [SEG]s repeated cyclically to `per_frame` objects.
std::vector<int64_t> cycle_objects(int64_t segs, int64_t per_frame);

struct BatchLosses {
  float total = 0, mask = 0, dice = 0, llm = 0;
  std::vector<float> dice_per_mask;
  int64_t supervised_tokens = 0, objects = 0, tokens = 0;
};

struct BatchGrads {
  TrainableLanguageModel::Grads lang;
  TrainableMaskDecoder::Grads decoder;
};

// The trainable model: the language side, the mask decoder and the frozen SAM2 parts the decoder's
// prompts and images go through.
struct Sa2vaTrainable {
  TrainableLanguageModel llm;
  TrainableMaskDecoder decoder;
  const sam2::Sam2Image* sam = nullptr;

  // Every trainable tensor under its checkpoint name (LoRA as lora.<module>.A/B), sharing storage.
  std::vector<std::pair<std::string, Tensor>> parameters() const;
  // The gradient of a parameters() name; undefined where the batches gave it none.
  Tensor gradient(const BatchGrads& grads, const std::string& name) const;
  BatchGrads zero_grads() const { return {llm.zero_grads(), {}}; }

  // Adds grad_scale·∇ total of the micro-batch to `grads` (grad_scale 1/accumulation steps) and
  // returns its losses (not scaled): total = mask + dice + llm, the token loss one mean over the
  // batch's supervised tokens, the mask losses over all its objects.
  BatchLosses forward_backward(const std::vector<BatchSample>& batch, const BatchChoices& choices,
                               float loss_mask_weight, float loss_dice_weight, float grad_scale,
                               BatchGrads& grads) const;
};

}  // namespace sa2va::train
