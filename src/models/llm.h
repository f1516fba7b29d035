// The language model of Sa2VA: a Qwen2 (1B/4B) or InternLM2 (8B) causal decoder (spec/llm.md),
// plus the splice that puts image features into the prompt embeddings (spec/llm.md §4).
//
// Both architectures share one decoder: RMSNorm → GQA attention with rotate-half RoPE → residual,
// RMSNorm → SwiGLU MLP → residual; final RMSNorm; lm_head. They differ only in weight names,
// q/k/v biases and InternLM2's packed wqkv, which load() and the projection step absorb.
#pragma once
#include <cstdint>
#include <vector>

#include "core/stages.h"
#include "core/tensor.h"
#include "io/config.h"
#include "io/weights.h"

namespace sa2va {

// Per-request attention state: the rotated keys and the values of every position seen so far,
// per layer, in f32. Grows on demand beyond the initial capacity.
class KVCache {
 public:
  KVCache() = default;
  KVCache(int layers, int capacity, int kv_dim);

  int length() const { return length_; }
  int capacity() const { return capacity_; }
  int kv_dim() const { return kv_dim_; }
  // Forgets everything after the first `length` positions (e.g. to re-run a turn).
  void truncate(int length);

  // Rows [0, capacity) × kv_dim of layer `layer`; rows < length() are valid.
  float* keys(int layer) { return keys_[layer].f32(); }
  float* values(int layer) { return values_[layer].f32(); }

 private:
  friend struct LanguageModel;
  void reserve(int capacity);

  std::vector<Tensor> keys_, values_;  // per layer [capacity, kv_dim]
  int length_ = 0, capacity_ = 0, kv_dim_ = 0;
};

struct LanguageModel {
  struct Layer {
    Tensor attention_norm, mlp_norm;  // F32 [D]
    // Qwen2: separate projections with biases. InternLM2: packed `wqkv` (grouped layout, llm.md §3).
    Tensor wq, wk, wv, bq, bk, bv;
    Tensor wqkv, bqkv;
    Tensor wo, bo;  // bo only for InternLM2 with `bias: true`
    Tensor w_gate, w_up, w_down;
  };

  LlmConfig config;
  Tensor embedding;  // [V, D]: F32, or BF16 in bf16 mode (rows are widened when gathered)
  std::vector<Layer> layers;
  Tensor final_norm;  // F32 [D]
  Tensor lm_head;     // [V, D]; the embedding itself when tied

  // Binds language_model.* (Qwen2 or InternLM2 names, checkpoint.md §3.3/3.4).
  static LanguageModel load(Weights& w, const ModelConfig& c);

  int hidden_size() const { return config.hidden_size; }
  int vocab_size() const { return config.vocab_size; }

  // Embedding rows of `ids` → [N, D] F32. Throws Error for an id outside the vocabulary.
  Tensor embed(const std::vector<int32_t>& ids) const;

  // Runs the decoder on `inputs_embeds` [N, D] at positions cache.length() … + N − 1, appending
  // their keys/values to the cache. Returns the final-norm hidden states [N, D].
  // With `rec`: records llm.inputs_embeds, llm.hidden_states [L+1, N, D] (transformers
  // convention: [0] inputs, [i] output of layer i, [L] final norm) and llm.last_hidden_state.
  Tensor forward(const Tensor& inputs_embeds, KVCache& cache, StageRecorder* rec = nullptr) const;

  // lm_head: hidden [M, D] → logits [M, V].
  Tensor logits(const Tensor& hidden) const;

  KVCache new_cache(int max_tokens) const;

 private:
  void attention_block(const Layer& layer, int layer_index, const float* normed, int64_t n, KVCache& cache,
                       float* out) const;
  float rope_theta(int64_t total_length) const;
};

// Overwrites, in position order, every row of `inputs_embeds` [N, D] whose id is `img_context_id`
// with the next row of `replacement_rows` [R, D]; returns the updated tensor (shares storage with the
// argument). Throws Error when the number of IMG_CONTEXT tokens differs from R.
Tensor splice_image_embeddings(Tensor inputs_embeds, const std::vector<int32_t>& ids, int32_t img_context_id,
                               const Tensor& replacement_rows);

// The rows that replace the IMG_CONTEXT tokens (llm.md §4): for each tile i all its tokens of
// `vit_embeds` [T, P, D]; right after every tile with vp_tiles[i] != 0, the tokens selected by each
// region mask of `region_masks` [K, P] (nonzero = selected, raster order), region by region.
// Without visual prompts (vp_tiles empty) this is vit_embeds reshaped to [T·P, D].
Tensor image_replacement_rows(const Tensor& vit_embeds, const std::vector<uint8_t>& vp_tiles = {},
                              const Tensor& region_masks = Tensor());

}  // namespace sa2va
