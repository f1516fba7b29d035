#include "models/llm.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <string>

#include "core/error.h"
#include "core/profile.h"
#include "ops/ops.h"

namespace sa2va {
namespace {

std::string layer_prefix(int i) { return "language_model.model.layers." + std::to_string(i) + "."; }

// InternLM2's packed wqkv holds, per KV group g, n_rep query heads, then key g, then value g
// (docs/llm.md §3.2). The rows of the fused matrix are all query heads, all keys, all values.
// Works on a stored tensor (the bias as a column) or a prepared matrix (quantized rows move whole).
template <typename Matrix, typename Block>
Matrix reorder_grouped_qkv(const Matrix& packed, int64_t kv_heads, int64_t n_rep, int64_t head_dim) {
  const int64_t group = (n_rep + 2) * head_dim;
  std::vector<Block> blocks;
  for (int64_t g = 0; g < kv_heads; ++g) blocks.push_back({packed, g * group, n_rep * head_dim});
  for (int64_t g = 0; g < kv_heads; ++g) blocks.push_back({packed, g * group + n_rep * head_dim, head_dim});
  for (int64_t g = 0; g < kv_heads; ++g) blocks.push_back({packed, g * group + (n_rep + 1) * head_dim, head_dim});
  return stack_rows(blocks);
}

// A bias vector [n] as a one-column matrix, so that stack_rows moves its entries like rows.
Tensor column(const Tensor& bias) { return bias.defined() ? bias.view({bias.numel(), 1}) : bias; }
Tensor flat(const Tensor& t) { return t.defined() ? t.view({t.numel()}) : t; }

}  // namespace

// ---- LlmState ------------------------------------------------------------------------------

void LlmState::truncate(int length) {
  check(length >= 0 && length <= length_, "language model state: cannot truncate " + std::to_string(length_) +
                                              " positions to " + std::to_string(length));
  length_ = length;
}

LlmState LanguageModel::new_state(int capacity, int max_step) const {
  check(capacity >= 1, "language model state: the capacity must be at least 1 position");
  if (max_step <= 0 || max_step > capacity) max_step = capacity;
  const int64_t D = config.hidden_size, I = config.intermediate_size, n = max_step;
  const int64_t q_dim = int64_t{config.num_heads} * config.head_dim;
  const Device dev = device();
  auto buffer = [dev](const Shape& shape) { return Tensor::empty(shape, DType::F32, dev); };
  LlmState s;
  s.kv_dim_ = config.num_kv_heads * config.head_dim;
  s.capacity_ = capacity;
  s.max_step_ = max_step;
  for (int l = 0; l < config.num_layers; ++l) {
    s.keys_.push_back(buffer({capacity, s.kv_dim_}));
    s.values_.push_back(buffer({capacity, s.kv_dim_}));
  }
  s.x_ = buffer({n, D});
  s.normed_ = buffer({n, D});
  s.branch_ = buffer({n, D});
  s.qkv_ = buffer({n, q_dim + 2 * s.kv_dim_});
  s.heads_ = buffer({n, q_dim});
  s.gate_ = buffer({n, I});
  s.up_ = buffer({n, I});
  s.out_ = buffer({n, D});
  s.logits_ = buffer({config.vocab_size});
  s.positions_.resize(static_cast<size_t>(n));
  if (!dev.is_cpu()) {
    s.device_positions_ = Tensor::empty({n}, DType::I64, dev);
    s.device_token_ = Tensor::empty({1}, DType::I64, dev);
    s.host_logits_ = Tensor::empty({config.vocab_size});
  }
  return s;
}

// ---- loading -------------------------------------------------------------------------------

std::string LanguageModel::embedding_name(LlmArch arch) {
  return arch == LlmArch::Qwen2 ? "language_model.model.embed_tokens.weight" : "language_model.model.tok_embeddings.weight";
}

std::string LanguageModel::head_name(LlmArch arch) {
  return arch == LlmArch::Qwen2 ? "language_model.lm_head.weight" : "language_model.output.weight";
}

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
  m.attention = MultiHeadAttention::configure(w, lc.num_heads, lc.head_dim, lc.num_kv_heads);
  constexpr MatrixUse kLlm = MatrixUse::LanguageModel;

