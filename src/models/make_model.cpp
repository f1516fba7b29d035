#include "models/make_model.h"

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include <sentencepiece_trainer.h>

#include "core/error.h"
#include "core/random.h"
#include "models/sa2va_model.h"
#include "ops/ops.h"

namespace sa2va {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

ModelConfig base_config() {
  ModelConfig c;
  c.llm.arch = LlmArch::Qwen2;
  c.llm.architecture = "Qwen2ForCausalLM";
  c.llm.rope_theta = 1e6f;
  c.llm.rms_norm_eps = 1e-6f;
  c.llm.bos_token_id = 151643;
  c.llm.eos_token_id = 151645;
  c.llm.vocab_size = 151679;
  return c;
}

void set_llm(ModelConfig& c, int hidden, int layers, int heads, int kv_heads, int ffn) {
  c.llm.hidden_size = hidden;
  c.llm.num_layers = layers;
  c.llm.num_heads = heads;
  c.llm.num_kv_heads = kv_heads;
  c.llm.head_dim = hidden / heads;
  c.llm.intermediate_size = ffn;
}

// splitmix64 (core/random.h); one stream per tensor so that values do not depend on the order
// tensors are written in.
using Random = SplitMix64;

uint64_t hash_name(const std::string& s, uint64_t seed) {
  uint64_t h = 1469598103934665603ull ^ seed;
  for (unsigned char ch : s) h = (h ^ ch) * 1099511628211ull;
  return h;
}

}  // namespace

Tensor random_weight(const DeclaredTensor& d, uint64_t seed) {
  Tensor t = Tensor::empty(d.shape, DType::BF16);
  int64_t fan_in = 1;
  for (size_t i = 1; i < d.shape.size(); ++i) fan_in *= d.shape[i];
  float mean = 0, stddev = 0;
  switch (d.init) {
    case Init::Linear: stddev = 1.f / std::sqrt(static_cast<float>(std::max<int64_t>(fan_in, 1))); break;
    case Init::Bias: case Init::NormBias: stddev = 0.02f; break;
    case Init::NormWeight: mean = 1.f; stddev = 0.02f; break;
    case Init::Embedding: case Init::Gaussian: stddev = 1.f; break;
    case Init::Small: stddev = 0.1f; break;
    case Init::Ones: mean = 1.f; break;
  }
  ops::fill_random_normal(t, mean, stddev, hash_name(d.name, seed));
  return t;
}

void write_random_checkpoint(const std::string& file, const std::vector<DeclaredTensor>& tensors, uint64_t seed) {
  std::vector<SafetensorsWriter::Entry> entries;
  for (const DeclaredTensor& d : tensors) entries.push_back({d.name, DType::BF16, d.shape});
  SafetensorsWriter writer(file, entries, {{"format", "pt"}});
  for (const DeclaredTensor& d : tensors) writer.write_next(random_weight(d, seed));
  writer.close();
}

