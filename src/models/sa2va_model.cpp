#include "models/sa2va_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <regex>

#include "core/block_pool.h"
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

// Stacks per-frame [h, w] tensors into [frames, h, w] for the stage dump.
Tensor stack(const std::vector<Tensor>& frames, DType dtype) {
  const int64_t h = frames[0].size(-2), w = frames[0].size(-1);
  Tensor out = Tensor::empty({static_cast<int64_t>(frames.size()), h, w}, dtype);
  const size_t bytes = static_cast<size_t>(h * w) * dtype_size(dtype);
  for (size_t i = 0; i < frames.size(); ++i)
    std::memcpy(static_cast<char*>(out.raw()) + i * bytes, frames[i].contiguous().raw(), bytes);
  return out;
}

}  // namespace

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
  auto m = std::make_unique<Sa2vaModel>();
  m->dir = model_dir;
  m->precision = precision;
  m->config = load_config(model_dir);
  m->chat = &chat_template(m->config.template_name);
  m->tokenizer = Tokenizer::load(model_dir);
  m->checkpoint = std::make_unique<Checkpoint>(Checkpoint::open(model_dir));
  Weights w(*m->checkpoint, precision);
  bind_components(w, m->config, m.get());
  w.finish();

  m->img_context_id = m->tokenizer->token_id(kImageContext);
  m->seg_id = m->tokenizer->token_id(kSegToken);
  check(m->img_context_id >= 0, model_dir + ": the tokenizer has no <IMG_CONTEXT> token (not a Sa2VA tokenizer)");
  check(m->seg_id >= 0, model_dir + ": the tokenizer has no [SEG] token (not a Sa2VA tokenizer)");
  // Generation ends on the LLM config's eos id (upstream passes tokenizer.eos_token_id, the same id).
  m->eos_id = m->config.llm.eos_token_id >= 0 ? m->config.llm.eos_token_id : m->tokenizer->eos_id();
  const int32_t vocab = m->config.llm.vocab_size;
  check(m->img_context_id < vocab && m->seg_id < vocab,
        model_dir + ": tokenizer ids exceed llm_config.vocab_size " + std::to_string(vocab));
  return m;
}

