#include "train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <numeric>

#include "core/error.h"
#include "core/random.h"
#include "core/threadpool.h"
#include "io/config.h"
#include "io/image.h"
#include "io/model_folder.h"
#include "io/safetensors.h"
#include "io/weights.h"
#include "models/internvit.h"
#include "models/llm.h"
#include "models/preprocess.h"
#include "models/sam2/sam2_image.h"
#include "ops/ops.h"
#include "text/template.h"
#include "text/tokenizer.h"
#include "train/losses.h"
#include "train/lora.h"
#include "train/optimizer.h"

namespace sa2va::train {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr float kWarmupStartFactor = 1e-5f;  // upstream's LinearLR start_factor
constexpr float kOversample = 3.0f, kImportance = 0.75f;
constexpr const char* kStateFile = "trainer_state.safetensors";

// A generator for one purpose at one point of the run, so that resuming anywhere redraws the same
// numbers without saving generator states.
SplitMix64 stream(uint64_t seed, uint64_t purpose, uint64_t index) {
  SplitMix64 mix{seed ^ (purpose * 0x9e3779b97f4a7c15ull)};
  mix.state ^= mix.next() + index * 0xd1b54a32d192ed03ull;
  mix.next();
  return mix;
}
enum Purpose : uint64_t { kOrder = 1, kLora = 2, kObjects = 3, kPoints = 4 };

// The options a run's trajectory depends on: a resumed run must agree on all of them.
json trajectory(const TrainOptions& o, size_t samples) {
  return {{"samples", samples},          {"lora_r", o.lora_r},       {"lora_alpha", o.lora_alpha},
          {"lr", o.lr},                  {"weight_decay", o.weight_decay},
          {"max_grad_norm", o.max_grad_norm}, {"warmup_ratio", o.warmup_ratio}, {"epochs", o.epochs},
          {"batch", o.batch},            {"grad_accum", o.grad_accum}, {"max_length", o.max_length},
          {"max_tiles", o.max_tiles},    {"objects_per_frame", o.objects_per_frame},
          {"mask_points", o.mask_points}, {"loss_mask_weight", o.loss_mask_weight},
          {"loss_dice_weight", o.loss_dice_weight}, {"seed", o.seed}};
}

// FNV-1a over 8-byte words (bytes for the tail): a fingerprint of what a run read, not a cryptographic hash.
void fingerprint(uint64_t& h, const char* bytes, size_t n) {
  constexpr uint64_t kPrime = 0x100000001b3ull;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t word;
    std::memcpy(&word, bytes + i, 8);
    h = (h ^ word) * kPrime;
  }
  for (; i < n; ++i) h = (h ^ static_cast<unsigned char>(bytes[i])) * kPrime;
}

std::string hex(uint64_t h) {
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(h));
  return text;
}

// What a resumed run must read again: the same training data (all its bytes) and the same model (its
// parsed config; each weight file's name, size, header and 64 slices of 4 KiB spread over it: reading a
// model of several GB whole at every start would cost more than the mix-up it guards against).
json inputs_fingerprint(const TrainOptions& o) {
  uint64_t data = 0xcbf29ce484222325ull, model = data;
  std::vector<char> buffer(size_t{1} << 20);
  {
    std::ifstream in(o.data_path, std::ios::binary);
    check(in.good(), o.data_path + ": cannot read");
    while (in.read(buffer.data(), static_cast<std::streamsize>(buffer.size())) || in.gcount() > 0)
      fingerprint(data, buffer.data(), static_cast<size_t>(in.gcount()));
  }
  {
    std::ifstream in(o.model_dir + "/config.json", std::ios::binary);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const json config = json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (!config.is_discarded()) text = config.dump();  // key order and spacing do not matter
    fingerprint(model, text.data(), text.size());
  }
  std::vector<fs::path> weights;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(o.model_dir, ec))
    if (entry.path().extension() == ".safetensors") weights.push_back(entry.path());
  std::sort(weights.begin(), weights.end());
  for (const fs::path& path : weights) {
    const std::string name = path.filename().string();
    fingerprint(model, name.data(), name.size());
    std::ifstream in(path, std::ios::binary);
    const auto size = static_cast<uint64_t>(fs::file_size(path, ec));
    fingerprint(model, reinterpret_cast<const char*>(&size), sizeof size);
    constexpr uint64_t kSlice = 4096, kSlices = 64;
    const auto read_at = [&](uint64_t offset, uint64_t n) {
      in.clear();
      in.seekg(static_cast<std::streamoff>(offset));
      in.read(buffer.data(), static_cast<std::streamsize>(std::min<uint64_t>(n, buffer.size())));
      fingerprint(model, buffer.data(), static_cast<size_t>(std::max<std::streamsize>(in.gcount(), 0)));
    };
    read_at(0, buffer.size());  // the header: names, dtypes, shapes and offsets
    for (uint64_t i = 0; i < kSlices && size > kSlice; ++i) read_at((size - kSlice) / (kSlices - 1) * i, kSlice);
  }
  return {{"data", hex(data)}, {"model", hex(model)}};
}

