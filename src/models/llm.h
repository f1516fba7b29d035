// The language model of Sa2VA: a Qwen2 (1B/4B) or InternLM2 (8B) causal decoder (docs/llm.md),
// plus the splice that puts image features into the prompt embeddings (docs/llm.md §4).
//
// Both architectures share one decoder: RMSNorm → GQA attention with rotate-half RoPE → residual,
// RMSNorm → SwiGLU MLP → residual; final RMSNorm; lm_head. They differ only in weight names,
// q/k/v biases and InternLM2's packed wqkv, which load() absorbs (one fused q|k|v matrix).
// The model is shared and read-only; everything a request changes lives in its LlmState.
#pragma once
#include <cstdint>
#include <vector>

#include "core/context.h"
#include "core/stages.h"
#include "core/tensor.h"
#include "io/config.h"
#include "io/weights.h"
#include "models/common/blocks.h"
#include "ops/weight_matrix.h"

namespace sa2va {

// Per-request state of the language model (the model itself stays shared and read-only):
// the rotated keys and the values of every position seen so far, per layer, in f32, allocated
// once at the final capacity; the number of positions; and the workspaces of one forward step,
// sized for the longest step (the prefill), so that decode steps allocate no tensors or scratch buffers.
class LlmState {
 public:
  LlmState() = default;
  // Move-only: a copy would share (and corrupt) the original's cache and workspaces.
  LlmState(LlmState&&) = default;
  LlmState& operator=(LlmState&&) = default;
  LlmState(const LlmState&) = delete;
  LlmState& operator=(const LlmState&) = delete;

  int length() const { return length_; }
  int capacity() const { return capacity_; }
  int max_step() const { return max_step_; }
  int kv_dim() const { return kv_dim_; }
  // Forgets everything after the first `length` positions (e.g. to re-run a turn).
  void truncate(int length);

  // Rows [0, capacity) × kv_dim of layer `layer`; rows < length() are valid. In the memory of the
  // model's device (for the ops).
  float* keys(int layer) { return keys_[static_cast<size_t>(layer)].kernel_f32(); }
  float* values(int layer) { return values_[static_cast<size_t>(layer)].kernel_f32(); }

 private:
  friend struct LanguageModel;

  std::vector<Tensor> keys_, values_;  // per layer [capacity, kv_dim]
  int length_ = 0, capacity_ = 0, max_step_ = 0, kv_dim_ = 0;
  // Workspaces for up to max_step rows: residual stream, normed input, branch output, fused q|k|v,
  // attention heads, MLP gate and up, final-norm output; token positions; one row of logits.
  Tensor x_, normed_, branch_, qkv_, heads_, gate_, up_, out_, logits_;
  std::vector<int64_t> positions_;
  // On a GPU: the positions where RoPE reads them, the decoded token where the embedding lookup reads
  // it, and the host copy of the logits for sampling.
  Tensor device_positions_, device_token_, host_logits_;
  const int64_t* step_positions_ = nullptr;  // this step's positions, in the memory the kernels read
  int64_t last_rows_ = 0;  // rows of the latest forward step (its last one gives the logits)
};

// The RoPE base for a sequence of total_length positions: the configured one, or with dynamic NTK
// scaling (InternLM2) a larger one past the trained context (docs/llm.md §2).
float dynamic_rope_theta(const LlmConfig& config, int64_t total_length);

struct LanguageModel {
  struct Layer {
    Tensor attention_norm, mlp_norm;  // F32 [D]
    // q, k and v in one matrix [q_dim + 2·kv_dim, D] with rows in that order: Qwen2's three
    // projections are stacked at load, InternLM2's grouped wqkv is reordered at load (docs/llm.md §3.2).
    WeightMatrix wqkv;
    Tensor bqkv;    // F32 [q_dim + 2·kv_dim] or undefined
    WeightMatrix wo;
    Tensor bo;      // only for InternLM2 with `bias: true`
    WeightMatrix w_gate, w_up, w_down;
  };

  LlmConfig config;
  WeightMatrix embedding;  // [V, D] (rows are widened to f32 when gathered)
  std::vector<Layer> layers;
  Tensor final_norm;       // F32 [D]
  WeightMatrix lm_head;    // [V, D]; the embedding itself when tied
  MultiHeadAttention attention;  // GQA: num_heads query heads over num_kv_heads key/value heads