  m.embedding = w.matrix(embedding_name(lc.arch), {V, D}, Init::Embedding);
  // Each matrix, once fused, in the arrangement the device's kernels stream fastest (a copy where it
  // differs: the stored pages are dropped as they are copied, a fused copy is freed at once).
  // On the CPU they are packed into huge pages (core/weight_arena.h): decode streams every one of
  // them per token.
  WeightArena arena;
  auto relayout = [&w, &arena](WeightMatrix& matrix) {
    const Tensor values = matrix.values(), scales = matrix.scales();
    matrix = ops::kernel_layout(matrix, [&](int64_t first, int64_t rows) {
      w.release(values.slice(0, first, first + rows));
      if (scales.defined()) w.release(scales.slice(0, first, first + rows));
    }, &arena);
  };
  m.layers.resize(static_cast<size_t>(lc.num_layers));
  for (int i = 0; i < lc.num_layers; ++i) {
    Layer& L = m.layers[static_cast<size_t>(i)];
    const std::string p = layer_prefix(i);
    if (qwen) {
      // Fused once at load; each part is prepared first (so a quantized folder's parts are not
      // converted), then their rows are copied together.
      const WeightMatrix wq = w.matrix(p + "self_attn.q_proj.weight", {q_dim, D}, Init::Linear, kLlm);
      const WeightMatrix wk = w.matrix(p + "self_attn.k_proj.weight", {kv_dim, D}, Init::Linear, kLlm);
      const WeightMatrix wv = w.matrix(p + "self_attn.v_proj.weight", {kv_dim, D}, Init::Linear, kLlm);
      L.wqkv = stack_rows(std::vector<MatrixRowBlock>{{wq, 0, q_dim}, {wk, 0, kv_dim}, {wv, 0, kv_dim}});
      for (const WeightMatrix* part : {&wq, &wk, &wv}) w.release(part->values());  // only the fused copy stays
      if (lc.attention_bias) {
        const Tensor bq = w.f32(p + "self_attn.q_proj.bias", {q_dim}, Init::Bias);
        const Tensor bk = w.f32(p + "self_attn.k_proj.bias", {kv_dim}, Init::Bias);
        const Tensor bv = w.f32(p + "self_attn.v_proj.bias", {kv_dim}, Init::Bias);
        L.bqkv = flat(stack_rows({{column(bq), 0, q_dim}, {column(bk), 0, kv_dim}, {column(bv), 0, kv_dim}}));
      }
      L.wo = w.matrix(p + "self_attn.o_proj.weight", {D, q_dim}, Init::Linear, kLlm);
      L.w_gate = w.matrix(p + "mlp.gate_proj.weight", {I, D}, Init::Linear, kLlm);
      L.w_up = w.matrix(p + "mlp.up_proj.weight", {I, D}, Init::Linear, kLlm);
      L.w_down = w.matrix(p + "mlp.down_proj.weight", {D, I}, Init::Linear, kLlm);
      L.attention_norm = w.f32(p + "input_layernorm.weight", {D}, Init::NormWeight);
      L.mlp_norm = w.f32(p + "post_attention_layernorm.weight", {D}, Init::NormWeight);
    } else {
      const int64_t n_rep = lc.num_heads / lc.num_kv_heads;
      const WeightMatrix packed = w.matrix(p + "attention.wqkv.weight", {q_dim + 2 * kv_dim, D}, Init::Linear, kLlm);
      L.wqkv = reorder_grouped_qkv<WeightMatrix, MatrixRowBlock>(packed, lc.num_kv_heads, n_rep, lc.head_dim);
      w.release(packed.values());
      L.wo = w.matrix(p + "attention.wo.weight", {D, q_dim}, Init::Linear, kLlm);
      if (lc.attention_bias) {
        const Tensor bqkv = w.f32(p + "attention.wqkv.bias", {q_dim + 2 * kv_dim}, Init::Bias);
        L.bqkv = flat(reorder_grouped_qkv<Tensor, RowBlock>(column(bqkv), lc.num_kv_heads, n_rep, lc.head_dim));
        L.bo = w.f32(p + "attention.wo.bias", {D}, Init::Bias);
      }
      L.w_gate = w.matrix(p + "feed_forward.w1.weight", {I, D}, Init::Linear, kLlm);
      L.w_up = w.matrix(p + "feed_forward.w3.weight", {I, D}, Init::Linear, kLlm);
      L.w_down = w.matrix(p + "feed_forward.w2.weight", {D, I}, Init::Linear, kLlm);
      L.attention_norm = w.f32(p + "attention_norm.weight", {D}, Init::NormWeight);
      L.mlp_norm = w.f32(p + "ffn_norm.weight", {D}, Init::NormWeight);
    }
    for (WeightMatrix* matrix : {&L.wqkv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}) relayout(*matrix);
  }
  m.final_norm = w.f32("language_model.model.norm.weight", {D}, Init::NormWeight);
  const std::string head_name = LanguageModel::head_name(lc.arch);
  // A separate head is used whenever the checkpoint has one, tied or not; without one the head is
  // the embedding matrix, also when tie_word_embeddings is false (docs/checkpoint.md §4). An untied
  // model still declares its head, so that make-model writes one.
  m.lm_head = !lc.tie_word_embeddings && w.declaring_only() ? w.matrix(head_name, {V, D}, Init::Linear, kLlm)
                                                            : w.optional_matrix(head_name, {V, D}, Init::Linear, kLlm);
  if (!m.lm_head.defined()) {
    // The tied head is decode's largest matrix (a third of its bytes for Sa2VA-1B): a quantized
    // format gives it a quantized copy of the embedding, whose lookup keeps the stored rows.
    // (`sa2va quantize` stores that copy under the head's name, so a quantized folder loads it as is.)
    const bool quantized_head = is_quantized(w.policy().llm_format) && m.embedding.defined();
    m.lm_head = quantized_head ? w.prepare(m.embedding.values(), kLlm) : m.embedding;
    // The lookup reads a few rows per token: they come back from the file as needed.
    if (quantized_head) w.release(m.embedding.values());
  }
  relayout(m.lm_head);
  return m;
}