namespace {

void write_json(const fs::path& path, const json& j) {
  std::ofstream out(path);
  if (!out) throw Error(path.string() + ": cannot open for writing");
  out << j.dump(2) << "\n";
  if (!out) throw Error(path.string() + ": write failed");
}

void write_qwen_tokenizer(const fs::path& dir) {
  const std::string source = data_file("qwen2-sa2va-tokenizer.json");
  std::error_code ec;
  fs::copy_file(source, dir / "tokenizer.json", fs::copy_options::overwrite_existing, ec);
  if (ec) throw Error(source + ": cannot copy the tokenizer into " + dir.string() + " (" + ec.message() + ")");
  write_json(dir / "tokenizer_config.json",
             {{"tokenizer_class", "Qwen2Tokenizer"}, {"bos_token", nullptr}, {"eos_token", "<|im_end|>"},
              {"pad_token", "<|endoftext|>"}, {"unk_token", nullptr}, {"clean_up_tokenization_spaces", false},
              {"model_max_length", 32768}});
}

// InternLM2 ships a SentencePiece model with its chat tokens inside and InternVL/Sa2VA tokens
// added after it. A random model gets a small SentencePiece BPE trained here on generated text,
// with every special token listed in added_tokens.json at its real id.
void write_internlm2_tokenizer(const fs::path& dir, uint64_t seed) {
  static const char* kWords[] = {
      "the", "a", "man", "woman", "girl", "boy", "dog", "cat", "horse", "car", "red", "blue", "green", "yellow",
      "dress", "riding", "sitting", "on", "in", "of", "with", "and", "is", "it", "please", "segment", "describe",
      "image", "video", "what", "where", "left", "right", "small", "large", "ball", "table", "street", "tree",
      "sky", "water", "person", "holding", "wearing", "white", "black", "two", "three", "there", "are", "sure"};
  const fs::path corpus = dir / ".spm_corpus.txt";
  {
    std::ofstream out(corpus);
    Random rng{seed ^ 0x5eedull};
    for (int line = 0; line < 4000; ++line) {
      const int n = 4 + static_cast<int>(rng.next() % 12);
      for (int i = 0; i < n; ++i) out << (i ? " " : "") << kWords[rng.next() % (sizeof(kWords) / sizeof(kWords[0]))];
      out << (rng.next() % 3 ? ".\n" : "?\n");
    }
  }
  const std::string prefix = (dir / "tokenizer").string();
  const auto status = sentencepiece::SentencePieceTrainer::Train(
      "--input=" + corpus.string() + " --model_prefix=" + prefix +
      " --model_type=bpe --vocab_size=400 --hard_vocab_limit=false --byte_fallback=true"
      " --character_coverage=1.0 --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1 --minloglevel=2"
      " --num_threads=1 --random_seed=" + std::to_string(seed & 0x7fffffff));
  std::error_code ec;
  fs::remove(corpus, ec);
  fs::remove(dir / "tokenizer.vocab", ec);
  if (!status.ok()) throw Error(dir.string() + ": training the SentencePiece tokenizer failed: " + status.ToString());
  json added = json::object();
  const char* tokens[] = {"<|im_end|>", "<|im_start|>", "<img>", "</img>", "<IMG_CONTEXT>", "<quad>", "</quad>",
                          "<ref>", "</ref>", "<box>", "</box>", "[SEG]", "<p>", "</p>", "<vp>", "</vp>"};
  int id = 92542;
  for (const char* t : tokens) added[t] = id++;
  write_json(dir / "added_tokens.json", added);
  json decoder = json::object();
  for (auto it = added.begin(); it != added.end(); ++it)
    decoder[std::to_string(it->get<int>())] = {{"content", it.key()}, {"special", true}, {"normalized", false},
                                               {"lstrip", false}, {"rstrip", false}, {"single_word", false}};
  // As save_pretrained writes it: every added token is also an additional special token (this
  // decides how decode spaces them, docs/tokenizer-template.md §3).
  write_json(dir / "tokenizer_config.json",
             {{"tokenizer_class", "InternLM2Tokenizer"}, {"bos_token", "<s>"}, {"eos_token", "</s>"},
              {"pad_token", "</s>"}, {"unk_token", "<unk>"}, {"add_bos_token", true}, {"add_eos_token", false},
              {"clean_up_tokenization_spaces", false}, {"added_tokens_decoder", decoder},
              {"additional_special_tokens", std::vector<std::string>(std::begin(tokens), std::end(tokens))}});
}

}  // namespace

std::vector<std::string> preset_names() {
  return {"tiny", "1b", "4b", "8b", "internvl3-2b", "internvl3-8b", "internvl3-14b"};
}

ModelConfig preset_config(const std::string& preset) {
  ModelConfig c = base_config();
  if (preset == "tiny") {
    // The geometry of the conformance fixtures (docs/variants.md §3).
    c.vision.hidden_size = 32;
    c.vision.num_layers = 2;
    c.vision.num_heads = 2;
    c.vision.intermediate_size = 128;
    set_llm(c, 64, 2, 4, 2, 128);
    c.llm.vocab_size = 151936;
    c.llm.tie_word_embeddings = true;
    c.has_sam2_override = true;
    Sam2Config& s = c.sam2;
    s.embed_dim = 16;
    s.num_heads = 2;
    s.stages = {1, 2, 3, 2};
    s.global_att_blocks = {5};
    s.backbone_channel_list = {128, 64, 32, 16};
    s.mem_attn_layers = 1;
    s.mem_attn_ffn = 256;
    s.fuser_layers = 1;
  } else if (preset == "1b") {
    set_llm(c, 896, 24, 14, 2, 4864);
  } else if (preset == "4b") {
    set_llm(c, 2048, 36, 16, 2, 11008);
    c.template_name = "phi3_chat";  // Sa2VA-4B's training config (docs/variants.md §1); check a real folder's "template"
  } else if (preset == "8b") {
    c.llm.arch = LlmArch::InternLM2;
    c.llm.architecture = "InternLM2ForCausalLM";
    set_llm(c, 4096, 32, 32, 8, 14336);
    c.llm.vocab_size = 92558;
    c.llm.rms_norm_eps = 1e-5f;
    c.llm.attention_bias = false;
    c.llm.bos_token_id = 1;
    c.llm.eos_token_id = 2;
    c.llm.rope_scaling_type = "dynamic";
    c.llm.rope_scaling_factor = 2.f;
    c.template_name = "internlm2_chat";
  } else if (preset == "internvl3-2b" || preset == "internvl3-8b" || preset == "internvl3-14b") {
    // Sa2VA-InternVL3-*: InternViT-300M and a Qwen2.5 LLM (1.5B / 7B / 14B), qwen_chat, the
    // InternVL3 config's dynamic rope scaling (docs/variants.md §1).
    if (preset == "internvl3-2b") set_llm(c, 1536, 28, 12, 2, 8960);
    else if (preset == "internvl3-8b") set_llm(c, 3584, 28, 28, 4, 18944);
    else set_llm(c, 5120, 48, 40, 8, 13824);
    c.llm.rope_scaling_type = "dynamic";
    c.llm.rope_scaling_factor = 2.f;
  } else {
    std::string names;
    for (const std::string& n : preset_names()) names += (names.empty() ? "" : ", ") + n;
    throw Error("unknown preset '" + preset + "' (choose " + names + ")");
  }
  return c;
}

