// The language side of Sa2VA training (docs/training.md §6): the mlp1 projector on the frozen vision
// features, the language model with LoRA on every linear layer and its tied embedding/head, the
// shifted token loss, and text_hidden_fcs on the [SEG] hidden states, forward and backward.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/config.h"
#include "io/safetensors.h"
#include "train/decoder_layer.h"

namespace sa2va::train {

struct Mlp1 {  // LayerNorm(4C) -> Linear(4C, D) -> GELU -> Linear(D, D)
  Tensor norm_w, norm_b, w1, b1, w2, b2;
};
struct TextHiddenFcs {  // Linear(D, D) -> ReLU -> Linear(D, 256)
  Tensor w1, b1, w2, b2;
};

class TrainableLanguageModel {
 public:
  // Frozen weights from the checkpoint (as f32), LoRA pairs by module path
  // ("language_model.model.layers.0.self_attn.q_proj" -> {A, B}) with scale alpha/r. Qwen2 (q, k, v,
  // o, gate, up, down) or InternLM2 (wqkv, wo, w1, w3, w2; wqkv's B given in the checkpoint's row
  // order); a tied head is the embedding, an untied one is trained as its own tensor.
  static TrainableLanguageModel load(const Checkpoint& checkpoint, const ModelConfig& config,
                                     const std::map<std::string, std::pair<Tensor, Tensor>>& lora, float lora_scale);

  // The module paths that get LoRA pairs for this configuration, in checkpoint order per layer.
  static std::vector<std::string> lora_module_paths(const ModelConfig& config);

  struct Sample {
    std::vector<int64_t> input_ids, labels;  // one sequence, labels -100 where not supervised
    Tensor vision;                           // frozen mlp1 input [tiles, tokens, 4C]
    // The mlp1 output row each <IMG_CONTEXT> token takes, in order (image_replacement_indices: with
    // visual prompts, the regions' cells again after the thumbnail's); empty: every row once, in order.
    std::vector<int64_t> image_rows;
  };
  struct Forward {
    Tensor vit_embeds;                 // mlp1 output [tiles·tokens, D]
    Tensor last_hidden;                // final-norm hidden states [N, D]
    std::vector<float> token_ce;       // at the supervised positions, in order
    std::vector<int64_t> seg_rows;     // positions of [SEG]
    Tensor seg_hidden, seg_embeds;     // [S, D], text_hidden_fcs output [S, 256]
    // kept for the backward pass
    Tensor mlp1_in, mlp1_norm, mlp1_h, mlp1_act, pre_norm, seg_h1;
    std::vector<Tensor> layer_inputs;  // each decoder layer's input (its activations are recomputed)
  };
  Forward forward(const Sample& sample) const;

  struct Grads {
    std::map<std::string, LoraGrads> lora;              // by module path
    std::map<std::string, Tensor> tensors;              // mlp1.*, text_hidden_fcs.* by checkpoint name
    Tensor embedding;                                   // [V, D]: lookup (+ head when tied)
    Tensor embedding_lookup;  // [V, D]: the lookup's part alone, filled only where a caller defines it (tests):
                              // zero_grads() leaves it out (a vocabulary-sized buffer)
    Tensor head;                                        // [V, D]: an untied head's
  };
  // Adds to `grads` the gradient of ce_scale·Σ token_ce + <seg_embeds, d_seg_embeds>.
  void backward(const Sample& sample, const Forward& f, float ce_scale, const Tensor& d_seg_embeds, Grads& grads) const;
  Grads zero_grads() const;

  // Every trainable tensor, sharing storage with the model (an optimiser step on them changes it):
  // "lora.<module>.A" / ".B", mlp1.*, text_hidden_fcs.* and the embedding under checkpoint names.
  std::vector<std::pair<std::string, Tensor>> parameters() const;
  // The gradient in `grads` of a parameters() name (the embedding's: lookup + head); undefined where
  // the batch gave it none (no [SEG] in it: text_hidden_fcs).
  Tensor gradient(const Grads& grads, const std::string& name) const;
  // The LoRA modules (module path -> the layer).
  std::vector<std::pair<std::string, const LoraLinear*>> lora_layers() const;
  // A LoRA module's weight with the pair merged (W + B·A·alpha/r), in the checkpoint's row order.
  Tensor merged_weight(const std::string& module_path) const;

  int32_t img_context_id = -1, seg_id = -1;

 private:
  // Layer i as it runs on a sequence of `tokens` (the RoPE base may depend on the length).
  DecoderLayerWeights layer_for(size_t i, int64_t tokens) const;
  Tensor head_logits(const Tensor& hidden, const std::vector<int64_t>& rows) const;  // [rows, V] through the tied head

  std::string embedding_name_, head_name_;  // head_name_ empty when tied
  Tensor embedding_;  // f32 [V, D] (also the head when tied)
  Tensor head_;       // an untied head, f32 [V, D]
  std::vector<int64_t> qkv_rows_;  // InternLM2: checkpoint row of each internal wqkv row
  LlmConfig llm_config_;
  std::vector<DecoderLayerWeights> layers_;
  std::vector<std::string> layer_paths_;
  Tensor final_norm_;
  float rms_eps_ = 1e-6f;
  Mlp1 mlp1_;
  TextHiddenFcs fcs_;
};

}  // namespace sa2va::train