int64_t bytes_of(const BatchSample& s) {
  int64_t n = s.text.vision.numel();
  for (const FrameFeatures& f : s.frames) n += f.embedding.numel() + f.fpn0.numel() + f.fpn1.numel();
  for (const Tensor& t : s.targets) n += t.numel();
  return n * 4;
}

std::string duration(double seconds) {
  const int64_t s = static_cast<int64_t>(std::max(0.0, seconds) + 0.5);
  char text[32];
  if (s >= 3600) std::snprintf(text, sizeof text, "%lldh%02lldm", static_cast<long long>(s / 3600), static_cast<long long>(s / 60 % 60));
  else std::snprintf(text, sizeof text, "%lldm%02llds", static_cast<long long>(s / 60), static_cast<long long>(s % 60));
  return text;
}

}  // namespace

float scheduled_lr(int64_t iteration, int64_t total, float lr, float warmup_ratio) {
  const int64_t warmup = static_cast<int64_t>(static_cast<double>(warmup_ratio) * static_cast<double>(total));
  if (iteration < warmup)
    return lr * (kWarmupStartFactor + (1.0f - kWarmupStartFactor) * static_cast<float>(iteration) / static_cast<float>(warmup));
  const double span = static_cast<double>(std::max<int64_t>(1, total - warmup));
  const double progress = std::min(1.0, static_cast<double>(iteration - warmup) / span);
  return static_cast<float>(lr * 0.5 * (1.0 + std::cos(M_PI * progress)));
}

struct Trainer::Impl {
  TrainOptions options;
  ModelConfig config;
  Checkpoint checkpoint;
  std::unique_ptr<Tokenizer> tokenizer;
  const ChatTemplate* chat = nullptr;
  std::unique_ptr<ThreadPool> pool;
  std::unique_ptr<ThreadPool::Use> use_pool;
  VisionEncoder vision;  // frozen
  sam2::Sam2Image sam;   // frozen image side, prompt encoder
  std::unique_ptr<Sa2vaTrainable> model;
  float lora_scale = 2.0f;

  explicit Impl(const TrainOptions& o) : options(o), config(load_config(o.model_dir)), checkpoint(Checkpoint::open(o.model_dir)) {
    check(o.lora_r >= 1 && o.lora_alpha > 0, "train: --lora-r must be >= 1 and --lora-alpha > 0");
    // A quantized folder (sa2va quantize) holds 8-bit codes, not weights to train from.
    for (const std::string& name : checkpoint.names())
      check(checkpoint.info(name).dtype != DType::U8,
            o.model_dir + ": '" + name + "' is quantized: train from the original checkpoint");
    if (o.threads > 0) {
      pool = std::make_unique<ThreadPool>(o.threads);
      use_pool = std::make_unique<ThreadPool::Use>(*pool);
    }
    tokenizer = Tokenizer::load(o.model_dir);
    chat = &chat_template(config.template_name);
    Weights weights(checkpoint, Precision::F32);
    vision = VisionEncoder::load(weights, config);
    sam = sam2::Sam2Image::load(weights, config);
    weights.finish();
    lora_scale = o.lora_alpha / static_cast<float>(o.lora_r);
    // LoRA as peft initialises it: A kaiming-uniform (bound 1/sqrt(in)), B zero, so the model starts
    // as the checkpoint.
    std::map<std::string, std::pair<Tensor, Tensor>> lora;
    SplitMix64 rng = stream(o.seed, kLora, 0);
    for (const std::string& path : TrainableLanguageModel::lora_module_paths(config)) {
      check(checkpoint.has(path + ".weight"), o.model_dir + ": no '" + path + ".weight'");
      const Shape& shape = checkpoint.info(path + ".weight").shape;
      Tensor a = Tensor::empty({o.lora_r, shape[1]});
      const float bound = 1.0f / std::sqrt(static_cast<float>(shape[1]));
      for (int64_t k = 0; k < a.numel(); ++k) a.f32()[k] = (2.0f * rng.uniform() - 1.0f) * bound;
      lora[path] = {a, Tensor::zeros({shape[0], o.lora_r})};
    }
    model = std::make_unique<Sa2vaTrainable>(Sa2vaTrainable{
        TrainableLanguageModel::load(checkpoint, config, lora, lora_scale),
        TrainableMaskDecoder::load(checkpoint, kMaskDecoderPrefix), &sam});
    model->llm.img_context_id = tokenizer->token_id(kImageContext);
    model->llm.seg_id = tokenizer->token_id(kSegToken);
    check(model->llm.img_context_id >= 0 && model->llm.seg_id >= 0,
          o.model_dir + ": the tokenizer lacks <IMG_CONTEXT> or [SEG]");
  }