std::vector<DeclaredTensor> declare_checkpoint(const ModelConfig& config) {
  Weights w = Weights::declaring();
  Sa2vaModel::bind_components(w, config, nullptr);
  return w.declared();
}

std::string data_file(const std::string& name) {
  std::vector<fs::path> candidates;
  if (const char* env = std::getenv("SA2VA_DATA_DIR")) candidates.emplace_back(fs::path(env) / name);
  char exe[4096];
  const ssize_t len = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (len > 0) {
    const fs::path bin = fs::path(std::string(exe, static_cast<size_t>(len))).parent_path();
    candidates.emplace_back(bin / "../share/sa2va" / name);
    candidates.emplace_back(bin / "../data" / name);
  }
  candidates.emplace_back(fs::path(SA2VA_SOURCE_DATA_DIR) / name);
  for (const auto& p : candidates)
    if (fs::exists(p)) return p.string();
  throw Error("data file '" + name + "' not found (looked in $SA2VA_DATA_DIR, next to the program and in " +
              std::string(SA2VA_SOURCE_DATA_DIR) + ")");
}

size_t make_model(const MakeModelOptions& options) {
  const ModelConfig config = preset_config(options.preset);
  check(!options.out_dir.empty(), "make-model: --out is required");
  const fs::path dir(options.out_dir);
  std::error_code ec;
  // A slip of --out must not overwrite a real checkpoint (its config and tokenizer, beside old shards).
  check(!fs::exists(dir, ec) || (fs::is_directory(dir, ec) && fs::is_empty(dir, ec)),
        dir.string() + ": not an empty folder: make-model writes into a new or empty one");
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir)) throw Error(dir.string() + ": cannot create the output folder");

  const std::vector<DeclaredTensor> tensors = declare_checkpoint(config);
  // Split into shards of at most max_shard_bytes, in checkpoint order.
  std::vector<std::vector<size_t>> shards(1);
  uint64_t shard_bytes = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const uint64_t bytes = static_cast<uint64_t>(shape_numel(tensors[i].shape)) * 2;
    if (!shards.back().empty() && shard_bytes + bytes > options.max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(i);
    shard_bytes += bytes;
  }
  const bool sharded = shards.size() > 1;
  json weight_map = json::object();
  uint64_t total_bytes = 0;
  for (size_t s = 0; s < shards.size(); ++s) {
    char name[64];
    std::snprintf(name, sizeof(name), "model-%05zu-of-%05zu.safetensors", s + 1, shards.size());
    const std::string file = sharded ? std::string(name) : std::string("model.safetensors");
    std::vector<SafetensorsWriter::Entry> entries;
    for (size_t i : shards[s]) {
      entries.push_back({tensors[i].name, DType::BF16, tensors[i].shape});
      weight_map[tensors[i].name] = file;
      total_bytes += static_cast<uint64_t>(shape_numel(tensors[i].shape)) * 2;
    }
    SafetensorsWriter writer((dir / file).string(), entries, {{"format", "pt"}});
    for (size_t i : shards[s]) writer.write_next(random_weight(tensors[i], options.seed));
    writer.close();
  }
  if (sharded) {
    fs::remove(dir / "model.safetensors", ec);
    write_json(dir / "model.safetensors.index.json", {{"metadata", {{"total_size", total_bytes}}}, {"weight_map", weight_map}});
  } else {
    fs::remove(dir / "model.safetensors.index.json", ec);
  }
  write_json(dir / "config.json", config_to_json(config));
  if (config.llm.arch == LlmArch::Qwen2) write_qwen_tokenizer(dir);
  else write_internlm2_tokenizer(dir, options.seed);
  return tensors.size();
}

}  // namespace sa2va
