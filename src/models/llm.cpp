#include "models/llm.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "core/error.h"
#include "core/profile.h"
#include "ops/ops.h"

namespace sa2va {
namespace {

std::string layer_prefix(int i) { return "language_model.model.layers." + std::to_string(i) + "."; }

void copy_rows(const float* src, int64_t src_stride, float* dst, int64_t dst_stride, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(dst + r * dst_stride, src + r * src_stride, static_cast<size_t>(cols) * sizeof(float));
}

}  // namespace

// ---- KVCache -------------------------------------------------------------------------------

KVCache::KVCache(int layers, int capacity, int kv_dim) : kv_dim_(kv_dim) {
  keys_.resize(static_cast<size_t>(layers));
  values_.resize(static_cast<size_t>(layers));
  reserve(std::max(capacity, 1));
}

void KVCache::truncate(int length) {
  check(length >= 0 && length <= length_, "KV cache: cannot truncate " + std::to_string(length_) +
                                              " positions to " + std::to_string(length));
  length_ = length;
}

void KVCache::reserve(int capacity) {
  if (capacity <= capacity_) return;
  const int grown = std::max(capacity, capacity_ + capacity_ / 2);
  for (size_t l = 0; l < keys_.size(); ++l) {
    for (Tensor* t : {&keys_[l], &values_[l]}) {
      Tensor bigger = Tensor::empty({grown, kv_dim_});
      if (length_ > 0) std::memcpy(bigger.f32(), t->f32(), static_cast<size_t>(length_) * kv_dim_ * sizeof(float));
      *t = bigger;
    }
  }
  capacity_ = grown;
}

// ---- loading -------------------------------------------------------------------------------

LanguageModel LanguageModel::load(Weights& w, const ModelConfig& c) {
  LanguageModel m;
  m.config = c.llm;
  const LlmConfig& lc = c.llm;
  check(lc.hidden_size > 0 && lc.num_layers > 0 && lc.num_heads > 0 && lc.num_kv_heads > 0 && lc.head_dim > 0 &&
            lc.intermediate_size > 0 && lc.vocab_size > 0,
        "llm_config: hidden size, layers, heads, head_dim, intermediate size and vocabulary must be positive");
  check(lc.num_heads % lc.num_kv_heads == 0, "llm_config: num_attention_heads (" + std::to_string(lc.num_heads) +
                                                 ") must be a multiple of num_key_value_heads (" +
                                                 std::to_string(lc.num_kv_heads) + ")");
  check(lc.head_dim % 2 == 0, "llm_config: head_dim must be even for rotary embeddings");
  const int64_t D = lc.hidden_size, V = lc.vocab_size, I = lc.intermediate_size;
  const int64_t q_dim = int64_t{lc.num_heads} * lc.head_dim, kv_dim = int64_t{lc.num_kv_heads} * lc.head_dim;
  const bool qwen = lc.arch == LlmArch::Qwen2;

  m.embedding = w.matrix(qwen ? "language_model.model.embed_tokens.weight" : "language_model.model.tok_embeddings.weight",
                         {V, D}, Init::Embedding);
  m.layers.resize(static_cast<size_t>(lc.num_layers));
  for (int i = 0; i < lc.num_layers; ++i) {
    Layer& L = m.layers[static_cast<size_t>(i)];
    const std::string p = layer_prefix(i);
    if (qwen) {
      L.wq = w.matrix(p + "self_attn.q_proj.weight", {q_dim, D});
      L.wk = w.matrix(p + "self_attn.k_proj.weight", {kv_dim, D});
      L.wv = w.matrix(p + "self_attn.v_proj.weight", {kv_dim, D});
      if (lc.attention_bias) {
        L.bq = w.f32(p + "self_attn.q_proj.bias", {q_dim}, Init::Bias);
        L.bk = w.f32(p + "self_attn.k_proj.bias", {kv_dim}, Init::Bias);
        L.bv = w.f32(p + "self_attn.v_proj.bias", {kv_dim}, Init::Bias);
      }
      L.wo = w.matrix(p + "self_attn.o_proj.weight", {D, q_dim});
      L.w_gate = w.matrix(p + "mlp.gate_proj.weight", {I, D});
      L.w_up = w.matrix(p + "mlp.up_proj.weight", {I, D});
      L.w_down = w.matrix(p + "mlp.down_proj.weight", {D, I});
      L.attention_norm = w.f32(p + "input_layernorm.weight", {D}, Init::NormWeight);
      L.mlp_norm = w.f32(p + "post_attention_layernorm.weight", {D}, Init::NormWeight);
    } else {
      L.wqkv = w.matrix(p + "attention.wqkv.weight", {q_dim + 2 * kv_dim, D});
      L.wo = w.matrix(p + "attention.wo.weight", {D, q_dim});
      if (lc.attention_bias) {
        L.bqkv = w.f32(p + "attention.wqkv.bias", {q_dim + 2 * kv_dim}, Init::Bias);
        L.bo = w.f32(p + "attention.wo.bias", {D}, Init::Bias);
      }
      L.w_gate = w.matrix(p + "feed_forward.w1.weight", {I, D});
      L.w_up = w.matrix(p + "feed_forward.w3.weight", {I, D});
      L.w_down = w.matrix(p + "feed_forward.w2.weight", {D, I});
      L.attention_norm = w.f32(p + "attention_norm.weight", {D}, Init::NormWeight);
      L.mlp_norm = w.f32(p + "ffn_norm.weight", {D}, Init::NormWeight);
    }
  }
  m.final_norm = w.f32("language_model.model.norm.weight", {D}, Init::NormWeight);
  const std::string head_name = qwen ? "language_model.lm_head.weight" : "language_model.output.weight";
  // Tied checkpoints may still carry a separate head (checkpoint.md: use it when present).
  m.lm_head = lc.tie_word_embeddings ? w.optional_matrix(head_name, {V, D}) : w.matrix(head_name, {V, D});
  if (!m.lm_head.defined()) m.lm_head = m.embedding;
  return m;
}

KVCache LanguageModel::new_cache(int max_tokens) const {
  return KVCache(config.num_layers, max_tokens, config.num_kv_heads * config.head_dim);
}

// ---- embedding and head --------------------------------------------------------------------

Tensor LanguageModel::embed(const std::vector<int32_t>& ids) const {
  const int64_t D = config.hidden_size, V = embedding.size(0);
  Tensor out = Tensor::empty({static_cast<int64_t>(ids.size()), D});
  for (size_t t = 0; t < ids.size(); ++t) {
    const int32_t id = ids[t];
    check(id >= 0 && id < V, "token id " + std::to_string(id) + " at position " + std::to_string(t) +
                                 " is outside the vocabulary [0, " + std::to_string(V) + ")");
    float* dst = out.f32() + static_cast<int64_t>(t) * D;
    if (embedding.dtype() == DType::BF16)
      convert_bf16_to_f32(embedding.bf16() + id * D, dst, static_cast<size_t>(D));
    else
      std::memcpy(dst, embedding.f32() + id * D, static_cast<size_t>(D) * sizeof(float));
  }
  return out;
}

Tensor LanguageModel::logits(const Tensor& hidden) const {
  check(hidden.dim() == 2 && hidden.size(1) == config.hidden_size,
        "language model logits: hidden states " + shape_str(hidden.shape()) + " are not [M, " +
            std::to_string(config.hidden_size) + "]");
  return ops::linear(hidden, lm_head);
}

// ---- decoder -------------------------------------------------------------------------------

float LanguageModel::rope_theta(int64_t total_length) const {
  // Dynamic NTK only changes the base past the trained context (llm.md §2).
  if (config.rope_scaling_type != "dynamic" || total_length <= config.max_position_embeddings) return config.rope_theta;
  const double f = config.rope_scaling_factor, hd = config.head_dim;
  const double ratio = f * static_cast<double>(total_length) / config.max_position_embeddings - (f - 1.0);
  return static_cast<float>(config.rope_theta * std::pow(ratio, hd / (hd - 2.0)));
}

void LanguageModel::attention_block(const Layer& layer, int layer_index, const float* normed, int64_t n,
                                    KVCache& cache, float* out) const {
  const int64_t D = config.hidden_size, hd = config.head_dim, H = config.num_heads, KV = config.num_kv_heads;
  const int64_t q_dim = H * hd, kv_dim = KV * hd, pos0 = cache.length();
  float* keys = cache.keys(layer_index) + pos0 * kv_dim;
  float* values = cache.values(layer_index) + pos0 * kv_dim;

  Tensor q = Tensor::empty({n, q_dim});
  if (layer.wqkv.defined()) {
    // Packed InternLM2 projection: per KV group g, n_rep query heads, then key g, then value g.
    const int64_t n_rep = H / KV, group = (n_rep + 2) * hd, qkv_dim = KV * group;
    Tensor qkv = Tensor::empty({n, qkv_dim});
    ops::linear(normed, n, D, layer.wqkv, layer.bqkv.defined() ? layer.bqkv.f32() : nullptr, qkv.f32());
    for (int64_t g = 0; g < KV; ++g) {
      const float* src = qkv.f32() + g * group;
      copy_rows(src, qkv_dim, q.f32() + g * n_rep * hd, q_dim, n, n_rep * hd);
      copy_rows(src + n_rep * hd, qkv_dim, keys + g * hd, kv_dim, n, hd);
      copy_rows(src + (n_rep + 1) * hd, qkv_dim, values + g * hd, kv_dim, n, hd);
    }
  } else {
    ops::linear(normed, n, D, layer.wq, layer.bq.defined() ? layer.bq.f32() : nullptr, q.f32());
    ops::linear(normed, n, D, layer.wk, layer.bk.defined() ? layer.bk.f32() : nullptr, keys);
    ops::linear(normed, n, D, layer.wv, layer.bv.defined() ? layer.bv.f32() : nullptr, values);
  }

  std::vector<int64_t> positions(static_cast<size_t>(n));
  for (int64_t t = 0; t < n; ++t) positions[static_cast<size_t>(t)] = pos0 + t;
  const float theta = rope_theta(pos0 + n);
  ops::rope_rotate_half(q.f32(), n, H, hd, q_dim, positions.data(), theta);
  ops::rope_rotate_half(keys, n, KV, hd, kv_dim, positions.data(), theta);

  Tensor heads = Tensor::empty({n, q_dim});
  ops::AttentionArgs a;
  a.q = q.f32();
  a.q_stride = q_dim;
  a.k = cache.keys(layer_index);
  a.k_stride = kv_dim;
  a.v = cache.values(layer_index);
  a.v_stride = kv_dim;
  a.out = heads.f32();
  a.out_stride = q_dim;
  a.q_len = n;
  a.kv_len = pos0 + n;
  a.q_heads = H;
  a.kv_heads = KV;
  a.head_dim = hd;
  a.scale = 1.f / std::sqrt(static_cast<float>(hd));
  a.causal = true;
  a.q_offset = pos0;
  a.bf16_operands = layer.wo.dtype() == DType::BF16;
  ops::attention(a);
  ops::linear(heads.f32(), n, q_dim, layer.wo, layer.bo.defined() ? layer.bo.f32() : nullptr, out);
}

Tensor LanguageModel::forward(const Tensor& inputs_embeds, KVCache& cache, StageRecorder* rec) const {
  const profile::Scope timed(inputs_embeds.defined() && inputs_embeds.size(0) > 1 ? "llm.prefill" : "llm.decode_step");
  const int64_t D = config.hidden_size, I = config.intermediate_size, L = config.num_layers;
  check(inputs_embeds.defined() && inputs_embeds.dim() == 2 && inputs_embeds.size(1) == D,
        "language model: inputs_embeds " + (inputs_embeds.defined() ? shape_str(inputs_embeds.shape()) : "(none)") +
            " are not [N, " + std::to_string(D) + "]");
  check(cache.keys_.size() == layers.size() && cache.kv_dim() == config.num_kv_heads * config.head_dim,
        "language model: the KV cache was made for a different model");
  const int64_t n = inputs_embeds.size(0);
  const int64_t pos0 = cache.length();
  cache.reserve(static_cast<int>(pos0 + n));

  Tensor x = inputs_embeds.dtype() == DType::F32 ? inputs_embeds.clone() : inputs_embeds.to(DType::F32);
  Tensor all_hidden;
  if (rec) {
    rec->record("llm.inputs_embeds", x);
    all_hidden = Tensor::empty({L + 1, n, D});
    std::memcpy(all_hidden.f32(), x.f32(), x.nbytes());
  }

  Tensor normed = Tensor::empty({n, D}), branch = Tensor::empty({n, D});
  Tensor gate = Tensor::empty({n, I}), up = Tensor::empty({n, I});
  const float eps = config.rms_norm_eps;
  for (int64_t l = 0; l < L; ++l) {
    const Layer& layer = layers[static_cast<size_t>(l)];
    ops::rms_norm(x.f32(), layer.attention_norm.f32(), normed.f32(), n, D, eps);
    attention_block(layer, static_cast<int>(l), normed.f32(), n, cache, branch.f32());
    ops::add(x.f32(), branch.f32(), x.f32(), n * D);

    ops::rms_norm(x.f32(), layer.mlp_norm.f32(), normed.f32(), n, D, eps);
    ops::linear(normed.f32(), n, D, layer.w_gate, nullptr, gate.f32());
    ops::linear(normed.f32(), n, D, layer.w_up, nullptr, up.f32());
    ops::silu_mul(gate.f32(), up.f32(), n * I);
    ops::linear(gate.f32(), n, I, layer.w_down, nullptr, branch.f32());
    ops::add(x.f32(), branch.f32(), x.f32(), n * D);
    if (rec && l + 1 < L) std::memcpy(all_hidden.f32() + (l + 1) * n * D, x.f32(), x.nbytes());
  }
  cache.length_ = static_cast<int>(pos0 + n);

  Tensor out = Tensor::empty({n, D});
  ops::rms_norm(x.f32(), final_norm.f32(), out.f32(), n, D, eps);
  if (rec) {
    std::memcpy(all_hidden.f32() + L * n * D, out.f32(), out.nbytes());
    rec->record("llm.hidden_states", all_hidden);
    rec->record("llm.last_hidden_state", out);
  }
  return out;
}

// ---- image-embedding splice ----------------------------------------------------------------

Tensor splice_image_embeddings(Tensor inputs_embeds, const std::vector<int32_t>& ids, int32_t img_context_id,
                               const Tensor& replacement_rows) {
  check(inputs_embeds.defined() && inputs_embeds.dim() == 2 && inputs_embeds.dtype() == DType::F32,
        "image splice: inputs_embeds must be an F32 [N, D] tensor");
  const int64_t n = inputs_embeds.size(0), D = inputs_embeds.size(1);
  check(static_cast<int64_t>(ids.size()) == n, "image splice: " + std::to_string(ids.size()) + " ids for " +
                                                   std::to_string(n) + " embedding rows");
  check(replacement_rows.defined() && replacement_rows.dim() == 2 && replacement_rows.size(1) == D,
        "image splice: image features " +
            (replacement_rows.defined() ? shape_str(replacement_rows.shape()) : std::string("(none)")) +
            " are not [R, " + std::to_string(D) + "]");
  const int64_t slots = std::count(ids.begin(), ids.end(), img_context_id);
  const int64_t rows = replacement_rows.size(0);
  check(slots == rows, "image splice: the prompt has " + std::to_string(slots) + " image-context tokens but " +
                           std::to_string(rows) + " image feature rows were given");
  inputs_embeds = inputs_embeds.contiguous();
  const Tensor src = replacement_rows.dtype() == DType::F32 ? replacement_rows.contiguous()
                                                             : replacement_rows.to(DType::F32);
  int64_t next = 0;
  for (int64_t t = 0; t < n; ++t) {
    if (ids[static_cast<size_t>(t)] != img_context_id) continue;
    std::memcpy(inputs_embeds.f32() + t * D, src.f32() + next * D, static_cast<size_t>(D) * sizeof(float));
    ++next;
  }
  return inputs_embeds;
}

Tensor image_replacement_rows(const Tensor& vit_embeds, const std::vector<uint8_t>& vp_tiles,
                              const Tensor& region_masks) {
  check(vit_embeds.defined() && vit_embeds.dim() == 3, "image features must be [tiles, tokens, D]");
  const int64_t T = vit_embeds.size(0), P = vit_embeds.size(1), D = vit_embeds.size(2);
  const Tensor vit = vit_embeds.dtype() == DType::F32 ? vit_embeds.contiguous() : vit_embeds.to(DType::F32);
  if (vp_tiles.empty()) return vit.view({T * P, D});

  check(static_cast<int64_t>(vp_tiles.size()) == T, "visual prompts: the tile mask has " +
                                                        std::to_string(vp_tiles.size()) + " entries for " +
                                                        std::to_string(T) + " tiles");
  check(region_masks.defined() && region_masks.dim() >= 1 && region_masks.size(0) > 0 &&
            (region_masks.dtype() == DType::U8 || region_masks.dtype() == DType::BOOL) &&
            region_masks.numel() == region_masks.size(0) * P,
        "visual prompts: region masks must be U8/BOOL [K, " + std::to_string(P) + "] (one cell per image token)");
  const Tensor masks = region_masks.contiguous();
  const int64_t K = masks.size(0);
  const uint8_t* m = masks.data<uint8_t>();
  std::vector<int64_t> selected;  // token indices of all regions, region by region, raster order
  for (int64_t k = 0; k < K; ++k)
    for (int64_t t = 0; t < P; ++t)
      if (m[k * P + t]) selected.push_back(t);
  const int64_t vp_count = std::count_if(vp_tiles.begin(), vp_tiles.end(), [](uint8_t v) { return v != 0; });

  Tensor out = Tensor::empty({T * P + vp_count * static_cast<int64_t>(selected.size()), D});
  float* dst = out.f32();
  const size_t row_bytes = static_cast<size_t>(D) * sizeof(float);
  for (int64_t i = 0; i < T; ++i) {
    const float* tile = vit.f32() + i * P * D;
    std::memcpy(dst, tile, static_cast<size_t>(P) * row_bytes);
    dst += P * D;
    if (!vp_tiles[static_cast<size_t>(i)]) continue;
    for (int64_t t : selected) {
      std::memcpy(dst, tile + t * D, row_bytes);
      dst += D;
    }
  }
  return out;
}

}  // namespace sa2va