  std::vector<int32_t> encode_piece(const std::string& text, bool first) const {
    std::vector<int32_t> ids = tokenizer->encode(text);
    if (!first && tokenizer->adds_bos() && !ids.empty() && ids.front() == tokenizer->bos_id()) ids.erase(ids.begin());
    return ids;
  }
};

Trainer::Trainer(const TrainOptions& options) : impl_(std::make_unique<Impl>(options)) {}
Trainer::~Trainer() = default;
const Sa2vaTrainable& Trainer::model() const { return *impl_->model; }

BatchSample Trainer::prepare(const TrainingSample& sample) const {
  const Impl& m = *impl_;
  std::vector<Image> images;
  for (const std::string& path : sample.images) images.push_back(load_image(path, kDefaultMaxPixels));
  // Frozen vision features and the visual tokens of the prompt, as inference reads the medium.
  std::vector<Image> tiles;
  std::string visual_tokens;
  if (sample.video) {
    for (const Image& frame : images)
      tiles.push_back(preprocess::resize_bicubic(frame, preprocess::kVitImageSize, preprocess::kVitImageSize));
    visual_tokens = video_token_string(static_cast<int>(tiles.size()), m.config.num_image_tokens());
  } else {
    tiles = preprocess::dynamic_tiles(images[0], 1, m.options.max_tiles);
    visual_tokens = image_token_string(static_cast<int>(tiles.size()), m.config.num_image_tokens());
  }
  BatchSample out;
  if (!sample.regions.empty()) {
    // Visual prompts as inference reads them: each region sampled to the thumbnail's token grid, its
    // cells' features placed again after the image's, and named region1, region2, ... in the prompt.
    const int tokens = m.config.num_image_tokens(), grid = static_cast<int>(std::lround(std::sqrt(tokens)));
    std::vector<Mask> regions;
    for (size_t k = 0; k < sample.regions.size(); ++k) {
      const Image& image = images[0];
      regions.push_back({image.width, image.height,
                         decode_training_mask(sample.regions[k], image.height, image.width,
                                              sample.where + ": region " + std::to_string(k + 1))});
    }
    Tensor cells;
    const std::vector<int> counts = preprocess::region_cell_counts(regions, grid, &cells);
    std::vector<uint8_t> vp_tiles(tiles.size(), 0);
    vp_tiles.back() = 1;  // the regions read the thumbnail (or the single tile)
    out.text.image_rows = image_replacement_indices(static_cast<int64_t>(tiles.size()), tokens, vp_tiles, cells);
    visual_tokens += region_prompt_string(counts);
  }
  out.text.vision = m.vision.shuffled_features(preprocess::normalize_for_vit(tiles));
  // Token ids and labels: each question through the template (not supervised), each answer with
  // the turn suffix (supervised), then the separator (not supervised).
  std::vector<int64_t>& ids = out.text.input_ids;
  std::vector<int64_t>& labels = out.text.labels;
  for (size_t t = 0; t < sample.turns.size(); ++t) {
    const TrainingTurn& turn = sample.turns[t];
    const std::vector<int32_t> prompt =
        m.encode_piece(build_prompt(*m.chat, turn.human, t == 0 ? visual_tokens : std::string()), t == 0);
    const std::vector<int32_t> answer = m.encode_piece(turn.gpt + m.chat->suffix, false);
    const std::vector<int32_t> separator = m.encode_piece("\n", false);
    ids.insert(ids.end(), prompt.begin(), prompt.end());
    labels.insert(labels.end(), prompt.size(), -100);
    ids.insert(ids.end(), answer.begin(), answer.end());
    labels.insert(labels.end(), answer.begin(), answer.end());
    ids.insert(ids.end(), separator.begin(), separator.end());
    labels.insert(labels.end(), separator.size(), -100);
  }
  int64_t image_tokens = 0;
  for (int64_t id : ids) image_tokens += id == m.model->llm.img_context_id;
  const int64_t features = out.text.image_rows.empty() ? out.text.vision.size(0) * out.text.vision.size(1)
                                                       : static_cast<int64_t>(out.text.image_rows.size());
  check(image_tokens == features, sample.where + ": the prompt holds " + std::to_string(image_tokens) +
                                      " image tokens for " + std::to_string(features) +
                                      " features (\"<IMG_CONTEXT>\" in the text?)");
  // Truncation to max_length, as upstream; the masks of [SEG] cut off go with them.
  int segs = sample.seg_count;
  if (static_cast<int64_t>(ids.size()) > m.options.max_length) {
    int64_t last_image = 0;
    for (size_t i = 0; i < ids.size(); ++i)
      if (ids[i] == m.model->llm.img_context_id) last_image = static_cast<int64_t>(i);
    check(last_image < m.options.max_length, sample.where + ": the image tokens alone exceed --max-length " +
                                                 std::to_string(m.options.max_length));
    const size_t first_answer = static_cast<size_t>(
        std::find_if(labels.begin(), labels.end(), [](int64_t label) { return label != -100; }) - labels.begin());
    check(first_answer < static_cast<size_t>(m.options.max_length),
          sample.where + ": --max-length " + std::to_string(m.options.max_length) +
              " cuts off every answer (the first one starts at token " + std::to_string(first_answer) +
              "): nothing would be learnt from it");
    ids.resize(static_cast<size_t>(m.options.max_length));
    labels.resize(static_cast<size_t>(m.options.max_length));
    segs = static_cast<int>(std::count(ids.begin(), ids.end(), static_cast<int64_t>(m.model->llm.seg_id)));
  }
  int64_t seg_ids = std::count(ids.begin(), ids.end(), static_cast<int64_t>(m.model->llm.seg_id));
  check(seg_ids == segs, sample.where + ": the answers tokenise to " + std::to_string(seg_ids) + " [SEG] tokens for " +
                             std::to_string(segs) + " masks");
  if (segs == 0) return out;
  // SAM2's frozen frame features and the 256² targets of each frame.
  for (size_t f = 0; f < images.size(); ++f) {
    const Image& image = images[f];
    out.frames.push_back(frozen_frame_features(m.sam, image));
    std::vector<uint8_t> stacked;
    for (int k = 0; k < segs; ++k) {
      const std::vector<uint8_t> mask =
          decode_training_mask(sample.masks[static_cast<size_t>(k)][f], image.height, image.width,
                               sample.where + ": mask " + std::to_string(k) + (sample.video ? " frame " + std::to_string(f) : ""));
      stacked.insert(stacked.end(), mask.begin(), mask.end());
    }
    out.targets.push_back(resize_masks_nearest(stacked.data(), segs, image.height, image.width, kLowResMask));
  }
  return out;
}

