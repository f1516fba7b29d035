// The HTTP API's request side on any body, as `sa2va serve` reads one: the nesting check and the
// JSON parse, then every reader of a body (src/server/api.h): an OpenAI chat completions call
// (messages, roles, image_url / video_url media as data URIs or bare base64, the sa2va extension's
// visual prompts, mask format and generation overrides) made into a request, which the model's
// prompt builder then checks as a session turn does; media_from_body (an image, a video file, a
// list of frames); the generation settings; visual prompts at the medium's size; the mask format; a
// session turn's check of its text with the medium (first and later turn); and the mask encoders (COCO
// RLE, PNG, polygons) on the prompts' masks. /v1/segment's checks of its expressions and prompt
// template live in the server itself and are not run here. The model is the tiny one the folder
// $SA2VA_FUZZ_MODEL names, else a tiny random-weight one written at start. Local files are never
// read (no files folder), and the limits are small so that an input decodes quickly. Everything
// either works or throws sa2va::Error (HttpError for a client's mistake).
#include "fuzz_util.h"
#include "sa2va/sa2va.h"
#include "server/api.h"

namespace {
std::unique_ptr<sa2va::Model> model;

sa2va::server::Limits fuzz_limits() {
  sa2va::server::Limits limits;
  limits.max_pixels = 1 << 16;
  limits.max_frames = 8;
  limits.max_tokens = 16;
  limits.max_mask_prompts = 4;
  limits.max_media_bytes = size_t{16} << 20;
  return limits;  // files_dir stays empty: local paths are refused
}

// Each format of each mask, as a prediction's masks are written back.
void encode_masks(const std::vector<sa2va::Mask>& masks) {
  for (const sa2va::Mask& mask : masks)
    for (const char* format : {"rle", "png", "polygon"}) (void)sa2va::server::mask_json(mask, format);
}
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  using namespace sa2va;
  const std::string dir = fuzz::tiny_model_dir();
  model = Model::load(dir);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sa2va;
  using server::json;
  const std::string text(reinterpret_cast<const char*>(data), size);
  const server::Limits limits = fuzz_limits();
  json body;
  try {
    server::check_nesting(text);
    body = json::parse(text, nullptr, false);
  } catch (const Error&) {
    return 0;
  }
  if (body.is_discarded() || !body.is_object()) return 0;

  // POST /v1/chat/completions
  try {
    server::ChatCall call = server::chat_call_from_body(body, *model, limits);
    (void)model->conversation_after(call.request, "");
    encode_masks(call.request.mask_prompts);
  } catch (const Error&) {
  }
  // POST /v1/segment and /v1/sessions (media), a session turn (generation, visual prompts)
  std::unique_ptr<server::Media> media;
  try {
    media = server::media_from_body(body, limits);
    if (media->frames() > 0) (void)media->frame(media->frames() - 1);
    (void)media->bytes();
  } catch (const Error&) {
    media.reset();
  }
  try {
    Request request;
    server::apply_generation(body, limits, request);
    server::apply_generation_overrides(body, limits, request);
  } catch (const Error&) {
  }
  std::vector<Mask> mask_prompts;
  try {
    if (const auto prompts = body.find("mask_prompts"); prompts != body.end()) {
      const int width = media ? media->width() : 32, height = media ? media->height() : 24;
      mask_prompts = server::mask_prompts_from_json(*prompts, width, height, limits);
      encode_masks(mask_prompts);
    }
  } catch (const Error&) {
  }
  try {
    if (const auto format = body.find("format"); format != body.end() && format->is_string())
      server::check_mask_format(format->get<std::string>());
  } catch (const Error&) {
  }
  // A session turn's own check: the text with the session's medium, as a first and as a later turn.
  if (const auto text_field = body.find("text"); media && text_field != body.end() && text_field->is_string()) {
    for (const char* past : {"", "<image>"}) {
      try {
        Request turn;
        turn.text = text_field->get<std::string>();
        turn.past_text = past;
        if (media->is_video()) turn.video = media->video.get();
        else turn.image = media->image;
        if (!media->is_video() && *past == '\0') turn.mask_prompts = mask_prompts;
        (void)model->conversation_after(turn, "");
      } catch (const Error&) {
      }
    }
  }
  return 0;
}