  // Binds language_model.* (Qwen2 or InternLM2 names, docs/checkpoint.md §3.3/§3.4) and prepares the
  // matrices: the load policy's LLM weight format for the linear layers.
  static LanguageModel load(Weights& w, const ModelConfig& c);
  // Checkpoint names of the token embedding and of the output head (present when untied, and in
  // quantized folders).
  static std::string embedding_name(LlmArch arch);
  static std::string head_name(LlmArch arch);

  int hidden_size() const { return config.hidden_size; }
  int vocab_size() const { return config.vocab_size; }
  // Where the weights live (the load policy's device); states, embeddings and hidden states too.
  Device device() const { return final_norm.device(); }

  // A state for `capacity` positions in all whose forward steps take at most `max_step` tokens
  // (0 = capacity), on the model's device. Everything it needs is allocated here.
  LlmState new_state(int capacity, int max_step = 0) const;

  // Embedding rows of `ids` → [N, D] F32 on the model's device. Throws Error for an id outside the
  // vocabulary.
  Tensor embed(const std::vector<int32_t>& ids) const;

  // Runs the decoder on `inputs_embeds` [N, D] at positions state.length() … + N − 1, appending
  // their keys/values to the state. Returns the final-norm hidden states [N, D]: a view into the
  // state's workspace, valid until its next forward step (clone it to keep it).
  // With `rec`: records llm.inputs_embeds, llm.hidden_states [L+1, N, D] (transformers
  // convention: [0] inputs, [i] output of layer i, [L] final norm) and llm.last_hidden_state.
  Tensor forward(const Tensor& inputs_embeds, LlmState& state, const ExecContext& ctx = {}) const;
  // One decode step: feeds token `id` back; returns its final-norm hidden state [1, D] (a view,
  // as forward's). Allocates no tensors.
  Tensor forward_token(int32_t id, LlmState& state) const;

  // lm_head: hidden [M, D] → logits [M, V].
  Tensor logits(const Tensor& hidden) const;
  // Logits [V] of the last row of the state's latest forward step, in host memory (the state's
  // workspace, or its host copy for a model on a GPU).
  const float* last_logits(LlmState& state) const;

 private:
  void check_step(int64_t n, const LlmState& state) const;
  Tensor run_layers(int64_t n, LlmState& state, const ExecContext& ctx) const;
  void attention_block(const Layer& layer, int layer_index, int64_t n, LlmState& state) const;
  // Positions pos0 … pos0 + n − 1 of this step, where RoPE reads them (uploaded once per step on a GPU).
  void set_step_positions(int64_t n, LlmState& state) const;
  float rope_theta(int64_t total_length) const { return dynamic_rope_theta(config, total_length); }
};

// Overwrites, in position order, every row of `inputs_embeds` [N, D] whose id is `img_context_id`
// with the next row of `replacement_rows` [R, D]; returns the updated tensor (shares storage with the
// argument). Throws Error when the number of IMG_CONTEXT tokens differs from R.
Tensor splice_image_embeddings(Tensor inputs_embeds, const std::vector<int32_t>& ids, int32_t img_context_id,
                               const Tensor& replacement_rows);

// The rows that replace the IMG_CONTEXT tokens (docs/llm.md §4): for each tile i all its tokens of
// `vit_embeds` [T, P, D]; right after every tile with vp_tiles[i] != 0, the tokens selected by each
// region mask of `region_masks` [K, P] (nonzero = selected, raster order), region by region.
// Without visual prompts (vp_tiles empty) this is vit_embeds reshaped to [T·P, D].
Tensor image_replacement_rows(const Tensor& vit_embeds, const std::vector<uint8_t>& vp_tiles = {},
                              const Tensor& region_masks = Tensor());
// The same selection as row indices into vit_embeds viewed as [T·P, D]: entry i is the row the i-th
// IMG_CONTEXT token takes (training gathers the rows with it and adds their gradients back).
std::vector<int64_t> image_replacement_indices(int64_t tiles, int64_t tokens_per_tile,
                                               const std::vector<uint8_t>& vp_tiles = {},
                                               const Tensor& region_masks = Tensor());

}  // namespace sa2va