void Trainer::export_merged(const std::string& out_dir) const {
  const Impl& m = *impl_;
  std::map<std::string, Tensor> replaced;
  for (const auto& [name, value] : m.model->parameters())
    if (name.rfind("lora.", 0) != 0) replaced[name] = value;
  std::map<std::string, std::string> lora;  // weight name -> module path
  for (const auto& [path, layer] : m.model->llm.lora_layers()) lora[path + ".weight"] = path;
  const std::string embedding = LanguageModel::embedding_name(m.config.llm.arch);
  const std::string head = LanguageModel::head_name(m.config.llm.arch);
  if (m.config.llm.tie_word_embeddings && m.checkpoint.has(head)) replaced[head] = replaced.at(embedding);

  std::vector<SafetensorsWriter::Entry> entries;
  const std::vector<std::string> names = m.checkpoint.names();
  for (const std::string& name : names) {
    const TensorInfo& info = m.checkpoint.info(name);
    const bool floating = info.dtype == DType::F32 || info.dtype == DType::BF16 || info.dtype == DType::F16;
    entries.push_back({name, floating && m.options.export_f32 ? DType::F32 : info.dtype, info.shape});
  }
  write_model_folder(m.options.model_dir, out_dir, entries, [&](size_t i) {
    const std::string& name = names[i];
    Tensor t;
    if (const auto l = lora.find(name); l != lora.end()) {
      t = m.model->llm.merged_weight(l->second);
    } else if (const auto r = replaced.find(name); r != replaced.end()) {
      t = r->second.view(entries[i].shape);
    } else {
      t = m.checkpoint.get(name);
    }
    return t.dtype() == entries[i].dtype ? t : t.to(entries[i].dtype);
  }, {{"format", "pt"}});
}

// ---- the training loop ------------------------------------------------------------------------

