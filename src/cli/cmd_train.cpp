// sa2va train: fine-tune a model on a JSONL dataset; checkpoints, resume and a merged model folder.
#include <cstdio>
#include <memory>
#include <string>

#include "cli/command.h"
#include "train/trainer.h"

namespace sa2va::cli {
namespace {

SA2VA_COMMAND("train", "Fine-tune on a JSONL dataset (LoRA LLM, mlp1, text_hidden_fcs, SAM2 mask decoder); "
              "write checkpoints and a merged model folder", [](CLI::App& app) {
  auto o = std::make_shared<train::TrainOptions>();
  app.add_option("--model", o->model_dir, "Model folder (Hugging Face layout)")->required();
  app.add_option("--data", o->data_path, "Training data (.jsonl, see docs/training.md)")->required();
  app.add_option("--out", o->out_dir, "Output folder: train_log.jsonl, checkpoint-<step>/, model/")->required();
  app.add_option("--resume", o->resume_dir, "Continue from a checkpoint folder of an earlier run (same data and options)");
  app.add_option("--lora-r", o->lora_r, "LoRA rank")->capture_default_str();
  app.add_option("--lora-alpha", o->lora_alpha, "LoRA alpha (scale alpha/r)")->capture_default_str();
  app.add_option("--lr", o->lr, "Peak learning rate")->capture_default_str();
  app.add_option("--weight-decay", o->weight_decay, "AdamW weight decay")->capture_default_str();
  app.add_option("--max-grad-norm", o->max_grad_norm, "Global gradient clipping norm")->capture_default_str();
  app.add_option("--warmup-ratio", o->warmup_ratio, "Share of the iterations spent warming up")->capture_default_str();
  app.add_option("--epochs", o->epochs, "Passes over the data")->capture_default_str();
  app.add_option("--batch", o->batch, "Samples per micro-batch")->capture_default_str();
  app.add_option("--grad-accum", o->grad_accum, "Micro-batches per optimiser step")->capture_default_str();
  app.add_option("--max-length", o->max_length, "Tokens per sample (longer ones are truncated)")->capture_default_str();
  app.add_option("--save-every", o->save_every, "Optimiser steps between checkpoints (0: the final one only)")
      ->capture_default_str();
  app.add_option("--max-tiles", o->max_tiles, "Image tiling limit")->capture_default_str();
  app.add_option("--mask-points", o->mask_points, "Mask-loss points per object")->capture_default_str();
  app.add_option("--seed", o->seed, "Seed of the data order, LoRA initialisation and mask-loss points")
      ->capture_default_str();
  app.add_option("--threads", o->threads, "Threads (0: all cores)")->capture_default_str();
  app.add_option("--cache-mb", o->cache_mb, "Memory for the frozen features kept across epochs")->capture_default_str();
  app.add_flag("--export-f32", o->export_f32, "Write the merged model in F32 instead of the checkpoint's dtypes");
  return [o]() -> int {
    const train::TrainResult result = train::train(
        *o, [](const train::TrainProgress& p) { std::fprintf(stderr, "%s\n", train::format_progress(p).c_str()); },
        [](const std::string& note) { std::fprintf(stderr, "%s\n", note.c_str()); });
    std::fprintf(stderr, "%lld steps; checkpoint %s; merged model %s\n", static_cast<long long>(result.steps),
                 result.last_checkpoint.c_str(), result.merged_dir.c_str());
    return 0;
  };
});

}  // namespace
}  // namespace sa2va::cli
