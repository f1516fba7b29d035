#include "train/batch_step.h"

#include <algorithm>

#include "core/error.h"
#include "models/preprocess.h"
#include "ops/ops.h"
#include "train/losses.h"

namespace sa2va::train {

FrameFeatures frozen_frame_features(const sam2::Sam2Image& sam, const Image& image) {
  const Tensor x =
      preprocess::sam2_normalize(preprocess::sam2_resize(image), preprocess::Sam2Constants::Float32);
  const std::vector<sam2::TokenMap> levels = sam.neck.forward(sam.trunk.forward(x));
  sam2::FrameFeatures features;
  features.fpn2 = levels[2].to_chw();
  return {sam.conditioning_embedding(features), levels[0].tokens, levels[1].tokens};
}

std::vector<int64_t> cycle_objects(int64_t segs, int64_t per_frame) {
  std::vector<int64_t> out;
  for (int64_t o = 0; o < per_frame && segs > 0; ++o) out.push_back(o % segs);
  return out;
}

std::vector<std::pair<std::string, Tensor>> Sa2vaTrainable::parameters() const {
  std::vector<std::pair<std::string, Tensor>> out = llm.parameters();
  for (const auto& [name, tensor] : decoder.parameters()) out.emplace_back(kMaskDecoderPrefix + name, tensor);
  return out;
}

Tensor Sa2vaTrainable::gradient(const BatchGrads& grads, const std::string& name) const {
  if (name.rfind(kMaskDecoderPrefix, 0) == 0) {
    const auto it = grads.decoder.tensors.find(name.substr(kMaskDecoderPrefix.size()));
    return it == grads.decoder.tensors.end() ? Tensor() : it->second;
  }
  return llm.gradient(grads.lang, name);
}

BatchLosses Sa2vaTrainable::forward_backward(const std::vector<BatchSample>& batch, const BatchChoices& choices,
                                             float loss_mask_weight, float loss_dice_weight, float grad_scale,
                                             BatchGrads& grads) const {
  check(sam != nullptr, "training: the trainable model has no SAM2 image side");
  BatchLosses losses;
  // ---- the language side
  std::vector<TrainableLanguageModel::Forward> lang;
  double ce_sum = 0;
  for (const BatchSample& sample : batch) {
    lang.push_back(llm.forward(sample.text));
    for (float ce : lang.back().token_ce) ce_sum += ce;
    losses.supervised_tokens += static_cast<int64_t>(lang.back().token_ce.size());
    losses.tokens += static_cast<int64_t>(sample.text.input_ids.size());
  }
  losses.llm = losses.supervised_tokens ? static_cast<float>(ce_sum / static_cast<double>(losses.supervised_tokens)) : 0;

  // ---- the SAM2 side: one decoder run per [SEG] and frame; a frame's objects are copies of them
  struct Run {
    size_t sample;
    int64_t seg, pick;
    TrainableMaskDecoder::Output out;
    Tensor target;  // [256, 256]
  };
  std::vector<Run> runs;
  std::vector<size_t> object_run;  // run of each object, in batch order
  for (size_t i = 0; i < batch.size(); ++i) {
    const BatchSample& sample = batch[i];
    const Tensor& seg = lang[i].seg_embeds;
    const int64_t segs = seg.defined() ? seg.size(0) : 0;
    if (sample.frames.empty() || segs == 0) continue;
    check(sample.targets.size() == sample.frames.size(), "training: one mask target set per frame is needed");
    const std::vector<int64_t> objects = choices.objects(segs);
    for (size_t f = 0; f < sample.frames.size(); ++f) {
      const Tensor& targets = sample.targets[f];
      check(targets.dim() == 3 && targets.size(0) == segs, "training: sample " + std::to_string(i) + " has " +
                                                              std::to_string(segs) + " [SEG] but masks " +
                                                              shape_str(targets.shape()));
      const FrameFeatures& frame = sample.frames[f];
      // The decoder runs for the drawn [SEG] only (more [SEG] than objects per frame: a subset);
      // each keeps its activations for the backward pass.
      std::vector<bool> drawn(static_cast<size_t>(segs), false);
      for (int64_t k : objects) drawn[static_cast<size_t>(k)] = true;
      std::vector<size_t> run_of(static_cast<size_t>(segs));
      for (int64_t k = 0; k < segs; ++k) {
        if (!drawn[static_cast<size_t>(k)]) continue;
        run_of[static_cast<size_t>(k)] = runs.size();
        TrainableMaskDecoder::Inputs in;
        in.image_embedding = frame.embedding;
        in.image_pe = sam->prompt_encoder.dense_pe();
        in.dense = sam->prompt_encoder.no_mask.view({frame.embedding.size(0)});
        in.sparse = sam->prompt_encoder.sparse_embeddings(seg.f32() + k * seg.size(1));
        in.fpn0 = frame.fpn0;
        in.fpn1 = frame.fpn1;
        TrainableMaskDecoder::Output out = decoder.forward(in);
        int64_t pick = 1;  // multimask: tokens 1..3, the highest predicted IoU (not differentiated)
        for (int64_t m = 2; m < out.iou.numel(); ++m)
          if (out.iou.f32()[m] > out.iou.f32()[pick]) pick = m;
        runs.push_back({i, k, pick, std::move(out), targets.select(0, k).contiguous()});
      }
      for (int64_t k : objects) object_run.push_back(run_of[static_cast<size_t>(k)]);
    }
  }
  const int64_t objects = static_cast<int64_t>(object_run.size());
  const int64_t area = kLowResMask * kLowResMask;
  losses.objects = objects;
  Tensor d_objects;
  Tensor points;
  if (objects > 0) {
    Tensor object_logits = Tensor::empty({objects, kLowResMask, kLowResMask});
    Tensor object_targets = Tensor::empty({objects, kLowResMask, kLowResMask});
    for (int64_t o = 0; o < objects; ++o) {
      const Run& run = runs[object_run[static_cast<size_t>(o)]];
      std::copy_n(run.out.masks.select(0, run.pick).contiguous().f32(), area, object_logits.f32() + o * area);
      std::copy_n(run.target.f32(), area, object_targets.f32() + o * area);
    }
    points = choices.points(object_logits);
    const MaskLosses mask_losses = point_mask_losses(point_sample(object_logits, points),
                                                     point_sample(object_targets, points),
                                                     {loss_mask_weight, loss_dice_weight});
    losses.mask = mask_losses.mask;
    losses.dice = mask_losses.dice;
    losses.dice_per_mask = mask_losses.dice_per_mask;
    d_objects = Tensor::zeros({objects, kLowResMask, kLowResMask});
    Tensor grad_logits = mask_losses.grad_logits.clone();
    ops::scale(grad_logits.f32(), grad_scale, grad_logits.numel());
    point_sample_backward(grad_logits, points, d_objects);
  }
  losses.total = (losses.mask + losses.dice) + losses.llm;

  // ---- backward: mask losses -> decoder -> [SEG] embeddings -> language side
  std::vector<Tensor> d_seg(batch.size());
  for (size_t i = 0; i < batch.size(); ++i)
    if (lang[i].seg_embeds.defined() && lang[i].seg_embeds.numel() > 0)
      d_seg[i] = Tensor::zeros(lang[i].seg_embeds.shape());
  for (size_t r = 0; r < runs.size(); ++r) {
    Tensor d_mask = Tensor::zeros({kLowResMask, kLowResMask});  // every run is drawn at least once
    for (int64_t o = 0; o < objects; ++o)
      if (object_run[static_cast<size_t>(o)] == r) ops::add(d_mask.f32(), d_objects.f32() + o * area, d_mask.f32(), area);
    decoder.backward(runs[r].out, runs[r].pick, d_mask, grads.decoder);
    const Tensor& ds = grads.decoder.sparse;  // the language embedding is the last prompt token
    const int64_t c = ds.size(1);
    float* dst = d_seg[runs[r].sample].f32() + runs[r].seg * c;
    ops::add(dst, ds.f32() + (ds.size(0) - 1) * c, dst, c);
  }
  const float ce_scale = losses.supervised_tokens ? grad_scale / static_cast<float>(losses.supervised_tokens) : 0.0f;
  for (size_t i = 0; i < batch.size(); ++i) llm.backward(batch[i].text, lang[i], ce_scale, d_seg[i], grads.lang);
  return losses;
}

}  // namespace sa2va::train