namespace {

struct Parameter {
  std::string name;
  Tensor value;
  AdamWState state;
};

std::shared_ptr<SafetensorsFile> open_state(const std::string& dir) {
  const std::string path = dir + "/" + kStateFile;
  check(fs::exists(path), dir + ": not a training checkpoint (no " + kStateFile + ")");
  auto state = SafetensorsFile::open(path);
  const auto it = state->metadata().find("format");
  check(it != state->metadata().end() && it->second == "sa2va-trainer", path + ": not a training checkpoint");
  return state;
}

std::string metadata_of(const SafetensorsFile& state, const std::string& key) {
  const auto it = state.metadata().find(key);
  return it == state.metadata().end() ? std::string() : it->second;
}

int64_t counter_of(const SafetensorsFile& state, const std::string& key) {
  const std::string text = metadata_of(state, key);
  check(!text.empty() && text.find_first_not_of("0123456789") == std::string::npos && text.size() < 18,
        "training checkpoint: damaged \"" + key + "\" counter");
  return std::stoll(text);
}

void save_checkpoint(const std::string& dir, const std::vector<Parameter>& params, int64_t step, int64_t iteration,
                     const json& traj, const json& inputs) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  check(!ec, dir + ": cannot create the checkpoint folder");
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const Parameter& p : params) {
    tensors.emplace_back("param." + p.name, p.value);
    const int64_t n = p.value.numel();
    Tensor m = Tensor::zeros({n}), v = Tensor::zeros({n});
    if (!p.state.exp_avg.empty()) {
      std::copy(p.state.exp_avg.begin(), p.state.exp_avg.end(), m.f32());
      std::copy(p.state.exp_avg_sq.begin(), p.state.exp_avg_sq.end(), v.f32());
    }
    tensors.emplace_back("adam.m." + p.name, m);
    tensors.emplace_back("adam.v." + p.name, v);
  }
  // Written beside and renamed: a full disk keeps neither a partial state of the model's size nor a
  // damaged one under the final name.
  write_safetensors(dir + "/" + kStateFile, tensors,
                    {{"format", "sa2va-trainer"}, {"step", std::to_string(step)},
                     {"iteration", std::to_string(iteration)}, {"trajectory", traj.dump()},
                     {"inputs", inputs.dump()}});
}

// Refuses an output folder whose run would destroy what it reads, or mix with an earlier run.
void check_output_folder(const TrainOptions& o) {
  std::error_code ec;
  const fs::path merged = fs::weakly_canonical(fs::path(o.out_dir) / "model", ec);
  const fs::path model = fs::weakly_canonical(fs::path(o.model_dir), ec);
  const auto within = [](const fs::path& path, const fs::path& folder) {
    return std::mismatch(folder.begin(), folder.end(), path.begin(), path.end()).first == folder.end();
  };
  check(!within(model, merged), o.model_dir + ": the model folder is this run's merged output " + (fs::path(o.out_dir) / "model").string() +
                                    ", which the run replaces at its end: copy the model elsewhere or choose another --out");
  if (!o.resume_dir.empty()) return;
  const fs::path log = fs::path(o.out_dir) / "train_log.jsonl";
  bool earlier = fs::exists(log, ec) && fs::file_size(log, ec) > 0;
  for (const auto& entry : fs::directory_iterator(o.out_dir, ec))
    earlier = earlier || entry.path().filename().string().rfind("checkpoint-", 0) == 0;
  check(!earlier, o.out_dir + ": holds an earlier run (train_log.jsonl, checkpoint-<step>/): continue it with --resume " +
                      o.out_dir + "/checkpoint-<step>, or choose another --out");
}

// A resumed run logs the steps after its checkpoint again: the log keeps only the steps up to it
// (and drops a line cut short by a crash), written beside and renamed.
void keep_log_until(const std::string& path, int64_t step) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return;
  std::ifstream in(path);
  check(in.good(), path + ": cannot read");
  std::string kept, line;
  while (std::getline(in, line)) {
    const json entry = json::parse(line, nullptr, false);
    if (entry.is_object() && entry.contains("step") && entry["step"].is_number_integer() &&
        entry["step"].get<int64_t>() <= step)
      kept += line + "\n";
  }
  const std::string partial = path + ".partial";
  {
    std::ofstream out(partial, std::ios::trunc);
    out << kept;
    out.close();
    check(out.good(), partial + ": cannot write");
  }
  fs::rename(partial, path, ec);
  check(!ec, path + ": cannot replace (" + ec.message() + ")");
}

}  // namespace

void Trainer::load_parameters(const std::string& checkpoint_dir) {
  const auto state = open_state(checkpoint_dir);
  for (auto& [name, value] : impl_->model->parameters()) {
    const std::string key = "param." + name;
    check(state->has(key), checkpoint_dir + ": the checkpoint lacks '" + name + "' (another model or LoRA rank?)");
    const Tensor saved = state->get(key).to(DType::F32);
    check(saved.numel() == value.numel(), checkpoint_dir + ": '" + name + "' has " + std::to_string(saved.numel()) +
                                              " values, the model " + std::to_string(value.numel()));
    std::copy_n(saved.f32(), saved.numel(), value.f32());
  }
}

