#include "models/sa2va_model.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <string_view>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "core/allocator.h"
#include "core/error.h"
#include "core/profile.h"
#include "io/image.h"
#include "io/video.h"
#include "models/generation.h"
#include "models/preprocess.h"

namespace sa2va {

namespace {

constexpr const char* kImagePlaceholder = "<image>";

std::string strip(const std::string& s) {
  const char* ws = " \t\n\r\f\v";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

Tensor ids_tensor(const std::vector<int32_t>& ids) {
  Tensor t = Tensor::empty({static_cast<int64_t>(ids.size())}, DType::I64);
  for (size_t i = 0; i < ids.size(); ++i) t.data<int64_t>()[i] = ids[i];
  return t;
}

Tensor image_u8(const std::vector<Image>& images) {
  if (images.empty()) return Tensor();
  const int64_t h = images[0].height, w = images[0].width;
  Tensor t = Tensor::empty({static_cast<int64_t>(images.size()), h, w, 3}, DType::U8);
  for (size_t i = 0; i < images.size(); ++i)
    std::memcpy(t.data<uint8_t>() + i * h * w * 3, images[i].rgb.data(), images[i].rgb.size());
  return t;
}

Mask to_mask(const Tensor& binary_u8 /*[H,W]*/) {
  Mask m;
  m.height = static_cast<int>(binary_u8.size(-2));
  m.width = static_cast<int>(binary_u8.size(-1));
  const Tensor c = binary_u8.contiguous();
  const uint8_t* p = c.data<uint8_t>();
  m.data.assign(p, p + c.numel());
  return m;
}

// Every fourth pixel of each image in both directions ([n, h/4, w/4, 3], rounded up), as the
// fixtures' `.sub4` stages store the tiles and the SAM2 input.
Tensor image_u8_sub4(const std::vector<Image>& images) {
  const int64_t h = (images[0].height + 3) / 4, w = (images[0].width + 3) / 4;
  Tensor t = Tensor::empty({static_cast<int64_t>(images.size()), h, w, 3}, DType::U8);
  uint8_t* out = t.data<uint8_t>();
  for (const Image& image : images)
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x, out += 3)
        std::memcpy(out, image.rgb.data() + ((4 * y) * image.width + 4 * x) * 3, 3);
  return t;
}

// Stacks per-frame [h, w] tensors into [frames, h, w] for the stage dump.
Tensor stack(const std::vector<Tensor>& frames, DType dtype) {
  const int64_t h = frames[0].size(-2), w = frames[0].size(-1);
  Tensor out = Tensor::empty({static_cast<int64_t>(frames.size()), h, w}, dtype);
  const size_t bytes = static_cast<size_t>(h * w) * dtype_size(dtype);
  for (size_t i = 0; i < frames.size(); ++i) {
    const Tensor frame = frames[i].device().is_cpu() ? frames[i].contiguous() : frames[i].to(Device::cpu());
    std::memcpy(static_cast<char*>(out.raw()) + i * bytes, frame.raw(), bytes);
  }
  return out;
}

// A given answer as the model would have ended it: the template's end-of-turn suffix appended when missing.
std::string with_turn_suffix(const std::string& answer, const ChatTemplate& chat) {
  const bool ends_with_suffix = answer.size() >= chat.suffix.size() &&
                                answer.compare(answer.size() - chat.suffix.size(), std::string::npos, chat.suffix) == 0;
  return ends_with_suffix ? answer : answer + chat.suffix;
}

// Throws Cancelled when the request's should_stop says so.
void stop_if_asked(const Request& request) {
  if (request.should_stop && request.should_stop()) throw Cancelled();
}

// Bytes of `text` up to its last complete UTF-8 character: a character whose bytes have not all
// been generated yet (or its stand-in U+FFFD at the very end) waits for the next token.
size_t complete_utf8_length(const std::string& text) {
  static const std::string kReplacement = "\xEF\xBF\xBD";
  size_t end = text.size();
  if (end >= 3 && text.compare(end - 3, 3, kReplacement) == 0) return end - 3;
  for (size_t back = 1; back <= 3 && back <= end; ++back) {
    const auto byte = static_cast<unsigned char>(text[end - back]);
    if ((byte & 0xC0u) == 0x80u) continue;  // continuation byte: look further back for the lead
    const size_t need = byte >= 0xF0u ? 4 : byte >= 0xE0u ? 3 : byte >= 0xC0u ? 2 : 1;
    return need > back ? end - back : end;
  }
  return end;
}

// The answer without what ends a turn: the template's stop words and the eos token's text, at its end.
std::string without_end_of_turn(std::string text, const std::vector<std::string>& markers) {
  for (bool removed = true; removed;) {
    removed = false;
    text = strip(text);
    for (const std::string& m : markers)
      if (!m.empty() && text.size() >= m.size() && text.compare(text.size() - m.size(), m.size(), m) == 0) {
        text.resize(text.size() - m.size());
        removed = true;
      }
  }
  return text;
}

void check_mask_prompt(const Mask& m, int64_t k) {
  check(m.width > 0 && m.height > 0 && m.data.size() == static_cast<size_t>(m.width) * static_cast<size_t>(m.height),
        "mask prompt " + std::to_string(k + 1) + ": its data holds " + std::to_string(m.data.size()) +
            " values for a " + std::to_string(m.width) + "x" + std::to_string(m.height) + " mask");
}

// "region1 with 12 tokens, region2 with 3", for messages.
std::string region_token_counts(const std::vector<int>& counts) {
  std::string out;
  for (size_t k = 0; k < counts.size(); ++k)
    out += (k ? ", region" : "region") + std::to_string(k + 1) + " with " + std::to_string(counts[k]) + (k ? "" : " tokens");
  return out;
}

}  // namespace

static size_t feature_bytes(const sam2::FrameFeatures& f) {
  return f.fpn2.nbytes() + f.pos2.nbytes() + f.feat_s0.nbytes() + f.feat_s1.nbytes();
}

void VisualCacheImpl::bind(uint64_t model, const std::string& medium_key) {
  std::lock_guard<std::mutex> lock(mutex);
  if (model_id == 0) {
    model_id = model;
    medium = medium_key;
    return;
  }
  check(model_id == model, "this VisualCache holds another model's features: give every model its own cache");
  check(medium == medium_key, "this VisualCache holds the features of another " + medium + ", not this " + medium_key +
                                  ": a cache belongs to one image or video");
}

size_t VisualCacheImpl::bytes() const {
  std::lock_guard<std::mutex> lock(mutex);
  return bytes_locked();
}

std::optional<VisualCacheImpl::Vision> VisualCacheImpl::find_vision(const std::string& key) const {
  std::lock_guard<std::mutex> lock(mutex);
  const auto hit = vision.find(key);
  if (hit == vision.end()) return std::nullopt;
  return hit->second;
}

void VisualCacheImpl::keep_vision(const std::string& key, Vision v) {
  std::lock_guard<std::mutex> lock(mutex);
  if (bytes_locked() + v.vit_embeds.nbytes() <= max_bytes) vision[key] = std::move(v);
}

size_t VisualCacheImpl::bytes_locked() const {
  size_t total = 0;
  for (const auto& [key, v] : vision) total += v.vit_embeds.nbytes();
  if (sam2_image) total += feature_bytes(*sam2_image);
  for (const auto& [frame, f] : sam2_frames) total += feature_bytes(f);
  return total;
}

void Sa2vaModel::bind_components(Weights& w, const ModelConfig& config, Sa2vaModel* into) {
  VisionEncoder vision = VisionEncoder::load(w, config);
  LanguageModel llm = LanguageModel::load(w, config);
  sam2::Sam2Image sam2 = sam2::Sam2Image::load(w, config);
  sam2::VideoTracker tracker = sam2::VideoTracker::load(w, config);
  SegProjector seg_projector = SegProjector::load(w, config);
  if (into) {
    into->vision = std::move(vision);
    into->llm = std::move(llm);
    into->sam2 = std::move(sam2);
    into->tracker = std::move(tracker);
    into->seg_projector = std::move(seg_projector);
  }
}

std::unique_ptr<Sa2vaModel> Sa2vaModel::load(const std::string& model_dir, Precision precision) {
  ModelOptions options;
  options.precision = precision;
  return load(model_dir, options);
}

ExecContext Sa2vaModel::context(StageRecorder* recorder) const {
  ExecContext ctx;
  ctx.device = policy.device;
  ctx.precision = policy.precision;
  ctx.pool = pool.get();
  ctx.recorder = recorder;
  return ctx;
}

std::unique_ptr<Sa2vaModel> Sa2vaModel::load(const std::string& model_dir, const ModelOptions& options) {
  check(options.threads >= 0 && options.threads <= 1024, "model options: threads must be in 0..1024 (0 = all cores)");
  check(options.precision == Precision::F32 || options.precision == Precision::BF16,
        "model options: unknown precision " + std::to_string(static_cast<int>(options.precision)));
  check(options.weights == WeightFormat::F32 || options.weights == WeightFormat::BF16 ||
            options.weights == WeightFormat::Q8_0 || options.weights == WeightFormat::Q4_0,
        "model options: unknown weight format " + std::to_string(static_cast<int>(options.weights)));
  check(options.weights != WeightFormat::F32 || options.precision == Precision::F32,
        "model options: f32 weights need precision f32");
  auto m = std::make_unique<Sa2vaModel>();
  static std::atomic<uint64_t> loaded{0};
  m->instance_id = ++loaded;
  m->dir = model_dir;
  m->policy.device = parse_device(options.device);
  if (!m->policy.device.is_cpu()) {
    // A GPU that cannot be used says why (no driver, no such device, too old) first.
    { const DeviceScope probe(m->policy.device); }
  }
  m->policy.precision = options.precision;
  m->policy.llm_format = options.weights;
  m->pool = std::make_unique<ThreadPool>(options.threads > 0 ? options.threads : default_num_threads());
  // Weights are prepared (converted, quantized, fused) on the model's own threads.
  const ThreadPool::Use use_model_threads(*m->pool);
  m->config = load_config(model_dir);
  m->chat = &chat_template(m->config.template_name);
  m->tokenizer = Tokenizer::load(model_dir);
  m->checkpoint = std::make_unique<Checkpoint>(Checkpoint::open(model_dir));
  Weights w(*m->checkpoint, m->policy);
  bind_components(w, m->config, m.get());
  w.finish();
  // Fused weights were copied on the loading thread's stream; requests read them from theirs.
  if (!m->policy.device.is_cpu()) allocator_for(m->policy.device).synchronize();
#if defined(__GLIBC__)
  // Loading parsed tokenizer.json (~7 MB of JSON for Qwen2) into a temporary tree and prepared
  // weights through temporary buffers: the heap keeps such freed pages resident (~70 MB) unless
  // asked to give them back.
  malloc_trim(0);
#endif

  m->img_context_id = m->tokenizer->token_id(kImageContext);
  m->seg_id = m->tokenizer->token_id(kSegToken);
  check(m->img_context_id >= 0, model_dir + ": the tokenizer has no <IMG_CONTEXT> token (not a Sa2VA tokenizer)");
  check(m->seg_id >= 0, model_dir + ": the tokenizer has no [SEG] token (not a Sa2VA tokenizer)");
  // Generation ends on the tokenizer's eos id, as upstream passes tokenizer.eos_token_id (not the
  // LLM config's eos_token_id).
  m->eos_id = m->tokenizer->eos_id();
  const int32_t vocab = m->config.llm.vocab_size;
  check(m->img_context_id < vocab && m->seg_id < vocab,
        model_dir + ": tokenizer ids exceed llm_config.vocab_size " + std::to_string(vocab));
  return m;
}

StopRules Sa2vaModel::stop_rules() const {
  StopRules stop;
  stop.eos_id = eos_id;
  stop.stop_words = chat->stop_words;
  stop.decode = [this](const std::vector<int32_t>& ids) { return tokenizer->decode(ids, false); };
  return stop;
}

// ---- predict, stage by stage ---------------------------------------------------------------

// What flows between the stages of one request.
struct Sa2vaModel::PredictState {
  // check_request
  bool has_image = false, has_video = false;
  bool text_only = false;  // no image or video now or in the conversation so far
  std::string text;        // the request text, with the <image> placeholder where a first turn needs it
  // encode_vision
  Tensor vit_embeds;          // mlp1 output per tile / key frame; undefined for text
  std::string visual_tokens;  // <img><IMG_CONTEXT>…</img> (and region prompts) for the prompt
  size_t num_tiles = 0;       // image: dynamic tiles (thumbnail included)
  std::vector<uint8_t> vp_tiles;  // visual prompts: the tiles the regions read
  Tensor region_cells;            // visual prompts: U8 [K, grid²] token cells of each region
  std::vector<int> region_counts;  // visual prompts: the cells (tokens) of each region
  std::string region_list;        // visual prompts: the prompt's list of them (region_prompt_string)
  int64_t num_frames = 0;                // video
  std::vector<int> conditioning_frames;  // video: the key frames the LLM saw
  // prepare_prompt
  std::string prompt;
  std::vector<int32_t> prompt_ids;
  Tensor embeds;  // prompt embeddings, vision spliced in
  // generate_answer
  GenerationResult gen;
  // decode_outputs
  int64_t num_seg = 0;
  bool segment = false;  // masks are wanted: [SEG]s were generated about an image or video
  Tensor seg_embeds;     // [num_seg, sam hidden] when segmenting
  Prediction out;
};

Prediction Sa2vaModel::predict(const Request& request, StageRecorder* rec) const {
  const ExecContext ctx = context(rec);
  const ContextScope on_model_threads(ctx);
  const profile::Scope timed("predict");
  // Large buffers kept for reuse across frames go back to the system once the request is done.
  struct ReleaseIdleBuffers {
    explicit ReleaseIdleBuffers(const ExecContext& c) : ctx(c) {}
    ~ReleaseIdleBuffers() { ctx.allocator().release_idle(); }
    const ExecContext& ctx;
  } release_idle_buffers(ctx);
  PredictState s;
  check_request(request, s);
  if (auto* const cache = dynamic_cast<VisualCacheImpl*>(request.cache.get()); cache && (s.has_image || s.has_video)) {
    std::string medium;
    if (s.has_image) {  // its size and pixels
      const std::string_view pixels(reinterpret_cast<const char*>(request.image.rgb.data()), request.image.rgb.size());
      medium = "image (" + std::to_string(request.image.width) + "x" + std::to_string(request.image.height) + ", pixels #" +
               std::to_string(std::hash<std::string_view>{}(pixels)) + ")";
    } else {  // its size and length: frames are decoded only as needed
      medium = "video (" + std::to_string(request.video->width()) + "x" + std::to_string(request.video->height()) + ", " +
               std::to_string(request.video->frame_count()) + " frames)";
    }
    cache->bind(instance_id, medium);
  }
  stop_if_asked(request);
  encode_vision(request, s, ctx);
  // The stages' large buffers differ in size: what one stage leaves idle would sit beside the
  // next one's instead of serving it, so each hands its buffers back (a few page faults each).
  ctx.allocator().release_idle();
  stop_if_asked(request);
  prepare_prompt(request, s, ctx);
  s.vit_embeds = Tensor();  // spliced into the prompt (a visual cache keeps its own reference)
  generate_answer(request, s, ctx);
  s.embeds = Tensor();
  ctx.allocator().release_idle();
  decode_outputs(s, ctx);
  if (request.forced_answer.empty()) {  // the caller's stop strings end the content before them
    const size_t stop_at = first_stop_string(s.out.content, request.generation.stop);
    if (stop_at != std::string::npos) s.out.content.resize(stop_at);
  }
  s.gen.hidden = Tensor();  // the [SEG] rows are in seg_embeds: SAM2 runs without the rest
  s.out.finish_reason = request.forced_answer.empty() && s.gen.stop_reason == StopReason::MaxTokens ? "length" : "stop";
  if (request.on_answer) request.on_answer(s.out);
  stop_if_asked(request);
  if (s.segment) {
    if (s.has_image) segment_image(request, s, ctx);
    else track_video(request, s, ctx);
  }
  return std::move(s.out);
}

static SamplingOptions sampling_of(const GenerationOptions& g) {
  SamplingOptions sampling;
  sampling.max_new_tokens = g.max_new_tokens;
  sampling.temperature = g.temperature;
  sampling.top_k = g.top_k;
  sampling.top_p = g.top_p;
  sampling.seed = g.seed;
  return sampling;
}

// A frame as a Video (possibly the caller's own subclass) hands it over, checked before any
// kernel reads its buffer.
static Image checked_frame(Video& video, int64_t index) {
  Image frame = video.frame(index);
  check(frame.width > 0 && frame.height > 0 &&
            frame.rgb.size() == static_cast<size_t>(frame.width) * static_cast<size_t>(frame.height) * 3,
        "video frame " + std::to_string(index) + ": " + std::to_string(frame.width) + "x" + std::to_string(frame.height) +
            " with " + std::to_string(frame.rgb.size()) + " bytes of RGB (needs width x height x 3)");
  return frame;
}

void Sa2vaModel::check_request(const Request& request, PredictState& s) const {
  const bool has_image = request.image.width > 0;
  const bool has_video = request.video != nullptr;
  check(!(has_image && has_video), "a request takes an image or a video, not both");
  check(!strip(request.text).empty(), "empty prompt: the request text has no content");
  if (has_image)
    check(request.image.height > 0 && request.image.rgb.size() == static_cast<size_t>(request.image.width) *
                                                                        static_cast<size_t>(request.image.height) * 3,
          "the request image's pixel buffer does not match its size");
  check(request.mask_prompts.empty() || has_image, "visual prompts (mask prompts) need an image");
  check(request.max_tiles >= 1 && request.max_tiles <= 40, "max_tiles must be in 1..40");
  check(request.video_llm_frames >= 1, "video_llm_frames must be at least 1");
  // Before any encoder runs: a long video's key frames take a while.
  if (request.forced_answer.empty()) check_sampling(sampling_of(request.generation));
  for (const std::string& stop : request.generation.stop) check(!stop.empty(), "generation: a stop string is empty");
  for (size_t k = 0; k < request.mask_prompts.size(); ++k) check_mask_prompt(request.mask_prompts[k], static_cast<int64_t>(k));
  if (has_video)
    check(request.video->frame_count() >= 1 && request.video->frame_count() <= std::numeric_limits<int>::max(),
          "the video has " + std::to_string(request.video->frame_count()) + " frames (1 to 2^31 - 1 are supported)");
  if (has_video && config.llm.rope_scaling_type.empty()) {
    // Past its trained context a language model without RoPE scaling answers noise; refused before
    // the vision encoder takes every one of those frames in one batch.
    const int64_t frames = std::min<int64_t>(request.video_llm_frames, request.video->frame_count());
    const int64_t tokens = frames * config.num_image_tokens();
    check(tokens < config.llm.max_position_embeddings,
          "video_llm_frames " + std::to_string(request.video_llm_frames) + ": " + std::to_string(frames) +
              " frames of " + std::to_string(config.num_image_tokens()) + " tokens exceed the language model's context of " +
              std::to_string(config.llm.max_position_embeddings) + " tokens");
  }

  const size_t placeholder = request.text.find(kImagePlaceholder);
  check(placeholder == std::string::npos ||
            request.text.find(kImagePlaceholder, placeholder + std::strlen(kImagePlaceholder)) == std::string::npos,
        "the request text holds \"<image>\" more than once (one image or video per conversation)");
  check(request.text.find(kImageContext) == std::string::npos,
        "the request text holds \"" + std::string(kImageContext) + "\", a token the model places itself (write \"" +
            std::string(kImagePlaceholder) + "\" where the image goes)");
  check(request.forced_answer.find(kImageContext) == std::string::npos,
        "the forced answer holds \"" + std::string(kImageContext) + "\", a token the model places itself");
  const bool past_has_media = request.past_text.find(kImagePlaceholder) != std::string::npos ||
                              request.past_text.find(kImageContext) != std::string::npos;
  check(placeholder == std::string::npos || !past_has_media,
        "a later turn's text holds \"<image>\": the conversation's first turn placed its image or video (a later "
        "turn passes the same medium, and visual prompts, without the placeholder)");
  check(!(has_image || has_video) || request.past_text.empty() || past_has_media || placeholder != std::string::npos,
        "a later turn brings an image or video its conversation did not start with: put \"<image>\" in its text "
        "where it goes, or start a new conversation (empty past_text)");
  s.has_image = has_image;
  s.has_video = has_video;
  s.text_only = !has_image && !has_video && request.past_text.find(kImagePlaceholder) == std::string::npos &&
                request.past_text.find(kImageContext) == std::string::npos;
  s.text = request.text;
  // A first turn about an image or video needs the placeholder; add it where users forget it.
  if ((has_image || has_video) && request.past_text.empty() && s.text.find(kImagePlaceholder) == std::string::npos)
    s.text = std::string(kImagePlaceholder) + "\n" + s.text;
}

// The prompt needs only the number of visual tokens, which the sizes decide: no model runs here.
std::string Sa2vaModel::conversation_after(const Request& request, const std::string& answer) const {
  PredictState s;
  check_request(request, s);
  check(answer.find(kImageContext) == std::string::npos,
        "the answer holds \"" + std::string(kImageContext) + "\", a token the model places itself");
  const int tokens = config.num_image_tokens();
  std::string visual;
  if (s.has_image) {
    const preprocess::TileGrid grid = preprocess::choose_tile_grid(request.image.width, request.image.height, 1,
                                                                   request.max_tiles);
    visual = image_token_string(grid.count() + (grid.count() > 1 ? 1 : 0), tokens);
    if (!request.mask_prompts.empty()) {
      const int grid = static_cast<int>(std::lround(std::sqrt(tokens)));
      visual += region_prompt_string(preprocess::region_cell_counts(request.mask_prompts, grid, nullptr));
    }
  } else if (s.has_video) {
    const auto frames = preprocess::llm_frame_indices(request.video->frame_count(), request.video_llm_frames,
                                          request.video_uniform_frames);
    visual = video_token_string(static_cast<int>(frames.size()), tokens);
  }
  return build_prompt(*chat, s.text, s.text_only ? "" : visual, request.past_text) +
         strip(with_turn_suffix(answer, *chat));
}

// ---- vision: image tiles (and visual prompts) or video key frames -> vit_embeds, visual tokens --

void Sa2vaModel::encode_vision(const Request& request, PredictState& s, const ExecContext& ctx) const {
  if (s.has_image) {
    encode_image(request, s, ctx);
    if (!request.mask_prompts.empty()) encode_mask_prompts(request, s, ctx);
  } else if (s.has_video) {
    encode_video_key_frames(request, s, ctx);
  }
}

void Sa2vaModel::encode_image(const Request& request, PredictState& s, const ExecContext& ctx) const {
  StageRecorder* const rec = ctx.recorder;
  auto* const cache = dynamic_cast<VisualCacheImpl*>(request.cache.get());
  const std::string key = "image/" + std::to_string(request.max_tiles);
  if (const auto known = cache ? cache->find_vision(key) : std::nullopt) {
    s.vit_embeds = known->vit_embeds;
    s.visual_tokens = known->visual_tokens;
    s.num_tiles = known->num_tiles;
    return;
  }
  const std::vector<Image> tiles = preprocess::dynamic_tiles(request.image, 1, request.max_tiles);
  record(rec, "tiles_u8", image_u8(tiles));
  if (rec) record(rec, "tiles_u8.sub4", image_u8_sub4(tiles));
  s.vit_embeds = vision.forward(preprocess::normalize_for_vit(tiles), ctx);
  s.visual_tokens = image_token_string(static_cast<int>(tiles.size()), config.num_image_tokens());
  s.num_tiles = tiles.size();
  if (cache) cache->keep_vision(key, {s.vit_embeds, s.visual_tokens, s.num_tiles, {}});
}

void Sa2vaModel::encode_mask_prompts(const Request& request, PredictState& s, const ExecContext& ctx) const {
  StageRecorder* const rec = ctx.recorder;
  const int64_t K = static_cast<int64_t>(request.mask_prompts.size());
  const int grid = static_cast<int>(std::lround(std::sqrt(config.num_image_tokens())));
  s.region_counts = preprocess::region_cell_counts(request.mask_prompts, grid, &s.region_cells);
  const std::vector<int>& counts = s.region_counts;
  record(rec, "mask_prompts_16x16", s.region_cells.view({K, grid, grid}));
  s.vp_tiles.assign(s.num_tiles, 0);
  s.vp_tiles.back() = 1;  // regions read the thumbnail (or the single tile)
  s.region_list = region_prompt_string(counts);
  s.visual_tokens += s.region_list;
}

void Sa2vaModel::encode_video_key_frames(const Request& request, PredictState& s, const ExecContext& ctx) const {
  StageRecorder* const rec = ctx.recorder;
  s.num_frames = request.video->frame_count();
  auto* const cache = dynamic_cast<VisualCacheImpl*>(request.cache.get());
  const std::string cache_key =
      "video/" + std::to_string(request.video_llm_frames) + "/" + (request.video_uniform_frames ? "uniform" : "first");
  if (const auto known = cache ? cache->find_vision(cache_key) : std::nullopt) {
    s.vit_embeds = known->vit_embeds;
    s.visual_tokens = known->visual_tokens;
    s.conditioning_frames = known->conditioning_frames;
    return;
  }
  const std::vector<int64_t> key =
      preprocess::llm_frame_indices(s.num_frames, request.video_llm_frames, request.video_uniform_frames);
  std::vector<Image> frames448;
  for (int64_t index : key)
    frames448.push_back(preprocess::resize_bicubic(checked_frame(*request.video, index), preprocess::kVitImageSize,
                                                   preprocess::kVitImageSize));
  record(rec, "frames_448_u8", image_u8(frames448));
  s.vit_embeds = vision.forward(preprocess::normalize_for_vit(frames448), ctx);
  s.visual_tokens = video_token_string(static_cast<int>(key.size()), config.num_image_tokens());
  for (int64_t index : key) s.conditioning_frames.push_back(static_cast<int>(index));
  if (cache) cache->keep_vision(cache_key, {s.vit_embeds, s.visual_tokens, 0, s.conditioning_frames});
}

// ---- prompt: build, tokenize, embed, splice the vision features ----------------------------

void Sa2vaModel::prepare_prompt(const Request& request, PredictState& s, const ExecContext& ctx) const {
  StageRecorder* const rec = ctx.recorder;
  s.prompt = build_prompt(*chat, s.text, s.visual_tokens, request.past_text);
  s.prompt_ids = tokenizer->encode(s.prompt);
  // A conversation grown past the trained context of a model without RoPE scaling gets noise back.
  check(!config.llm.rope_scaling_type.empty() ||
            static_cast<int64_t>(s.prompt_ids.size()) < config.llm.max_position_embeddings,
        "the prompt has " + std::to_string(s.prompt_ids.size()) + " tokens (visual tokens and earlier turns included), "
        "more than the language model's context of " + std::to_string(config.llm.max_position_embeddings) +
            " tokens: start a new conversation or shorten it");
  record(rec, "prompt_ids", ids_tensor(s.prompt_ids));
  s.embeds = llm.embed(s.prompt_ids);
  const bool spliced_vision = s.vit_embeds.defined() && !s.text_only;
  if (spliced_vision) {
    const Tensor rows = image_replacement_rows(s.vit_embeds, s.vp_tiles, s.region_cells);
    // A later turn splices its medium into the tokens the first turn placed: they must agree.
    const int64_t slots = std::count(s.prompt_ids.begin(), s.prompt_ids.end(), img_context_id);
    check(request.past_text.empty() || slots == rows.size(0),
          "the conversation so far holds " + std::to_string(slots) + " image tokens, but this request's " +
              (s.has_video ? "video" : "image") + (request.mask_prompts.empty() ? "" : " and visual prompts") +
              " give " + std::to_string(rows.size(0)) +
              ": a later turn passes its conversation's medium again, with the same visual prompts as the first turn");
    // The same count could come from the regions in another order: the first turn's list must read
    // as this request's (each region's tokens, in order).
    check(request.past_text.empty() || s.region_list.empty() || request.past_text.find(s.region_list) != std::string::npos,
          "the conversation so far does not list this request's visual prompts (" + region_token_counts(s.region_counts) +
              "): a later turn passes the first turn's regions again, in the same order");
    s.embeds = splice_image_embeddings(s.embeds, s.prompt_ids, img_context_id, rows);
  }
}

// ---- generate: teacher-forced answer or sampled ----------------------------------------------

void Sa2vaModel::generate_answer(const Request& request, PredictState& s, const ExecContext& ctx) const {
  StageRecorder* const rec = ctx.recorder;
  if (!request.forced_answer.empty()) {
    const std::string answer = with_turn_suffix(request.forced_answer, *chat);
    std::vector<int32_t> answer_ids = tokenizer->encode(answer);
    if (tokenizer->adds_bos() && !answer_ids.empty() && answer_ids.front() == tokenizer->bos_id())
      answer_ids.erase(answer_ids.begin());
    check(!answer_ids.empty(), "the forced answer has no tokens");
    std::vector<int32_t> input_ids = s.prompt_ids;
    input_ids.insert(input_ids.end(), answer_ids.begin(), answer_ids.end());
    record(rec, "answer_ids", ids_tensor(answer_ids));
    record(rec, "input_ids", ids_tensor(input_ids));
    s.gen = teacher_forced(llm, s.embeds, answer_ids, eos_id, ctx);
  } else {
    SamplingOptions sampling = sampling_of(request.generation);
    // A model without RoPE scaling answers noise past its trained context: the answer ends there
    // ("length"), as it would at max_new_tokens.
    if (config.llm.rope_scaling_type.empty())
      sampling.max_new_tokens = static_cast<int>(std::min<int64_t>(
          sampling.max_new_tokens, config.llm.max_position_embeddings - static_cast<int64_t>(s.prompt_ids.size())));
    StepLogits steps;
    LogitsObserver observer;
    if (rec) observer = [&steps](int, const float* logits, int64_t vocab) { steps.observe(logits, vocab); };
    size_t streamed = 0;  // bytes of the decoded answer already handed to on_text
    const std::vector<std::string>& stops = request.generation.stop;
    // Text up to what may yet become a stop string is handed over; with `final`, all but a stop string.
    const auto hand_over = [&](const std::string& text, bool final) {
      size_t ready = complete_utf8_length(text);
      if (!stops.empty()) ready = std::min(ready, final ? std::min(text.size(), first_stop_string(text, stops))
                                                        : stop_string_safe_length(text, stops));
      if (ready <= streamed) return;
      request.on_text(text.substr(streamed, ready - streamed));
      streamed = ready;
    };
    StopRules rules = stop_rules();
    rules.stop_strings = stops;
    const TokenObserver on_token = [&](const std::vector<int32_t>& generated) {
      stop_if_asked(request);
      // The last token (end of turn, a stop word or string) hands over all it may at once, so that an
      // end-of-turn marker is never split by a tail held back for a stop string.
      if (!request.on_text) return;
      const std::string text = tokenizer->decode(generated, false);
      hand_over(text, !stops.empty() && stop_in_text(text, generated.back(), rules).has_value());
    };
    s.gen = generate(llm, s.embeds, sampling, rules, ctx, observer, on_token);
    if (request.on_text && !stops.empty())  // a tail held back at the token limit
      hand_over(tokenizer->decode(s.gen.ids, false), true);
    record(rec, "generated_ids", ids_tensor(s.gen.ids));
    if (rec) steps.record(*rec);
  }
}

// ---- outputs: text, caption, phrases, [SEG] hidden states -> seg projection -------------------

void Sa2vaModel::decode_outputs(PredictState& s, const ExecContext& ctx) const {
  StageRecorder* const rec = ctx.recorder;
  Prediction& out = s.out;
  const GenerationResult& gen = s.gen;
  out.generated_ids = gen.ids;
  out.prompt_tokens = static_cast<int64_t>(s.prompt_ids.size());
  const std::string raw_answer = tokenizer->decode(gen.ids, false);
  out.text = strip(raw_answer);
  // The next turn continues from this prompt and the answer as returned (stripped).
  out.past_text = s.prompt + out.text;
  std::vector<std::string> end_markers = chat->stop_words;
  if (eos_id >= 0) end_markers.push_back(tokenizer->decode({eos_id}, false));
  out.content = without_end_of_turn(out.text, end_markers);
  out.caption = clean_caption(out.text);
  out.phrases = extract_phrases(out.text);

  const Tensor seg_hidden = seg_hidden_states(gen, seg_id);
  s.num_seg = seg_hidden.defined() ? seg_hidden.size(0) : 0;
  {
    // [SEG] positions in prompt + answer, for the dump.
    std::vector<int32_t> positions;
    for (size_t i = 0; i + 1 < gen.ids.size(); ++i)
      if (gen.ids[i] == seg_id) positions.push_back(static_cast<int32_t>(s.prompt_ids.size() + i));
    if (rec && s.num_seg > 0) record(rec, "seg.positions", ids_tensor(positions));
  }
  // Phrases pair with [SEG]s by order; pad or trim so there is one (maybe empty) per mask.
  out.phrases.resize(static_cast<size_t>(s.num_seg));
  // Masks need the visual input itself: a later turn whose conversation saw an image but whose
  // request carries none is answered as text, and its [SEG]s give no masks (as upstream).
  s.segment = (s.has_image || s.has_video) && !s.text_only && s.num_seg > 0;
  if (!s.segment) return;

  record(rec, "seg.hidden", seg_hidden);
  s.seg_embeds = seg_projector.forward(seg_hidden);
  record(rec, "seg.embeds", s.seg_embeds);

  out.masks.assign(static_cast<size_t>(s.num_seg), {});
  out.scores.assign(static_cast<size_t>(s.num_seg), 0.f);
}

// ---- segment (image): one conditioning frame per [SEG] -----------------------------------------

void Sa2vaModel::segment_image(const Request& request, PredictState& s, const ExecContext& ctx) const {
  StageRecorder* const rec = ctx.recorder;
  const int H = request.image.height, W = request.image.width;
  auto* const cache = dynamic_cast<VisualCacheImpl*>(request.cache.get());
  std::optional<sam2::FrameFeatures> cached;
  if (cache) {
    std::lock_guard<std::mutex> lock(cache->mutex);
    cached = cache->sam2_image;
  }
  sam2::FrameFeatures features;
  if (cached) {
    features = *cached;
  } else {
    const Image resized = preprocess::sam2_resize(request.image);
    record(rec, "sam.input_u8", image_u8({resized}));
    if (rec) record(rec, "sam.input_u8.sub4", image_u8_sub4({resized}).select(0, 0));
    features = sam2.encode(preprocess::sam2_normalize(resized), ctx);
    ctx.allocator().release_idle();  // the encoder's scratch, sized for Hiera, serves no decoder buffer
    if (cache) {
      std::lock_guard<std::mutex> lock(cache->mutex);
      if (cache->bytes_locked() + feature_bytes(features) <= cache->max_bytes) cache->sam2_image = features;
    }
  }
  for (int64_t k = 0; k < s.num_seg; ++k) {
    stop_if_asked(request);
    const sam2::DecoderOutput d =
        sam2.decode_conditioning(features, s.seg_embeds.kernel_f32() + k * s.seg_embeds.size(1),
                                 k == 0 ? ctx : ctx.silent());
    const Tensor logits = preprocess::postprocess_mask_logits(d.low_res_mask, H, W);
    const Tensor mask = preprocess::threshold_mask(logits);
    const std::string name = "seg" + std::to_string(k);
    record(rec, name + ".mask_logits_lowres", d.low_res_mask.view({1, d.low_res_mask.size(0), d.low_res_mask.size(1)}));
    record(rec, name + ".mask_logits", logits.view({1, H, W}));
    record(rec, name + ".mask", stack({mask}, DType::BOOL));
    s.out.masks[static_cast<size_t>(k)].push_back(to_mask(mask));
    s.out.scores[static_cast<size_t>(k)] = d.iou;
  }
}

// ---- track (video): conditioning frames are the frames the LLM saw, then every frame ----------

void Sa2vaModel::track_video(const Request& request, PredictState& s, const ExecContext& ctx) const {
  StageRecorder* const rec = ctx.recorder;
  const int H = request.video->height(), W = request.video->width();
  const int64_t num_seg = s.num_seg, num_frames = s.num_frames;
  std::vector<std::vector<Tensor>> dumped_low(static_cast<size_t>(num_seg)), dumped_logits(dumped_low.size()),
      dumped_masks(dumped_low.size());
  Video* video = request.video;
  Prediction& out = s.out;
  int64_t done = 0;
  // Frame features kept in the request's cache while they fit its budget (a video session's later turns).
  auto* const cache = dynamic_cast<VisualCacheImpl*>(request.cache.get());
  sam2::VideoTracker::FeatureCache feature_cache;
  if (cache) {
    feature_cache.lookup = [cache](int t) -> std::optional<sam2::FrameFeatures> {
      std::lock_guard<std::mutex> lock(cache->mutex);
      const auto hit = cache->sam2_frames.find(t);
      if (hit == cache->sam2_frames.end()) return std::nullopt;
      return hit->second;
    };
    feature_cache.store = [cache](int t, const sam2::FrameFeatures& f) {
      std::lock_guard<std::mutex> lock(cache->mutex);
      if (cache->bytes_locked() + feature_bytes(f) <= cache->max_bytes) cache->sam2_frames[t] = f;
    };
  }
  tracker.track(
      sam2, s.seg_embeds, static_cast<int>(num_frames), s.conditioning_frames,
      [&](int t) {
        stop_if_asked(request);
        Image frame;
        {
          const profile::Scope timed("video.decode_frame");
          frame = checked_frame(*video, t);
        }
        const profile::Scope timed("sam2.preprocess");
        return preprocess::sam2_input(frame);
      },
      [&](int t, int k, const Tensor& low) {
        const Tensor logits = preprocess::postprocess_mask_logits(low, H, W);
        const Tensor mask = preprocess::threshold_mask(logits);
        if (rec) {
          // The tracker hands `low` over to us; logits and mask are fresh tensors: keep them as they are.
          dumped_low[static_cast<size_t>(k)].push_back(low);
          dumped_logits[static_cast<size_t>(k)].push_back(logits);
          dumped_masks[static_cast<size_t>(k)].push_back(mask);
        }
        if (request.on_mask) request.on_mask(k, t, to_mask(mask));
        else out.masks[static_cast<size_t>(k)].push_back(to_mask(mask));
        if (k == num_seg - 1 && request.on_progress) request.on_progress(++done, num_frames);
      },
      ctx, cache ? &feature_cache : nullptr);
  if (rec) {
    for (int64_t k = 0; k < num_seg; ++k) {
      const std::string name = "seg" + std::to_string(k);
      record(rec, name + ".mask_logits_lowres", stack(dumped_low[static_cast<size_t>(k)], DType::F32));
      record(rec, name + ".mask_logits", stack(dumped_logits[static_cast<size_t>(k)], DType::F32));
      record(rec, name + ".mask", stack(dumped_masks[static_cast<size_t>(k)], DType::BOOL));
    }
  }
}

// ---- grounded captions: upstream's GCG evaluation clean-up (docs/glue.md §5) -----------------

namespace {

// Python's str.replace: one left-to-right pass over non-overlapping occurrences (what a
// replacement creates is not looked at again).
std::string replace_once_each(const std::string& s, const std::string& from, const std::string& to) {
  std::string out;
  size_t pos = 0;
  for (size_t hit; (hit = s.find(from, pos)) != std::string::npos; pos = hit + from.size())
    out.append(s, pos, hit - pos).append(to);
  return out.append(s, pos, std::string::npos);
}

// Length in bytes of the character at s[i] when it is whitespace for Python's str.isspace()
// (and so for str.split() / str.strip()), else 0. Bytes that are not valid UTF-8 are not whitespace.
size_t python_space_at(const std::string& s, size_t i) {
  const auto byte = [&](size_t k) { return k < s.size() ? static_cast<unsigned char>(s[k]) : 0u; };
  const unsigned c0 = byte(i);
  if (c0 < 0x80) return (c0 >= 0x09 && c0 <= 0x0d) || (c0 >= 0x1c && c0 <= 0x20) ? 1 : 0;
  const auto cont = [&](size_t k) { return (byte(k) & 0xc0u) == 0x80u; };
  char32_t cp = 0;
  size_t len = 0;
  if ((c0 & 0xe0u) == 0xc0u && cont(i + 1)) {
    cp = ((c0 & 0x1fu) << 6) | (byte(i + 1) & 0x3fu);
    len = 2;
  } else if ((c0 & 0xf0u) == 0xe0u && cont(i + 1) && cont(i + 2)) {
    cp = ((c0 & 0x0fu) << 12) | ((byte(i + 1) & 0x3fu) << 6) | (byte(i + 2) & 0x3fu);
    len = 3;
  } else {
    return 0;  // 4-byte characters are never whitespace
  }
  const bool space = cp == 0x85 || cp == 0xa0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 ||
                     cp == 0x2029 || cp == 0x202f || cp == 0x205f || cp == 0x3000;
  return space ? len : 0;
}

// Python's str.strip() (no argument): Unicode whitespace off both ends.
std::string python_strip(const std::string& s) {
  size_t b = 0;
  for (size_t n; b < s.size() && (n = python_space_at(s, b)) > 0;) b += n;
  size_t e = b, i = b;  // e: end of the last non-space character
  while (i < s.size()) {
    const size_t n = python_space_at(s, i);
    if (n > 0) {
      i += n;
    } else {
      ++i;
      e = i;
    }
  }
  return s.substr(b, e - b);
}

// ' '.join(s.split()): runs of Unicode whitespace become one space, none at the ends.
std::string python_split_join(const std::string& s) {
  std::string out;
  bool gap = false;
  for (size_t i = 0; i < s.size();) {
    if (const size_t n = python_space_at(s, i); n > 0) {
      gap = !out.empty();
      i += n;
      continue;
    }
    if (gap) out.push_back(' ');
    gap = false;
    out.push_back(s[i++]);
  }
  return out;
}

// The text upstream's GCG evaluation works on: "<s>" removed, every '\n' removed (not replaced by a
// space), "  " replaced by " " in one pass, and only what follows the last "ASSISTANT: " kept.
std::string gcg_text(const std::string& answer) {
  std::string t = replace_once_each(answer, "<s>", "");
  t = replace_once_each(t, "\n", "");
  t = replace_once_each(t, "  ", " ");
  const std::string marker = "ASSISTANT: ";
  if (const size_t p = t.rfind(marker); p != std::string::npos) t.erase(0, p + marker.size());
  return t;
}

}  // namespace

std::vector<std::string> extract_phrases(const std::string& answer) {
  // re.findall(r'<p>(.*?)</p>') on the cleaned text (which holds no '\n' any more), each stripped.
  const std::string t = gcg_text(answer);
  std::vector<std::string> out;
  for (size_t pos = 0;;) {
    const size_t open = t.find("<p>", pos);
    if (open == std::string::npos) break;
    const size_t close = t.find("</p>", open + 3);
    if (close == std::string::npos) break;
    out.push_back(python_strip(t.substr(open + 3, close - open - 3)));
    pos = close + 4;
  }
  return out;
}

std::string clean_caption(const std::string& answer) {
  // re.sub(r'<.*?>', '', t): every '<' up to the next '>' goes.
  const std::string t = gcg_text(answer);
  std::string untagged;
  for (size_t i = 0; i < t.size();) {
    if (t[i] == '<') {
      const size_t close = t.find('>', i + 1);
      if (close != std::string::npos) {
        i = close + 1;
        continue;
      }
    }
    untagged.push_back(t[i++]);
  }
  std::string caption = python_split_join(replace_once_each(untagged, "[SEG]", ""));
  const size_t b = caption.find_first_not_of('\'');
  caption = b == std::string::npos ? std::string() : caption.substr(b, caption.find_last_not_of('\'') - b + 1);
  return python_strip(caption);
}

}  // namespace sa2va
