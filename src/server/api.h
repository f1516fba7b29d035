// The HTTP API's JSON, apart from the transport (docs/server.md): what a body may hold and how
// it becomes a sa2va::Request (media from data URIs or allowed local files, an OpenAI messages
// list rebuilt into past_text, visual prompts, generation limits), and how a prediction is written
// back (an OpenAI chat completion with a `sa2va` object, masks as COCO RLE, PNG or polygons).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "sa2va/sa2va.h"

namespace sa2va::server {

using json = nlohmann::json;

// An error answered with an HTTP status and a JSON body {"error": {"message", "type", "code"}}.
struct HttpError : Error {
  HttpError(int status, const std::string& message) : Error(message), status(status) {}
  int status;
};
json error_body(int status, const std::string& message);

// What a request may ask for, whatever it says.
struct Limits {
  int64_t max_pixels = 40'000'000;  // per image or frame
  int max_frames = 256;             // frames of a video
  int max_tokens = 2048;            // the default max_tokens; a request asking for more gets 400
  int max_mask_prompts = 64;        // visual prompts of a request
  size_t max_media_bytes = size_t{2} << 30;  // decoded frames sent one by one
  std::string files_dir;            // local media paths are read only under this folder ("" = never)
  // When set, called before an image or frame of a request's media is decoded, with the bytes its
  // pixels will take (from its header): the hold it returns is kept by the Media; it throws to refuse.
  std::function<std::shared_ptr<void>(size_t bytes, const std::string& what)> hold_decoded;
};

// "12.5 MiB": a size in messages (whole MiB would show a 1.4 MiB body as under a 1 MiB limit).
std::string mib(size_t bytes);

std::vector<uint8_t> base64_decode(const std::string& text, const std::string& what);
std::string base64_encode(const uint8_t* data, size_t size);

// The bytes behind a media reference: "data:<mime>;base64,<...>", bare base64, or (when Limits
// allows it) a local path or file:// URL under files_dir. `what` names it in errors.
std::vector<uint8_t> media_bytes(const std::string& reference, const Limits& limits, const std::string& what);

// A video from bytes (written to a private file, decoded on demand), or from decoded frames.
// The holder owns what the Video reads.
struct Media {
  Image image;                   // width > 0 for an image (a chat completion's request takes its pixels)
  std::unique_ptr<Video> video;  // or a video
  std::string video_file;        // the private copy of an uploaded video, removed with the Media
  int64_t max_pixels = 0;        // the limit it was opened under
  size_t decoded_bytes = 0;      // pixels held in memory (an uploaded video file is decoded on demand)
  std::shared_ptr<void> held;    // the server's count of these bytes, released with the Media
  std::vector<std::shared_ptr<void>> decoding_holds;  // or the counts Limits::hold_decoded took per picture
  // frame() reads an uploaded video through a decoder of its own, opened on first use: shown frames
  // (jumping back and forth) do not send the predictions' decoder back to the start of the file.
  mutable std::mutex viewer_mutex;
  mutable std::unique_ptr<Video> viewer;
  ~Media();
  bool is_video() const { return video != nullptr; }
  int width() const { return is_video() ? video->width() : image.width; }
  int height() const { return is_video() ? video->height() : image.height; }
  int64_t frames() const { return is_video() ? video->frame_count() : 1; }
  Image frame(int64_t t) const;
  size_t bytes() const;  // memory held (decoded frames), for session limits
};

// {"image": ref} | {"video": ref} | {"frames": [ref, ...]} of a body (sessions, /v1/segment).
std::unique_ptr<Media> media_from_body(const json& body, const Limits& limits);

// Visual prompts: [{"box": [x, y, w, h]} | {"rle": {"size": [h, w], "counts": str}} | {"png": ref}]
// at the medium's size (boxes in its pixels).
std::vector<Mask> mask_prompts_from_json(const json& list, int width, int height, const Limits& limits);

// Generation settings of a body: max_tokens (or max_completion_tokens), temperature, top_p,
// top_k, seed; answer (teacher forcing).
void apply_generation(const json& body, const Limits& limits, Request& request);
// The same keys where present, over what the request has (no defaults).
void apply_generation_overrides(const json& body, const Limits& limits, Request& request);
// Rejects bodies nested deeper than `max_depth` (copying or destroying such a document would
// recurse that deep).
void check_nesting(const std::string& text, int max_depth = 64);

// An OpenAI chat completions body made into a request: the media of the first user message
// (one image_url = an image; several = video frames; a video_url = a video), earlier turns
// rebuilt into past_text, the last user message as the turn to answer.
struct ChatCall {
  Request request;
  std::unique_ptr<Media> media;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage: a last chunk with the usage
  std::string mask_format = "rle";
};
ChatCall chat_call_from_body(const json& body, const Model& model, const Limits& limits);

// Masks of a prediction: per [SEG] {index, phrase, score, frames: [{frame, bbox, area, <format>}]},
// format "rle" ({"size", "counts"}), "png" (base64 PNG) or "polygon" (COCO polygons).
json mask_json(const Mask& mask, const std::string& format);
json masks_json(const Prediction& p, const std::string& format);
void check_mask_format(const std::string& format);

// The sa2va object added to a chat completion: text (special tokens kept), caption, phrases, masks.
json sa2va_object(const Prediction& p, const std::string& format);

}  // namespace sa2va::server