TrainResult train(const TrainOptions& o, const std::function<void(const TrainProgress&)>& on_step,
                  const std::function<void(const std::string&)>& on_note) {
  check(!o.model_dir.empty() && !o.data_path.empty() && !o.out_dir.empty(), "train: --model, --data and --out are required");
  check(o.epochs >= 1 && o.batch >= 1 && o.grad_accum >= 1 && o.max_length >= 16 && o.max_tiles >= 1 &&
            o.objects_per_frame >= 1 && o.mask_points >= 1 && o.save_every >= 0,
        "train: --epochs, --batch, --grad-accum, --max-tiles, objects and --mask-points must be >= 1, --max-length "
        ">= 16 and --save-every >= 0");
  check(o.lr > 0 && std::isfinite(o.lr) && o.weight_decay >= 0 && std::isfinite(o.weight_decay) && o.max_grad_norm > 0 &&
            o.warmup_ratio >= 0 && o.warmup_ratio < 1,
        "train: needs a finite --lr > 0, a finite weight decay >= 0, max grad norm > 0 and warm-up ratio in [0, 1)");
  check(o.threads >= 0 && o.cache_mb >= 0 && o.cache_mb <= (int64_t{1} << 40),
        "train: --threads must be >= 0 and --cache-mb in [0, 2^40]");
  check_output_folder(o);  // before the minutes a large model takes to load
  // Every image is read when its sample first comes up, maybe hours in: a missing one is named now.
  int64_t videos = 0, with_masks = 0, with_regions = 0;
  const TrainingData data(o.data_path, [&](const TrainingSample& sample) {
    for (const std::string& image : sample.images) {
      std::error_code ec;
      check(fs::is_regular_file(image, ec), sample.where + ": " + image + ": no such image file");
    }
    videos += sample.video;
    with_masks += sample.seg_count > 0;
    with_regions += !sample.regions.empty();
  });
  const json traj = trajectory(o, data.size());
  const json inputs = inputs_fingerprint(o);
  const int64_t per_epoch = (static_cast<int64_t>(data.size()) + o.batch - 1) / o.batch;
  const int64_t total_iterations = per_epoch * o.epochs;
  const int64_t total_steps = (total_iterations + o.grad_accum - 1) / o.grad_accum;
  if (on_note) {
    const auto count = [](int64_t n, const char* what) {
      return std::to_string(n) + " " + what + (n == 1 ? "" : "s");
    };
    const int64_t samples = static_cast<int64_t>(data.size());
    on_note(o.data_path + ": " + count(samples, "sample") + " (" + count(samples - videos, "image") + ", " +
            count(videos, "video") + "; " + std::to_string(with_masks) + " with masks, " +
            std::to_string(with_regions) + " with visual prompts); " + count(total_steps, "optimiser step") + ", " +
            count(o.batch * o.grad_accum, "sample") + " each" +
            (o.resume_dir.empty() ? "" : ", resuming from " + o.resume_dir));
  }

  // A resumed state is checked against this run's options, data and model before the model loads.
  int64_t step = 0, iteration = 0;
  std::shared_ptr<SafetensorsFile> state;
  if (!o.resume_dir.empty()) {
    const std::string path = o.resume_dir + "/" + kStateFile;
    state = open_state(o.resume_dir);
    json saved, saved_inputs;
    try {
      saved = json::parse(metadata_of(*state, "trajectory"));
      const std::string text = metadata_of(*state, "inputs");  // absent from states saved before it was kept
      saved_inputs = text.empty() ? json::object() : json::parse(text);
    } catch (const json::exception&) {
      throw Error(path + ": damaged trajectory metadata");
    }
    for (const auto& [key, value] : traj.items())
      check(saved.contains(key) && saved[key] == value,
            path + ": saved with " + key + " = " + (saved.contains(key) ? saved[key].dump() : "nothing") +
                ", this run has " + value.dump() + " (resume with the same data and options)");
    check(!saved_inputs.contains("data") || saved_inputs["data"] == inputs["data"],
          path + ": the run it continues read other training data than " + o.data_path +
              " (resume with the same data file, unchanged)");
    check(!saved_inputs.contains("model") || saved_inputs["model"] == inputs["model"],
          path + ": the run it continues trained another model than " + o.model_dir +
              " (resume from the same model folder)");
    step = counter_of(*state, "step");
    iteration = counter_of(*state, "iteration");
    // A state is saved after an optimiser step: its iteration ends that step's accumulation group.
    check(step <= total_steps && iteration == std::min(step * o.grad_accum, total_iterations),
          path + ": damaged counters (step " + std::to_string(step) + ", iteration " + std::to_string(iteration) +
              " with --grad-accum " + std::to_string(o.grad_accum) + ")");
  }
  Trainer trainer(o);
  Trainer::Impl& m = *trainer.impl_;
  const Sa2vaTrainable& model = *m.model;
  std::vector<Parameter> params;
  for (auto& [name, value] : model.parameters()) params.push_back({name, value, {}});
  if (state) {
    const std::string path = o.resume_dir + "/" + kStateFile;
    trainer.load_parameters(o.resume_dir);
    for (Parameter& p : params) {
      const Tensor mm = state->get("adam.m." + p.name).to(DType::F32), vv = state->get("adam.v." + p.name).to(DType::F32);
      check(mm.numel() == p.value.numel() && vv.numel() == p.value.numel(), path + ": moments of '" + p.name + "' have the wrong size");
      if (step > 0) {
        p.state.exp_avg.assign(mm.f32(), mm.f32() + mm.numel());
        p.state.exp_avg_sq.assign(vv.f32(), vv.f32() + vv.numel());
      }
    }
  }
  std::error_code ec;
  fs::create_directories(o.out_dir, ec);
  check(!ec, o.out_dir + ": cannot create the output folder");
  const std::string log_path = o.out_dir + "/train_log.jsonl";
  if (state) keep_log_until(log_path, step);
  std::ofstream log(log_path, std::ios::app);
  check(log.good(), log_path + ": cannot write");

  // Frozen features of each sample, kept while they fit the cache budget.
  std::map<size_t, BatchSample> cache;
  int64_t cached_bytes = 0;
  const auto sample_at = [&](size_t index) -> BatchSample {
    if (const auto it = cache.find(index); it != cache.end()) return it->second;
    const TrainingSample sample = data.sample(index);
    BatchSample s;
    try {
      s = trainer.prepare(sample);
    } catch (const Error& e) {  // an image that does not decode names its file: say which sample reads it
      const std::string what = e.what();
      if (what.find(sample.where) == std::string::npos) throw Error(sample.where + ": " + what);
      throw;
    }
    const int64_t bytes = bytes_of(s);
    if (cached_bytes + bytes <= o.cache_mb * (int64_t{1} << 20)) {
      cache[index] = s;
      cached_bytes += bytes;
    }
    return s;
  };
  const auto order_of = [&](int64_t epoch) {
    std::vector<size_t> order(data.size());
    std::iota(order.begin(), order.end(), size_t{0});
    SplitMix64 rng = stream(o.seed, kOrder, static_cast<uint64_t>(epoch));
    for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng.next() % i]);
    return order;
  };

  BatchGrads grads = model.zero_grads();
  TrainProgress progress;
  progress.total_steps = total_steps;
  progress.total_iterations = total_iterations;
  double loss_sum = 0, llm_sum = 0, mask_sum = 0, dice_sum = 0;
  int micro = 0;
  int64_t tokens = 0;
  const auto started = std::chrono::steady_clock::now();
  const int64_t first_iteration = iteration;
  std::string last_checkpoint = o.resume_dir;  // a resumed run that has no step left ends at it
  int64_t order_epoch = -1;
  std::vector<size_t> order;
  // A run that fails midway (a sample that does not load, memory, a non-finite gradient) keeps its
  // progress: the state after its last optimiser step is saved where --resume continues from it.
  int64_t saved_step = step, step_iteration = iteration;
  try {
    for (; iteration < total_iterations; ++iteration) {
      const int64_t epoch = iteration / per_epoch, in_epoch = iteration % per_epoch;
      if (epoch != order_epoch) order = order_of(order_epoch = epoch);
      std::vector<BatchSample> batch;
      for (int64_t i = in_epoch * o.batch; i < std::min<int64_t>((in_epoch + 1) * o.batch, static_cast<int64_t>(data.size())); ++i)
        batch.push_back(sample_at(order[static_cast<size_t>(i)]));
      // The accumulation group this iteration belongs to, and its size (the last one may be short).
      const int64_t group_start = (iteration / o.grad_accum) * o.grad_accum;
      const int64_t group = std::min<int64_t>(o.grad_accum, total_iterations - group_start);
      BatchChoices choices;
      SplitMix64 object_rng = stream(o.seed, kObjects, static_cast<uint64_t>(iteration));
      SplitMix64 point_rng = stream(o.seed, kPoints, static_cast<uint64_t>(iteration));
      choices.objects = [&](int64_t segs) {
        if (segs <= o.objects_per_frame) return cycle_objects(segs, o.objects_per_frame);
        std::vector<int64_t> all(static_cast<size_t>(segs));  // more than fit: a random subset, as upstream
        std::iota(all.begin(), all.end(), int64_t{0});
        for (size_t i = all.size(); i > 1; --i) std::swap(all[i - 1], all[object_rng.next() % i]);
        all.resize(static_cast<size_t>(o.objects_per_frame));
        return all;
      };
      choices.points = [&](const Tensor& logits) {
        return sample_uncertain_points(logits, o.mask_points, kOversample, kImportance, point_rng);
      };
      const BatchLosses losses = model.forward_backward(batch, choices, o.loss_mask_weight, o.loss_dice_weight,
                                                        1.0f / static_cast<float>(group), grads);
      loss_sum += losses.total, llm_sum += losses.llm, mask_sum += losses.mask, dice_sum += losses.dice;
      tokens += losses.tokens;
      ++micro;
      if (iteration + 1 != group_start + group) continue;

      // One optimiser step: clip all gradients together, AdamW at this iteration's learning rate.
      std::vector<Tensor> g(params.size());
      std::vector<std::pair<const float*, int64_t>> all;
      for (size_t i = 0; i < params.size(); ++i) {
        g[i] = model.gradient(grads, params[i].name);
        if (!g[i].defined()) g[i] = Tensor::zeros(params[i].value.shape());
        all.emplace_back(g[i].f32(), g[i].numel());
      }
      const double norm = global_grad_norm(all);
      check(std::isfinite(norm), "train: the gradient norm is not finite at step " + std::to_string(step + 1));
      const float coef = clip_coefficient(norm, o.max_grad_norm);
      AdamWOptions adam;
      adam.lr = scheduled_lr(iteration, total_iterations, o.lr, o.warmup_ratio);
      adam.weight_decay = o.weight_decay;
      ++step;
      for (size_t i = 0; i < params.size(); ++i)
        adamw_step(params[i].value.f32(), g[i].f32(), coef, params[i].value.numel(), params[i].state, step, adam);
      grads = model.zero_grads();

      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      progress.step = step;
      progress.iteration = iteration + 1;
      progress.lr = adam.lr;
      progress.loss = static_cast<float>(loss_sum / micro);
      progress.llm = static_cast<float>(llm_sum / micro);
      progress.mask = static_cast<float>(mask_sum / micro);
      progress.dice = static_cast<float>(dice_sum / micro);
      progress.tokens_per_s = elapsed > 0 ? static_cast<double>(tokens) / elapsed : 0;
      progress.eta_s = elapsed / static_cast<double>(iteration + 1 - first_iteration) *
                       static_cast<double>(total_iterations - iteration - 1);
      log << json{{"step", step},         {"iteration", iteration + 1}, {"lr", progress.lr},
                  {"loss", progress.loss}, {"llm", progress.llm},      {"mask", progress.mask},
                  {"dice", progress.dice}, {"grad_norm", norm},        {"tokens_per_s", progress.tokens_per_s}}
                 .dump()
          << "\n";
      log.flush();
      if (on_step) on_step(progress);
      loss_sum = llm_sum = mask_sum = dice_sum = 0;
      micro = 0;
      step_iteration = iteration + 1;
      if ((o.save_every > 0 && step % o.save_every == 0) || step == total_steps) {
        last_checkpoint = o.out_dir + "/checkpoint-" + std::to_string(step);
        save_checkpoint(last_checkpoint, params, step, iteration + 1, traj, inputs);
        saved_step = step;
      }
    }
  } catch (const std::exception& e) {
    std::string message = e.what();
    if (step > saved_step) {
      const std::string dir = o.out_dir + "/checkpoint-" + std::to_string(step);
      try {
        save_checkpoint(dir, params, step, step_iteration, traj, inputs);
        message += " (the state after step " + std::to_string(step) + " is saved: continue with --resume " + dir + ")";
      } catch (const std::exception& saving) {
        message += std::string(" (and saving the state after step ") + std::to_string(step) + " failed: " + saving.what() + ")";
      }
    }
    throw Error(message);
  }
  TrainResult result;
  result.steps = step;
  result.last_checkpoint = last_checkpoint;
  result.merged_dir = o.out_dir + "/model";
  // Written beside, then swapped in: a failed export leaves an earlier merged model as it was.
  const std::string partial = result.merged_dir + ".partial";
  fs::remove_all(partial, ec);
  trainer.export_merged(partial);
  fs::remove_all(result.merged_dir, ec);
  fs::rename(partial, result.merged_dir, ec);
  check(!ec, result.merged_dir + ": cannot move the merged model into place: " + ec.message());
  return result;
}

std::string format_progress(const TrainProgress& p) {
  char text[256];
  std::snprintf(text, sizeof text, "step %lld/%lld | lr %.3g | loss %.4f (llm %.4f, mask %.4f, dice %.4f) | %.0f tok/s | ETA %s",
                static_cast<long long>(p.step), static_cast<long long>(p.total_steps), p.lr, p.loss, p.llm, p.mask,
                p.dice, p.tokens_per_s, duration(p.eta_s).c_str());
  return text;
}

}  // namespace sa2va::train