// ---- embedding and head --------------------------------------------------------------------

Tensor LanguageModel::embed(const std::vector<int32_t>& ids) const {
  const int64_t D = config.hidden_size, V = embedding.rows();
  for (size_t t = 0; t < ids.size(); ++t)
    check(ids[t] >= 0 && ids[t] < V, "token id " + std::to_string(ids[t]) + " at position " + std::to_string(t) +
                                         " is outside the vocabulary [0, " + std::to_string(V) + ")");
  if (!device().is_cpu()) {
    // The lookup reads the stored rows (F32 or BF16, converted exactly) where they live.
    check(!is_quantized(embedding.format()), "token embedding: a quantized embedding has no GPU lookup");
    return ops::gather_rows(embedding.values(), std::vector<int64_t>(ids.begin(), ids.end()));
  }
  Tensor out = Tensor::empty({static_cast<int64_t>(ids.size()), D});
  for (size_t t = 0; t < ids.size(); ++t) embedding.dequantize_rows(ids[t], 1, out.f32() + static_cast<int64_t>(t) * D);
  return out;
}

Tensor LanguageModel::logits(const Tensor& hidden) const {
  check(hidden.dim() == 2 && hidden.size(1) == config.hidden_size,
        "language model logits: hidden states " + shape_str(hidden.shape()) + " are not [M, " +
            std::to_string(config.hidden_size) + "]");
  return ops::linear(hidden, lm_head);
}

const float* LanguageModel::last_logits(LlmState& state) const {
  const profile::Scope timed("llm.head");
  check(state.last_rows_ > 0, "language model: no forward step to take logits from");
  const int64_t D = config.hidden_size;
  ops::linear(state.out_.kernel_f32() + (state.last_rows_ - 1) * D, 1, D, lm_head, nullptr, state.logits_.kernel_f32());
  if (state.logits_.device().is_cpu()) return state.logits_.f32();
  state.host_logits_.copy_from(state.logits_);
  return state.host_logits_.f32();
}

// ---- decoder -------------------------------------------------------------------------------

float dynamic_rope_theta(const LlmConfig& config, int64_t total_length) {
  // Dynamic NTK only changes the base past the trained context (docs/llm.md §2).
  if (config.rope_scaling_type != "dynamic" || total_length <= config.max_position_embeddings) return config.rope_theta;
  const double f = config.rope_scaling_factor, hd = config.head_dim;
  const double ratio = f * static_cast<double>(total_length) / config.max_position_embeddings - (f - 1.0);
  return static_cast<float>(config.rope_theta * std::pow(ratio, hd / (hd - 2.0)));
}