Prediction Sa2vaModel::predict(const Request& request, StageRecorder* rec) const {
  const profile::Scope timed("predict");
  // Large buffers kept for reuse across frames go back to the system once the request is done.
  struct ReleaseIdleBuffers {
    ~ReleaseIdleBuffers() { block_pool::release_idle(); }
  } release_idle_buffers;
  const bool has_image = request.image.width > 0;
  const bool has_video = request.video != nullptr;
  check(!(has_image && has_video), "a request takes an image or a video, not both");
  check(!strip(request.text).empty(), "empty prompt: the request text has no content");
  if (has_image)
    check(request.image.height > 0 && request.image.rgb.size() == static_cast<size_t>(request.image.width) *
                                                                        static_cast<size_t>(request.image.height) * 3,
          "the request image's pixel buffer does not match its size");
  check(request.mask_prompts.empty() || has_image, "visual prompts (mask prompts) need an image");
  check(request.mask_prompts.empty() || request.past_text.empty(),
        "visual prompts are only supported on the first turn (past_text must be empty), as upstream");
  check(request.max_tiles >= 1 && request.max_tiles <= 40, "max_tiles must be in 1..40");
  check(request.video_llm_frames >= 1, "video_llm_frames must be at least 1");

  const bool text_only = !has_image && !has_video && request.past_text.find(kImagePlaceholder) == std::string::npos &&
                         request.past_text.find(kImageContext) == std::string::npos;
  const int tokens_per_tile = config.num_image_tokens();
  std::string text = request.text;
  // A first turn about an image or video needs the placeholder; add it where users forget it.
  if ((has_image || has_video) && request.past_text.empty() && text.find(kImagePlaceholder) == std::string::npos)
    text = std::string(kImagePlaceholder) + "\n" + text;

  // ---- vision -------------------------------------------------------------------------------
  Tensor vit_embeds;
  std::string visual_tokens;
  std::vector<uint8_t> vp_tiles;
  Tensor region_cells;
  int64_t num_frames = 0;
  std::vector<int> conditioning_frames;  // video: the key frames the LLM saw
  if (has_image) {
    const std::vector<Image> tiles = preprocess::dynamic_tiles(request.image, 1, request.max_tiles);
    record(rec, "tiles_u8", image_u8(tiles));
    vit_embeds = vision.forward(preprocess::normalize_for_vit(tiles), rec);
    visual_tokens = image_token_string(static_cast<int>(tiles.size()), tokens_per_tile);
    if (!request.mask_prompts.empty()) {
      const int64_t K = static_cast<int64_t>(request.mask_prompts.size());
      const int grid = static_cast<int>(std::lround(std::sqrt(tokens_per_tile)));
      region_cells = Tensor::empty({K, static_cast<int64_t>(grid) * grid}, DType::U8);
      std::vector<int> counts;
      for (int64_t k = 0; k < K; ++k) {
        const Mask& m = request.mask_prompts[static_cast<size_t>(k)];
        check(m.width == request.image.width && m.height == request.image.height &&
                  m.data.size() == static_cast<size_t>(m.width) * static_cast<size_t>(m.height),
              "mask prompt " + std::to_string(k + 1) + " is " + std::to_string(m.width) + "x" +
                  std::to_string(m.height) + ", the image is " + std::to_string(request.image.width) + "x" +
                  std::to_string(request.image.height));
        const Tensor cells = preprocess::mask_prompt_grid(m.data.data(), m.width, m.height, grid).contiguous();
        std::memcpy(region_cells.data<uint8_t>() + k * grid * grid, cells.data<uint8_t>(), grid * grid);
        const int n = static_cast<int>(std::count_if(cells.data<uint8_t>(), cells.data<uint8_t>() + grid * grid,
                                                     [](uint8_t v) { return v != 0; }));
        check(n > 0, "mask prompt " + std::to_string(k + 1) + " covers no cell of the " + std::to_string(grid) + "x" +
                         std::to_string(grid) + " token grid (region too small or empty)");
        counts.push_back(n);
      }
      record(rec, "mask_prompts_16x16", region_cells.view({K, grid, grid}));
      vp_tiles.assign(tiles.size(), 0);
      vp_tiles.back() = 1;  // regions read the thumbnail (or the single tile)
      visual_tokens += region_prompt_string(counts);
    }
  } else if (has_video) {
    num_frames = request.video->frame_count();
    check(num_frames > 0, "the video has no frames");
    const std::vector<int64_t> key =
        llm_frame_indices(num_frames, request.video_llm_frames, request.video_uniform_frames);
    std::vector<Image> frames448;
    for (int64_t index : key)
      frames448.push_back(preprocess::resize_bicubic(request.video->frame(index), preprocess::kVitImageSize, preprocess::kVitImageSize));
    record(rec, "frames_448_u8", image_u8(frames448));
    vit_embeds = vision.forward(preprocess::normalize_for_vit(frames448), rec);
    visual_tokens = video_token_string(static_cast<int>(key.size()), tokens_per_tile);
    for (int64_t index : key) conditioning_frames.push_back(static_cast<int>(index));
  }

  // ---- prompt and language model ------------------------------------------------------------
  const std::string prompt = build_prompt(*chat, text, visual_tokens, request.past_text);
  const std::vector<int32_t> prompt_ids = tokenizer->encode(prompt);
  record(rec, "prompt_ids", ids_tensor(prompt_ids));
  Tensor embeds = llm.embed(prompt_ids);
  const bool spliced_vision = vit_embeds.defined() && !text_only;
  if (spliced_vision)
    embeds = splice_image_embeddings(embeds, prompt_ids, img_context_id,
                                     image_replacement_rows(vit_embeds, vp_tiles, region_cells));

  GenerationResult gen;
  if (!request.forced_answer.empty()) {
    std::string answer = request.forced_answer;
    if (answer.size() < chat->suffix.size() || answer.compare(answer.size() - chat->suffix.size(), std::string::npos,
                                                              chat->suffix) != 0)
      answer += chat->suffix;
    std::vector<int32_t> answer_ids = tokenizer->encode(answer);
    if (tokenizer->adds_bos() && !answer_ids.empty() && answer_ids.front() == tokenizer->bos_id())
      answer_ids.erase(answer_ids.begin());
    check(!answer_ids.empty(), "the forced answer has no tokens");
    std::vector<int32_t> input_ids = prompt_ids;
    input_ids.insert(input_ids.end(), answer_ids.begin(), answer_ids.end());
    record(rec, "input_ids", ids_tensor(input_ids));
    gen = teacher_forced(llm, embeds, answer_ids, eos_id, rec);
  } else {
    SamplingOptions sampling;
    sampling.max_new_tokens = request.generation.max_new_tokens;
    sampling.temperature = request.generation.temperature;
    sampling.top_k = request.generation.top_k;
    sampling.top_p = request.generation.top_p;
    sampling.seed = request.generation.seed;
    check(sampling.max_new_tokens >= 1, "max_new_tokens must be at least 1");
    StopRules stop;
    stop.eos_id = eos_id;
    stop.stop_words = chat->stop_words;
    stop.decode = [this](const std::vector<int32_t>& ids) { return tokenizer->decode(ids, false); };
    gen = generate(llm, embeds, sampling, stop, rec);
    record(rec, "generated_ids", ids_tensor(gen.ids));
  }

  Prediction out;
  out.generated_ids = gen.ids;
  const std::string raw_answer = tokenizer->decode(gen.ids, false);
  out.text = strip(raw_answer);
  out.past_text = prompt + raw_answer;
  out.caption = clean_caption(out.text);
  out.phrases = extract_phrases(out.text);

  const Tensor seg_hidden = seg_hidden_states(gen, seg_id);
  const int64_t num_seg = seg_hidden.defined() ? seg_hidden.size(0) : 0;
  {
    // [SEG] positions in prompt + answer, for the dump.
    std::vector<int32_t> positions;
    for (size_t i = 0; i + 1 < gen.ids.size(); ++i)
      if (gen.ids[i] == seg_id) positions.push_back(static_cast<int32_t>(prompt_ids.size() + i));
    if (rec && num_seg > 0) record(rec, "seg.positions", ids_tensor(positions));
  }
  // Phrases pair with [SEG]s by order; pad or trim so there is one (maybe empty) per mask.
  out.phrases.resize(static_cast<size_t>(num_seg));
  if (text_only || num_seg == 0) return out;

  record(rec, "seg.hidden", seg_hidden);
  const Tensor seg_embeds = seg_projector.forward(seg_hidden);
  record(rec, "seg.embeds", seg_embeds);

  out.masks.assign(static_cast<size_t>(num_seg), {});
  out.scores.assign(static_cast<size_t>(num_seg), 0.f);
  if (has_image) {
    const int H = request.image.height, W = request.image.width;
    const Image resized = preprocess::sam2_resize(request.image);
    record(rec, "sam.input_u8", image_u8({resized}));
    const sam2::FrameFeatures features = sam2.encode(preprocess::sam2_normalize(resized), rec);
    for (int64_t s = 0; s < num_seg; ++s) {
      const sam2::DecoderOutput d =
          sam2.decode_conditioning(features, seg_embeds.f32() + s * seg_embeds.size(1), s == 0 ? rec : nullptr);
      const Tensor logits = preprocess::postprocess_mask_logits(d.low_res_mask, H, W);
      const Tensor mask = preprocess::threshold_mask(logits);
      const std::string name = "seg" + std::to_string(s);
      record(rec, name + ".mask_logits_lowres", d.low_res_mask.view({1, d.low_res_mask.size(0), d.low_res_mask.size(1)}));
      record(rec, name + ".mask_logits", logits.view({1, H, W}));
      record(rec, name + ".mask", stack({mask}, DType::BOOL));
      out.masks[static_cast<size_t>(s)].push_back(to_mask(mask));
      out.scores[static_cast<size_t>(s)] = d.iou;
    }
    return out;
  }

  // Video: conditioning frames are the frames the LLM saw, then propagation over every frame.
  const int H = request.video->height(), W = request.video->width();
  std::vector<std::vector<Tensor>> dumped_low(static_cast<size_t>(num_seg)), dumped_logits(dumped_low.size()),
      dumped_masks(dumped_low.size());
  Video* video = request.video;
  int64_t done = 0;
  tracker.track(
      sam2, seg_embeds, static_cast<int>(num_frames), conditioning_frames,
      [&](int t) {
        Image frame;
        {
          const profile::Scope timed("video.decode_frame");
          frame = video->frame(t);
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
      rec);
  if (rec) {
    for (int64_t s = 0; s < num_seg; ++s) {
      const std::string name = "seg" + std::to_string(s);
      record(rec, name + ".mask_logits_lowres", stack(dumped_low[static_cast<size_t>(s)], DType::F32));
      record(rec, name + ".mask_logits", stack(dumped_logits[static_cast<size_t>(s)], DType::F32));
      record(rec, name + ".mask", stack(dumped_masks[static_cast<size_t>(s)], DType::BOOL));
    }
  }
  return out;
}

std::vector<std::string> extract_phrases(const std::string& answer) {
  static const std::regex phrase(R"(<p>([\s\S]*?)</p>)");
  std::vector<std::string> out;
  for (auto it = std::sregex_iterator(answer.begin(), answer.end(), phrase); it != std::sregex_iterator(); ++it)
    out.push_back(strip((*it)[1].str()));
  return out;
}

std::string clean_caption(const std::string& answer) {
  static const std::regex tag(R"(<[^>]*>)");
  std::string s = std::regex_replace(answer, tag, "");
  for (size_t p; (p = s.find("[SEG]")) != std::string::npos;) s.erase(p, 5);
  std::string collapsed;
  bool space = false;
  for (char ch : s) {
    const bool ws = ch == ' ' || ch == '\n' || ch == '\t' || ch == '\r';
    if (ws) {
      space = !collapsed.empty();
      continue;
    }
    if (space) collapsed.push_back(' ');
    space = false;
    collapsed.push_back(ch);
  }
  while (!collapsed.empty() && collapsed.front() == '\'') collapsed.erase(collapsed.begin());
  while (!collapsed.empty() && collapsed.back() == '\'') collapsed.pop_back();
  return collapsed;
}

}  // namespace sa2va
