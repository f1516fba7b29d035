// One training step exactly as a training fixture folder describes it (docs/training.md §8): its
// samples (token ids, labels, frozen vision features, images, ground-truth masks), LoRA
// initialisation, mask-loss points and hyper-parameters; forward, losses, backward, global clipping,
// one AdamW step and the LoRA merge. `sa2va train-step` writes the result.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace sa2va::train {

// The step's tensors under the fixture's names: loss.{total,mask,dice,llm,dice_per_mask},
// grad.<name> (raw, before clipping; LoRA as grad.lora.<module>.A/B), optim.{grad_norm,clip_coef},
// step1.<name> (after the step) and merged.<module>.weight, in that order.
std::vector<std::pair<std::string, Tensor>> run_fixture_step(const std::string& model_dir, const std::string& fixture_dir);

}  // namespace sa2va::train
