// `sa2va train`: fine-tuning Sa2VA on a JSONL dataset (docs/training.md §9-§11) the way upstream
// trains it — LoRA on every linear layer of the language model, the token embeddings and tied head,
// mlp1, text_hidden_fcs and SAM2's mask decoder trained; InternViT and SAM2's image encoder frozen
// (their features computed once per sample and cached). AdamW with global gradient clipping, a
// linear warm-up then cosine schedule per iteration, gradient accumulation, checkpoints that resume
// exactly, and a merged model folder in the checkpoint's own layout at the end.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "train/batch_step.h"
#include "train/dataset.h"

namespace sa2va::train {

struct TrainOptions {
  std::string model_dir, data_path, out_dir;
  std::string resume_dir;  // a checkpoint folder written by an earlier run with the same options
  int lora_r = 128;
  float lora_alpha = 256;
  float lr = 4e-5f, weight_decay = 0.05f, max_grad_norm = 1.0f, warmup_ratio = 0.05f;
  int epochs = 1, batch = 2, grad_accum = 4, max_length = 8192;
  int save_every = 0;          // optimiser steps between checkpoints (0: only the final one)
  int max_tiles = 12;          // image tiling limit, as inference's
  int objects_per_frame = 5;   // upstream's fixed object count per frame
  int mask_points = 12544;     // mask-loss points per object (upstream: 112²)
  float loss_mask_weight = 2.0f, loss_dice_weight = 0.5f;
  uint64_t seed = 0;           // data order, LoRA initialisation, object subsets, mask-loss points
  int threads = 0;             // 0: the process default
  bool export_f32 = false;     // merged weights in F32 instead of the checkpoint's dtypes
  int64_t cache_mb = 2048;     // frozen features kept in memory across epochs
};

struct TrainProgress {
  int64_t step = 0, total_steps = 0, iteration = 0, total_iterations = 0;
  float lr = 0, loss = 0, llm = 0, mask = 0, dice = 0;  // means over the step's micro-batches
  double tokens_per_s = 0, eta_s = 0;
};

struct TrainResult {
  std::string merged_dir;   // <out>/model
  std::string last_checkpoint;
  int64_t steps = 0;
};

// "step 3/40 | lr 2e-05 | loss 1.23 (llm 0.8, mask 0.3, dice 0.13) | 950 tok/s | ETA 1m20s"
std::string format_progress(const TrainProgress& progress);

// The learning rate at iteration i of n (0-based): linear warm-up from lr·1e-5 to lr over the
// first ⌊warmup_ratio·n⌋ iterations, then cosine to 0 at n (upstream's LinearLR + CosineAnnealingLR,
// stepped per iteration).
float scheduled_lr(int64_t iteration, int64_t total_iterations, float lr, float warmup_ratio);

// Trains; throws Error naming the file or option at fault. `on_step` is called after every
// optimiser step; `on_note` once the data are read, before the model loads, with what the run will
// do ("data.jsonl: 120 samples (100 images, 20 videos; 90 with masks, 12 with visual prompts); 15
// optimiser steps, 8 samples each"). Writes <out>/train_log.jsonl (one line per step),
// <out>/checkpoint-<step>/ and the merged model <out>/model/.
TrainResult train(const TrainOptions& options, const std::function<void(const TrainProgress&)>& on_step = {},
                  const std::function<void(const std::string&)>& on_note = {});

// The pieces `train` is made of, for tests and other front ends.
class Trainer {
 public:
  explicit Trainer(const TrainOptions& options);
  ~Trainer();
  // A data sample ready for forward_backward: token ids and labels by the model's chat template
  // (prompt -100, answers and the turn suffix supervised, the separator not), the frozen vision
  // features, SAM2's frozen frame features and the 256² mask targets.
  BatchSample prepare(const TrainingSample& sample) const;
  const Sa2vaTrainable& model() const;
  // The trained tensors of a checkpoint folder (<out>/checkpoint-<step>) into the model.
  void load_parameters(const std::string& checkpoint_dir);
  // Writes the merged model folder: the checkpoint's tensors in its order, LoRA folded into the
  // weights, the trained tensors replaced (a stored lm_head beside tied embeddings gets the trained
  // embedding), dtypes as stored unless export_f32.
  void export_merged(const std::string& out_dir) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  friend TrainResult train(const TrainOptions&, const std::function<void(const TrainProgress&)>&,
                           const std::function<void(const std::string&)>&);
};

}  // namespace sa2va::train