void LanguageModel::attention_block(const Layer& layer, int layer_index, int64_t n, LlmState& state) const {
  const int64_t D = config.hidden_size, hd = config.head_dim, H = config.num_heads, KV = config.num_kv_heads;
  const int64_t q_dim = H * hd, kv_dim = KV * hd, qkv_dim = q_dim + 2 * kv_dim, pos0 = state.length_;
  float* const keys = state.keys(layer_index);
  float* const values = state.values(layer_index);
  float* const qkv = state.qkv_.kernel_f32();

  // One product gives q | k | v per token; q stays in place, k and v go to the state.
  ops::linear(state.normed_.kernel_f32(), n, D, layer.wqkv, layer.bqkv.defined() ? layer.bqkv.kernel_f32() : nullptr,
              qkv);
  ops::copy_rows(qkv + q_dim, qkv_dim, keys + pos0 * kv_dim, kv_dim, n, kv_dim);
  ops::copy_rows(qkv + q_dim + kv_dim, qkv_dim, values + pos0 * kv_dim, kv_dim, n, kv_dim);

  const int64_t* positions = state.step_positions_;
  const float theta = rope_theta(pos0 + n);
  ops::rope_rotate_half(qkv, n, H, hd, qkv_dim, positions, theta);
  ops::rope_rotate_half(keys + pos0 * kv_dim, n, KV, hd, kv_dim, positions, theta);

  // Causal grouped-query attention over every position so far (the state's keys and values).
  ops::AttentionArgs a = attention.args({qkv, qkv_dim}, {keys, kv_dim}, {values, kv_dim}, state.heads_.kernel_f32(),
                                        q_dim, n, pos0 + n);
  a.causal = true;
  a.q_offset = pos0;
  ops::attention(a);
  ops::linear(state.heads_.kernel_f32(), n, q_dim, layer.wo, layer.bo.defined() ? layer.bo.kernel_f32() : nullptr,
              state.branch_.kernel_f32());
}

void LanguageModel::set_step_positions(int64_t n, LlmState& state) const {
  int64_t* positions = state.positions_.data();
  for (int64_t t = 0; t < n; ++t) positions[t] = state.length_ + t;
  state.step_positions_ = positions;
  if (state.device_positions_.defined()) {  // RoPE reads them where it runs
    const Tensor used = state.device_positions_.slice(0, 0, n);
    used.copy_from(Tensor::borrow(positions, {n}, DType::I64, nullptr));
    state.step_positions_ = static_cast<const int64_t*>(used.device_data());
  }
}

Tensor LanguageModel::run_layers(int64_t n, LlmState& state, const ExecContext& ctx) const {
  const int64_t D = config.hidden_size, L = config.num_layers;
  const int64_t pos0 = state.length_;
  set_step_positions(n, state);
  float* const x = state.x_.kernel_f32();
  float* const normed = state.normed_.kernel_f32();
  float* const branch = state.branch_.kernel_f32();
  Tensor all_hidden;  // on the host, for the recorder
  if (ctx.recorder) {
    ctx.record("llm.inputs_embeds", state.x_.slice(0, 0, n));
    all_hidden = Tensor::empty({L + 1, n, D});
    all_hidden.select(0, 0).copy_from(state.x_.slice(0, 0, n));
  }
  const float eps = config.rms_norm_eps;
  for (int64_t l = 0; l < L; ++l) {
    const Layer& layer = layers[static_cast<size_t>(l)];
    ops::rms_norm(x, layer.attention_norm.kernel_f32(), normed, n, D, eps);
    attention_block(layer, static_cast<int>(l), n, state);
    ops::add(x, branch, x, n * D);

    ops::rms_norm(x, layer.mlp_norm.kernel_f32(), normed, n, D, eps);
    ops::gated_feed_forward(normed, n, D, layer.w_gate, layer.w_up, state.gate_.kernel_f32(), state.up_.kernel_f32(),
                            layer.w_down, branch);
    ops::add(x, branch, x, n * D);
    if (ctx.recorder && l + 1 < L) all_hidden.select(0, l + 1).copy_from(state.x_.slice(0, 0, n));
  }
  state.length_ = static_cast<int>(pos0 + n);
  state.last_rows_ = n;

  ops::rms_norm(x, final_norm.kernel_f32(), state.out_.kernel_f32(), n, D, eps);
  const Tensor out = state.out_.slice(0, 0, n);
  if (ctx.recorder) {
    all_hidden.select(0, L).copy_from(out);
    ctx.record("llm.hidden_states", all_hidden);
    ctx.record("llm.last_hidden_state", out);
  }
  return out;
}

void LanguageModel::check_step(int64_t n, const LlmState& state) const {
  check(state.keys_.size() == layers.size() && state.kv_dim_ == config.num_kv_heads * config.head_dim &&
            state.x_.defined() && state.x_.size(1) == config.hidden_size,
        "language model: the state was made for a different model");
  check(n >= 1 && n <= state.max_step_, "language model: a step of " + std::to_string(n) +
                                            " tokens exceeds the state's largest step (" +
                                            std::to_string(state.max_step_) + ")");
  check(state.length_ + n <= state.capacity_,
        "language model: " + std::to_string(state.length_ + n) + " positions exceed the state's capacity (" +
            std::to_string(state.capacity_) + ")");
}

