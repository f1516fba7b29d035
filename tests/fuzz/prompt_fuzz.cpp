// The prompt builder and answer parsing with any text and any past_text: the model's own
// conversation_after (request checks, image/video/region token strings, the template) on a tiny
// model (the folder $SA2VA_FUZZ_MODEL names, else a tiny random-weight one written at start), then the tokenizer and the image-feature splice on the result; the three
// templates' prompts and stop words; the grounded-caption helpers. Everything either works or
// throws sa2va::Error.
// Input: text, past_text, answer, then control bytes (image size, regions, video frames, tiles).
#include <filesystem>

#include "fuzz_util.h"
#include "models/llm.h"
#include "sa2va/sa2va.h"
#include "text/template.h"
#include "text/tokenizer.h"

namespace {
std::unique_ptr<sa2va::Model> model;
std::unique_ptr<sa2va::Tokenizer> tokenizer;
int32_t img_context_id = -1;
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  using namespace sa2va;
  const std::string dir = fuzz::tiny_model_dir();
  model = Model::load(dir);
  tokenizer = Tokenizer::load(dir);
  img_context_id = tokenizer->token_id(kImageContext);
  if (img_context_id < 0) std::abort();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sa2va;
  const auto parts = fuzz::split_parts(data, size, 4);
  Request request;
  request.text = parts[0];
  if (parts.size() > 1) request.past_text = parts[1];
  const std::string answer = parts.size() > 2 ? parts[2] : "It is [SEG].";
  const std::string control = parts.size() > 3 ? parts[3] : "";
  const auto byte = [&](size_t i) { return i < control.size() ? static_cast<uint8_t>(control[i]) : uint8_t{0}; };

  std::unique_ptr<Video> video;
  const int kind = byte(0) % 3;  // 0 text only, 1 image, 2 video
  if (kind == 1) {
    request.image = Image(1 + byte(1) % 64, 1 + byte(2) % 64);
    request.max_tiles = byte(3) % 42;  // 0 and 41 are refused
    for (int r = 0; r < byte(4) % 4; ++r) {
      Mask mask;
      mask.width = byte(5 + 3 * r) % 40;  // 0 is refused
      mask.height = byte(6 + 3 * r) % 40;
      mask.data.assign(static_cast<size_t>(mask.width) * mask.height, 0);
      for (size_t i = 0; i < mask.data.size(); i += 1 + byte(7 + 3 * r) % 7) mask.data[i] = 1;
      request.mask_prompts.push_back(std::move(mask));
    }
  } else if (kind == 2) {
    std::vector<Image> frames(1 + byte(1) % 8, Image(1 + byte(2) % 16, 1 + byte(3) % 16));
    video = Video::from_frames(std::move(frames));
    request.video = video.get();
    request.video_llm_frames = byte(4) % 7;  // 0 is refused
    request.video_uniform_frames = byte(5) & 1;
  }

  std::string prompt;
  try {
    prompt = model->conversation_after(request, answer);
  } catch (const Error&) {
    prompt.clear();
  }
  if (!prompt.empty()) {
    try {
      const std::vector<int32_t> ids = tokenizer->encode(prompt);
      (void)tokenizer->decode(ids);
      // The splice accepts exactly as many feature rows as the prompt has image-context tokens.
      const int64_t slots = std::count(ids.begin(), ids.end(), img_context_id);
      Tensor embeds = Tensor::zeros({static_cast<int64_t>(ids.size()), 2});
      (void)splice_image_embeddings(embeds, ids, img_context_id, Tensor::zeros({slots, 2}));
      bool refused = false;
      try {
        (void)splice_image_embeddings(embeds, ids, img_context_id, Tensor::zeros({slots + 1, 2}));
      } catch (const Error&) {
        refused = true;
      }
      if (!refused) std::abort();
    } catch (const Error&) {  // invalid UTF-8 in the text
    }
  }

  for (const char* name : {"qwen_chat", "phi3_chat", "internlm2_chat"}) {
    const ChatTemplate& chat = chat_template(name);
    (void)build_prompt(chat, request.text, image_token_string(1, 4) + region_prompt_string({0, 3}), request.past_text);
    (void)replace_image_placeholder(request.text, "");
    (void)ends_with_stop_word(answer, chat);
  }
  (void)extract_phrases(answer);
  (void)clean_caption(answer);
  return 0;
}
