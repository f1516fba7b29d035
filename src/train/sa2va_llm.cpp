#include "train/sa2va_llm.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "models/llm.h"
#include "ops/ops.h"
#include "train/backward.h"
#include "train/losses.h"

namespace sa2va::train {
namespace {

constexpr float kMlp1NormEps = 1e-5f;  // torch LayerNorm's default, as InternVL builds mlp1

Tensor f32(const Checkpoint& c, const std::string& name) { return c.get(name).to(DType::F32); }

// Supervised rows go through the tied head this many at a time, so that the logits held at once
// stay [kHeadChunk, V] however long the answer.
constexpr int64_t kHeadChunk = 64;

// The mlp1 output row that the i-th <IMG_CONTEXT> token of the sample takes.
int64_t image_row(const TrainableLanguageModel::Sample& s, int64_t i) {
  return s.image_rows.empty() ? i : s.image_rows[static_cast<size_t>(i)];
}

}  // namespace

std::vector<int64_t> grouped_qkv_rows(int64_t heads, int64_t kv_heads, int64_t head_dim) {
  const int64_t n_rep = heads / kv_heads, group = (n_rep + 2) * head_dim;
  std::vector<int64_t> rows;
  for (int64_t g = 0; g < kv_heads; ++g)  // query heads of every group
    for (int64_t r = 0; r < n_rep * head_dim; ++r) rows.push_back(g * group + r);
  for (int64_t g = 0; g < kv_heads; ++g)  // keys
    for (int64_t r = 0; r < head_dim; ++r) rows.push_back(g * group + n_rep * head_dim + r);
  for (int64_t g = 0; g < kv_heads; ++g)  // values
    for (int64_t r = 0; r < head_dim; ++r) rows.push_back(g * group + (n_rep + 1) * head_dim + r);
  return rows;
}

std::vector<std::string> TrainableLanguageModel::lora_module_paths(const ModelConfig& config) {
  const bool internlm2 = config.llm.arch == LlmArch::InternLM2;
  const LayerModuleNames names = internlm2 ? internlm2_module_names() : LayerModuleNames();
  std::vector<std::string> paths;
  for (int i = 0; i < config.llm.num_layers; ++i) {
    const std::string p = "language_model.model.layers." + std::to_string(i) + ".";
    if (internlm2) {
      paths.push_back(p + names.qkv);
    } else {
      for (const std::string* n : {&names.q, &names.k, &names.v}) paths.push_back(p + *n);
    }
    for (const std::string* n : {&names.o, &names.gate, &names.up, &names.down}) paths.push_back(p + *n);
  }
  return paths;
}

TrainableLanguageModel TrainableLanguageModel::load(const Checkpoint& c, const ModelConfig& config,
                                                    const std::map<std::string, std::pair<Tensor, Tensor>>& lora,
                                                    float lora_scale) {
  const bool internlm2 = config.llm.arch == LlmArch::InternLM2;
  check(config.llm.arch == LlmArch::Qwen2 || internlm2, "training: the language model must be Qwen2 or InternLM2");
  TrainableLanguageModel m;
  m.embedding_name_ = LanguageModel::embedding_name(config.llm.arch);
  m.embedding_ = f32(c, m.embedding_name_);
  // A stored head beside tied embeddings is the embedding's copy (the export writes it so); an
  // untied model trains its own head.
  if (!config.llm.tie_word_embeddings) {
    m.head_name_ = LanguageModel::head_name(config.llm.arch);
    m.head_ = c.has(m.head_name_) ? f32(c, m.head_name_) : m.embedding_.clone();
  }
  m.final_norm_ = f32(c, "language_model.model.norm.weight");
  m.rms_eps_ = config.llm.rms_norm_eps;
  m.llm_config_ = config.llm;
  const auto lora_linear = [&](const std::string& path, bool bias, const std::vector<int64_t>* rows = nullptr) {
    LoraLinear l;
    l.weight = f32(c, path + ".weight");
    if (bias) l.bias = f32(c, path + ".bias");
    const auto it = lora.find(path);
    check(it != lora.end(), "training: no LoRA tensors for " + path);
    l.a = it->second.first.to(DType::F32);
    l.b = it->second.second.to(DType::F32);
    if (rows) {  // the output rows in the layer's internal order
      l.weight = ops::gather_rows(l.weight, *rows);
      l.b = ops::gather_rows(l.b, *rows);
      if (bias) l.bias = ops::gather_rows(l.bias.view({l.bias.numel(), 1}), *rows).view({l.bias.numel()});
    }
    l.scale = lora_scale;
    return l;
  };
  if (internlm2) m.qkv_rows_ = grouped_qkv_rows(config.llm.num_heads, config.llm.num_kv_heads, config.llm.head_dim);
  for (int i = 0; i < config.llm.num_layers; ++i) {
    const std::string p = "language_model.model.layers." + std::to_string(i);
    DecoderLayerWeights w;
    if (internlm2) {
      w.names = internlm2_module_names();
      w.fused_qkv = true;
      w.input_norm = f32(c, p + ".attention_norm.weight");
      w.post_norm = f32(c, p + ".ffn_norm.weight");
      w.qkv = lora_linear(p + "." + w.names.qkv, config.llm.attention_bias, &m.qkv_rows_);
      check(!config.llm.attention_bias, "training: InternLM2 with attention biases is not supported");
    } else {
      w.input_norm = f32(c, p + ".input_layernorm.weight");
      w.post_norm = f32(c, p + ".post_attention_layernorm.weight");
      w.q = lora_linear(p + "." + w.names.q, true);
      w.k = lora_linear(p + "." + w.names.k, true);
      w.v = lora_linear(p + "." + w.names.v, true);
    }
    w.o = lora_linear(p + "." + w.names.o, false);
    w.gate = lora_linear(p + "." + w.names.gate, false);
    w.up = lora_linear(p + "." + w.names.up, false);
    w.down = lora_linear(p + "." + w.names.down, false);
    w.heads = config.llm.num_heads;
    w.kv_heads = config.llm.num_kv_heads;
    w.head_dim = config.llm.head_dim;
    w.rms_eps = config.llm.rms_norm_eps;
    w.rope_theta = config.llm.rope_theta;
    m.layers_.push_back(std::move(w));
    m.layer_paths_.push_back(p);
  }
  m.mlp1_ = {f32(c, "mlp1.0.weight"), f32(c, "mlp1.0.bias"), f32(c, "mlp1.1.weight"),
             f32(c, "mlp1.1.bias"),   f32(c, "mlp1.3.weight"), f32(c, "mlp1.3.bias")};
  m.fcs_ = {f32(c, "text_hidden_fcs.0.weight"), f32(c, "text_hidden_fcs.0.bias"), f32(c, "text_hidden_fcs.2.weight"),
            f32(c, "text_hidden_fcs.2.bias")};
  return m;
}

TrainableLanguageModel::Forward TrainableLanguageModel::forward(const Sample& s) const {
  check(img_context_id >= 0 && seg_id >= 0, "training: set the <IMG_CONTEXT> and [SEG] token ids");
  const int64_t n = static_cast<int64_t>(s.input_ids.size()), d = embedding_.size(1);
  check(static_cast<int64_t>(s.labels.size()) == n, "training: one label per token is needed");
  Forward f;
  // mlp1 on the frozen vision features.
  const int64_t rows = s.vision.size(0) * s.vision.size(1), width = s.vision.size(2);
  f.mlp1_in = s.vision.contiguous().view({rows, width});
  f.mlp1_norm = Tensor::empty({rows, width});
  ops::layer_norm(f.mlp1_in.f32(), mlp1_.norm_w.f32(), mlp1_.norm_b.f32(), f.mlp1_norm.f32(), rows, width, kMlp1NormEps);
  f.mlp1_h = linear_forward(f.mlp1_norm, mlp1_.w1, mlp1_.b1);
  f.mlp1_act = f.mlp1_h.clone();
  ops::gelu_erf(f.mlp1_act.f32(), f.mlp1_act.numel());
  f.vit_embeds = linear_forward(f.mlp1_act, mlp1_.w2, mlp1_.b2);
  // Token embeddings with the image rows spliced in.
  const int64_t image_tokens = s.image_rows.empty() ? rows : static_cast<int64_t>(s.image_rows.size());
  for (const int64_t r : s.image_rows) check(r >= 0 && r < rows, "training: an image row outside the features");
  Tensor x = Tensor::empty({n, d});
  int64_t next = 0;
  for (int64_t t = 0; t < n; ++t) {
    const int64_t id = s.input_ids[static_cast<size_t>(t)];
    const float* src;
    if (id == img_context_id) {
      check(next < image_tokens, "training: more <IMG_CONTEXT> tokens than image features");
      src = f.vit_embeds.f32() + image_row(s, next++) * d;
    } else {
      check(id >= 0 && id < embedding_.size(0), "training: token id " + std::to_string(id) + " outside the vocabulary");
      src = embedding_.f32() + id * d;
    }
    std::copy_n(src, d, x.f32() + t * d);
  }
  check(next == image_tokens, "training: " + std::to_string(next) + " <IMG_CONTEXT> tokens for " +
                                  std::to_string(image_tokens) + " image features");
  std::vector<int64_t> positions(static_cast<size_t>(n));
  for (int64_t t = 0; t < n; ++t) positions[static_cast<size_t>(t)] = t;
  // Only each layer's input is kept: the backward pass recomputes the layer's activations from it,
  // so the memory held per token is one hidden state per layer instead of about a dozen.
  for (size_t i = 0; i < layers_.size(); ++i) {
    f.layer_inputs.push_back(x);
    x = decoder_layer_forward(layer_for(i, n), x, positions, nullptr);
  }
  f.pre_norm = x;
  f.last_hidden = Tensor::empty({n, d});
  ops::rms_norm(x.f32(), final_norm_.f32(), f.last_hidden.f32(), n, d, rms_eps_);
  // Token loss at the supervised positions (row t predicts label t + 1) through the tied head.
  const SupervisedTokens sup = supervised_tokens(s.labels);
  for (size_t first = 0; first < sup.rows.size(); first += kHeadChunk) {
    const size_t last = std::min(sup.rows.size(), first + kHeadChunk);
    const Tensor logits = head_logits(f.last_hidden, {sup.rows.begin() + first, sup.rows.begin() + last});
    const TokenLoss ce = cross_entropy(logits, {sup.targets.begin() + first, sup.targets.begin() + last});
    f.token_ce.insert(f.token_ce.end(), ce.per_token.begin(), ce.per_token.end());
  }
  // text_hidden_fcs at the [SEG] positions.
  for (int64_t t = 0; t < n; ++t)
    if (s.input_ids[static_cast<size_t>(t)] == seg_id) f.seg_rows.push_back(t);
  if (f.seg_rows.empty()) return f;
  f.seg_hidden = ops::gather_rows(f.last_hidden, f.seg_rows);
  f.seg_h1 = linear_forward(f.seg_hidden, fcs_.w1, fcs_.b1);
  Tensor r = f.seg_h1.clone();
  ops::relu(r.f32(), r.numel());
  f.seg_embeds = linear_forward(r, fcs_.w2, fcs_.b2);
  return f;
}

DecoderLayerWeights TrainableLanguageModel::layer_for(size_t i, int64_t tokens) const {
  DecoderLayerWeights w = layers_[i];  // tensors shared
  w.rope_theta = dynamic_rope_theta(llm_config_, tokens);
  return w;
}

Tensor TrainableLanguageModel::head_logits(const Tensor& hidden, const std::vector<int64_t>& rows) const {
  const Tensor h = ops::gather_rows(hidden, rows);
  const Tensor& head = head_.defined() ? head_ : embedding_;
  const int64_t r = h.size(0), d = h.size(1), v = head.size(0);
  Tensor logits = Tensor::empty({r, v});
  ops::gemm(h.f32(), d, head.f32(), d, logits.f32(), v, r, v, d, /*transpose_b=*/true);
  return logits;
}

std::vector<std::pair<std::string, const LoraLinear*>> TrainableLanguageModel::lora_layers() const {
  std::vector<std::pair<std::string, const LoraLinear*>> out;
  for (size_t i = 0; i < layers_.size(); ++i) {
    const DecoderLayerWeights& w = layers_[i];
    const std::string p = layer_paths_[i] + ".";
    if (w.fused_qkv) {
      out.emplace_back(p + w.names.qkv, &w.qkv);
    } else {
      out.emplace_back(p + w.names.q, &w.q);
      out.emplace_back(p + w.names.k, &w.k);
      out.emplace_back(p + w.names.v, &w.v);
    }
    out.emplace_back(p + w.names.o, &w.o);
    out.emplace_back(p + w.names.gate, &w.gate);
    out.emplace_back(p + w.names.up, &w.up);
    out.emplace_back(p + w.names.down, &w.down);
  }
  return out;
}

Tensor TrainableLanguageModel::merged_weight(const std::string& module_path) const {
  for (size_t i = 0; i < layers_.size(); ++i) {
    const DecoderLayerWeights& w = layers_[i];
    if (w.fused_qkv && module_path == layer_paths_[i] + "." + w.names.qkv) {
      const Tensor internal = merge_lora(w.qkv.weight, w.qkv.a, w.qkv.b, w.qkv.scale);
      Tensor stored = Tensor::empty(internal.shape());
      const int64_t cols = internal.size(1);
      for (size_t r = 0; r < qkv_rows_.size(); ++r)
        std::copy_n(internal.f32() + static_cast<int64_t>(r) * cols, cols, stored.f32() + qkv_rows_[r] * cols);
      return stored;
    }
  }
  for (const auto& [path, layer] : lora_layers())
    if (path == module_path) return merge_lora(layer->weight, layer->a, layer->b, layer->scale);
  throw Error("training: no LoRA module " + module_path);
}

std::vector<std::pair<std::string, Tensor>> TrainableLanguageModel::parameters() const {
  std::vector<std::pair<std::string, Tensor>> out;
  out.emplace_back("mlp1.0.weight", mlp1_.norm_w);
  out.emplace_back("mlp1.0.bias", mlp1_.norm_b);
  out.emplace_back("mlp1.1.weight", mlp1_.w1);
  out.emplace_back("mlp1.1.bias", mlp1_.b1);
  out.emplace_back("mlp1.3.weight", mlp1_.w2);
  out.emplace_back("mlp1.3.bias", mlp1_.b2);
  out.emplace_back(embedding_name_, embedding_);
  if (head_.defined()) out.emplace_back(head_name_, head_);
  for (const auto& [path, layer] : lora_layers()) {
    out.emplace_back("lora." + path + ".A", layer->a);
    out.emplace_back("lora." + path + ".B", layer->b);
  }
  out.emplace_back("text_hidden_fcs.0.weight", fcs_.w1);
  out.emplace_back("text_hidden_fcs.0.bias", fcs_.b1);
  out.emplace_back("text_hidden_fcs.2.weight", fcs_.w2);
  out.emplace_back("text_hidden_fcs.2.bias", fcs_.b2);
  return out;
}

Tensor TrainableLanguageModel::gradient(const Grads& g, const std::string& name) const {
  if (name == embedding_name_) return g.embedding;
  if (head_.defined() && name == head_name_) return g.head;
  if (name.rfind("lora.", 0) == 0 && name.size() > 7) {
    const auto it = g.lora.find(name.substr(5, name.size() - 7));
    if (it == g.lora.end()) return Tensor();
    return name.back() == 'A' ? it->second.da : it->second.db;
  }
  const auto it = g.tensors.find(name);
  return it == g.tensors.end() ? Tensor() : it->second;
}

TrainableLanguageModel::Grads TrainableLanguageModel::zero_grads() const {
  Grads g;
  g.embedding = Tensor::zeros(embedding_.shape());
  if (head_.defined()) g.head = Tensor::zeros(head_.shape());
  return g;
}

void TrainableLanguageModel::backward(const Sample& s, const Forward& f, float ce_scale, const Tensor& d_seg_embeds,
                                      Grads& g) const {
  const int64_t n = static_cast<int64_t>(s.input_ids.size()), d = embedding_.size(1), v = embedding_.size(0);
  Tensor d_last = Tensor::zeros({n, d});
  // Token loss: d logits = (softmax − onehot)·ce_scale (logits recomputed, a chunk at a time), into
  // the hidden states (dlogits·E) and the tied head (dlogitsᵀ·H).
  const SupervisedTokens sup = supervised_tokens(s.labels);
  for (size_t first = 0; first < sup.rows.size(); first += kHeadChunk) {
    const size_t last = std::min(sup.rows.size(), first + kHeadChunk);
    const std::vector<int64_t> rows(sup.rows.begin() + first, sup.rows.begin() + last);
    const int64_t r = static_cast<int64_t>(rows.size());
    Tensor dlogits;
    cross_entropy(head_logits(f.last_hidden, rows), {sup.targets.begin() + first, sup.targets.begin() + last},
                  &dlogits, ce_scale);
    const Tensor& head = head_.defined() ? head_ : embedding_;
    Tensor& head_grad = head_.defined() ? g.head : g.embedding;
    Tensor dh = Tensor::empty({r, d});
    ops::gemm(dlogits.f32(), v, head.f32(), d, dh.f32(), d, r, d, v, /*transpose_b=*/false);
    for (int64_t k = 0; k < r; ++k)
      ops::add(d_last.f32() + rows[static_cast<size_t>(k)] * d, dh.f32() + k * d,
               d_last.f32() + rows[static_cast<size_t>(k)] * d, d);
    const Tensor h = ops::gather_rows(f.last_hidden, rows);
    ops::gemm_at(dlogits.f32(), v, h.f32(), d, head_grad.f32(), d, v, d, r, 1.0f, 1.0f);
  }
  // text_hidden_fcs.
  if (!f.seg_rows.empty()) {
    check(d_seg_embeds.defined() && d_seg_embeds.shape() == f.seg_embeds.shape(),
          "training: the [SEG] embedding gradient must be " + shape_str(f.seg_embeds.shape()));
    Tensor r = f.seg_h1.clone();
    ops::relu(r.f32(), r.numel());
    const LinearGrads l2 = linear_backward(r, fcs_.w2, true, d_seg_embeds.contiguous());
    const LinearGrads l1 = linear_backward(f.seg_hidden, fcs_.w1, true, relu_backward(f.seg_h1, l2.dx));
    accumulate(g.tensors, "text_hidden_fcs.2.weight", l2.dw);
    accumulate(g.tensors, "text_hidden_fcs.2.bias", l2.db);
    accumulate(g.tensors, "text_hidden_fcs.0.weight", l1.dw);
    accumulate(g.tensors, "text_hidden_fcs.0.bias", l1.db);
    for (size_t i = 0; i < f.seg_rows.size(); ++i)
      ops::add(d_last.f32() + f.seg_rows[i] * d, l1.dx.f32() + static_cast<int64_t>(i) * d,
               d_last.f32() + f.seg_rows[i] * d, d);
  }
  // Final norm, then the layers in reverse.
  Tensor dx = rms_norm_backward(f.pre_norm, final_norm_, rms_eps_, d_last).dx;
  std::vector<int64_t> positions(static_cast<size_t>(n));
  for (int64_t t = 0; t < n; ++t) positions[static_cast<size_t>(t)] = t;
  for (size_t i = layers_.size(); i-- > 0;) {
    DecoderLayerSaved saved;
    const DecoderLayerWeights layer = layer_for(i, n);
    decoder_layer_forward(layer, f.layer_inputs[i], positions, &saved);
    DecoderLayerGrads lg = decoder_layer_backward(layer, saved, positions, dx);
    dx = lg.dx;
    for (auto& [module, grads] : lg.lora) {
      const std::string path = layer_paths_[i] + "." + module;
      auto it = g.lora.find(path);
      if (it == g.lora.end()) {
        g.lora[path] = {Tensor(), grads.da, grads.db};
      } else {
        accumulate(it->second.da, grads.da);
        accumulate(it->second.db, grads.db);
      }
    }
  }
  // Input rows: the lookup's rows, or the image features they replaced (a row taken twice, by its
  // tile and by a visual prompt's region, gets both gradients).
  const int64_t rows = f.vit_embeds.size(0);
  Tensor d_vit = Tensor::zeros({rows, d});
  int64_t next = 0;
  for (int64_t t = 0; t < n; ++t) {
    const int64_t id = s.input_ids[static_cast<size_t>(t)];
    const float* src = dx.f32() + t * d;
    if (id == img_context_id) {
      float* row = d_vit.f32() + image_row(s, next++) * d;
      ops::add(row, src, row, d);
    } else {
      ops::add(g.embedding.f32() + id * d, src, g.embedding.f32() + id * d, d);
      if (g.embedding_lookup.defined())
        ops::add(g.embedding_lookup.f32() + id * d, src, g.embedding_lookup.f32() + id * d, d);
    }
  }
  // mlp1.
  const LinearGrads l2 = linear_backward(f.mlp1_act, mlp1_.w2, true, d_vit);
  const LinearGrads l1 = linear_backward(f.mlp1_norm, mlp1_.w1, true, gelu_erf_backward(f.mlp1_h, l2.dx));
  const NormGrads ln = layer_norm_backward(f.mlp1_in, mlp1_.norm_w, kMlp1NormEps, l1.dx);
  accumulate(g.tensors, "mlp1.3.weight", l2.dw);
  accumulate(g.tensors, "mlp1.3.bias", l2.db);
  accumulate(g.tensors, "mlp1.1.weight", l1.dw);
  accumulate(g.tensors, "mlp1.1.bias", l1.db);
  accumulate(g.tensors, "mlp1.0.weight", ln.dw);
  accumulate(g.tensors, "mlp1.0.bias", ln.db);
}

}  // namespace sa2va::train