Tensor LanguageModel::forward(const Tensor& inputs_embeds, LlmState& state, const ExecContext& ctx) const {
  const profile::Scope timed(inputs_embeds.defined() && inputs_embeds.size(0) > 1 ? "llm.prefill" : "llm.decode_step");
  const int64_t D = config.hidden_size;
  check(inputs_embeds.defined() && inputs_embeds.dim() == 2 && inputs_embeds.size(1) == D,
        "language model: inputs_embeds " + (inputs_embeds.defined() ? shape_str(inputs_embeds.shape()) : "(none)") +
            " are not [N, " + std::to_string(D) + "]");
  const int64_t n = inputs_embeds.size(0);
  check_step(n, state);
  const Tensor src = inputs_embeds.dtype() == DType::F32 ? inputs_embeds.contiguous() : inputs_embeds.to(DType::F32);
  state.x_.slice(0, 0, n).copy_from(src);
  return run_layers(n, state, ctx);
}

Tensor LanguageModel::forward_token(int32_t id, LlmState& state) const {
  const profile::Scope timed("llm.decode_step");
  check(id >= 0 && id < embedding.rows(), "token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                                              std::to_string(embedding.rows()) + ")");
  check_step(1, state);
  if (state.x_.device().is_cpu()) {
    embedding.dequantize_rows(id, 1, state.x_.f32());
  } else {  // the id goes where the lookup reads it; nothing is allocated
    int64_t host_id = id;
    state.device_token_.copy_from(Tensor::borrow(&host_id, {1}, DType::I64, nullptr));
    ops::gather_rows(embedding.values(), static_cast<const int64_t*>(state.device_token_.device_data()), 1,
                     state.x_.kernel_f32());
  }
  return run_layers(1, state, ExecContext{});
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
  check(replacement_rows.device() == inputs_embeds.device(), "image splice: the image features live on " +
                                                                 replacement_rows.device().name() + ", the prompt on " +
                                                                 inputs_embeds.device().name());
  inputs_embeds = inputs_embeds.contiguous();
  const Tensor src = replacement_rows.dtype() == DType::F32 ? replacement_rows.contiguous()
                                                             : replacement_rows.to(DType::F32);
  // Each run of consecutive image-context tokens takes the next rows in one copy.
  int64_t next = 0;
  for (int64_t t = 0; t < n;) {
    if (ids[static_cast<size_t>(t)] != img_context_id) {
      ++t;
      continue;
    }
    int64_t run = 1;
    while (t + run < n && ids[static_cast<size_t>(t + run)] == img_context_id) ++run;
    ops::copy_rows(src.kernel_f32() + next * D, D, inputs_embeds.kernel_f32() + t * D, D, run, D);
    next += run;
    t += run;
  }
  return inputs_embeds;
}

std::vector<int64_t> image_replacement_indices(int64_t T, int64_t P, const std::vector<uint8_t>& vp_tiles,
                                               const Tensor& region_masks) {
  check(T >= 0 && P >= 0, "image features: negative tile or token count");
  std::vector<int64_t> rows;
  if (vp_tiles.empty()) {
    rows.resize(static_cast<size_t>(T * P));
    std::iota(rows.begin(), rows.end(), int64_t{0});
    return rows;
  }
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
  for (int64_t i = 0; i < T; ++i) {
    for (int64_t t = 0; t < P; ++t) rows.push_back(i * P + t);
    if (vp_tiles[static_cast<size_t>(i)])
      for (int64_t t : selected) rows.push_back(i * P + t);
  }
  return rows;
}

Tensor image_replacement_rows(const Tensor& vit_embeds, const std::vector<uint8_t>& vp_tiles,
                              const Tensor& region_masks) {
  check(vit_embeds.defined() && vit_embeds.dim() == 3, "image features must be [tiles, tokens, D]");
  const int64_t T = vit_embeds.size(0), P = vit_embeds.size(1), D = vit_embeds.size(2);
  const Tensor vit = vit_embeds.dtype() == DType::F32 ? vit_embeds.contiguous() : vit_embeds.to(DType::F32);
  if (vp_tiles.empty()) return vit.view({T * P, D});
  const std::vector<int64_t> rows = image_replacement_indices(T, P, vp_tiles, region_masks);
  Tensor out = Tensor::empty({static_cast<int64_t>(rows.size()), D}, DType::F32, vit.device());
  // Runs of consecutive rows (a whole tile, or a region's neighbouring cells) in one copy each.
  for (size_t i = 0; i < rows.size();) {
    size_t end = i + 1;
    while (end < rows.size() && rows[end] == rows[end - 1] + 1) ++end;
    ops::copy_rows(vit.kernel_f32() + rows[i] * D, D, out.kernel_f32() + static_cast<int64_t>(i) * D, D,
                   static_cast<int64_t>(end - i), D);
    i = end;
  }
  return out;
}

}  // namespace sa2va
