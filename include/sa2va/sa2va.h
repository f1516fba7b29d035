// sa2va.cpp — Sa2VA (dense grounded understanding of images and videos) in C++.
//
// This header is the whole public API and its manual.
//
//   #include <sa2va/sa2va.h>
//
//   auto model = sa2va::Model::load("Sa2VA-1B");             // once: weights are shared, read-only
//   sa2va::Request req;
//   req.image = sa2va::load_image("girl.jpg");
//   req.text = "<image>Please segment the girl in the yellow dress.";
//   sa2va::Prediction p = model->predict(req);                // thread-safe; each call has its own state
//   p.text;          // "Sure, [SEG].<|im_end|>"
//   p.masks[0][0];   // mask of the first [SEG] on frame 0 (the image), original size
//
// The contract is that of upstream Sa2VA's `predict_forward(image | video, text, past_text,
// mask_prompts)`: `text` holds `<image>` where the visual tokens go (first turn only), every
// `[SEG]` in the answer becomes one mask per frame, `<p>phrase</p> [SEG]` answers (grounded
// captions) pair phrase i with mask i, and `past_text` carries a conversation to the next turn.
//
// Model folders are the official Hugging Face ones (config.json, *.safetensors, tokenizer
// files) of Sa2VA-1B / 4B / 8B and Sa2VA-InternVL3-2B / 8B / 14B, used as they are. Errors
// (unreadable or corrupt files, a folder that is not a Sa2VA checkpoint, bad requests) are thrown
// as sa2va::Error with a one-line message; an exception thrown by a Request's callback comes out of
// predict() as it was thrown, and the model stays usable.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace sa2va {

// Every error this library reports.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// Thrown by predict() when Request::should_stop asked it to stop.
class Cancelled : public Error {
 public:
  Cancelled() : Error("the request was cancelled") {}
};

// 8-bit RGB image, rows top to bottom, pixels R,G,B interleaved (HWC).
struct Image {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;

  Image() = default;
  Image(int w, int h) : width(w), height(h), rgb(static_cast<size_t>(w) * static_cast<size_t>(h) * 3) {}
  uint8_t* row(int y) { return rgb.data() + static_cast<size_t>(y) * static_cast<size_t>(width) * 3; }
  const uint8_t* row(int y) const { return rgb.data() + static_cast<size_t>(y) * static_cast<size_t>(width) * 3; }
};

// A binary mask (0 or 1 per pixel), row-major, at the size of the image it belongs to.
struct Mask {
  int width = 0, height = 0;
  std::vector<uint8_t> data;
  bool operator==(const Mask&) const = default;
};

// Decodes a JPEG or PNG file to RGB exactly as PIL's Image.open(path).convert('RGB') does.
// Images above max_pixels (or wider/taller than 65535) are refused with an Error.
Image load_image(const std::string& path, int64_t max_pixels = 100'000'000);

// A video: a video file (mp4, webm, mkv, avi, ... through FFmpeg) or a folder of frames
// (jpg/png, sorted by file name). Frames are decoded on demand, so long videos use bounded memory.
// Frames may differ in size (as newer upstream allows): each is processed at its own size and the
// masks come out at the first frame's size, width() x height().
class Video {
 public:
  // A frame above max_pixels (100,000,000 without it) or wider/taller than 65535 is an Error: at open
  // for a size the file declares and for the first frame, when it is decoded for the others; the
  // codec refuses far larger ones before allocating them.
  static std::unique_ptr<Video> open(const std::string& path_or_folder);
  static std::unique_ptr<Video> open(const std::string& path_or_folder, int64_t max_pixels);
  // A video of frames already in memory (any sizes, as above). Throws Error when `frames` is empty.
  static std::unique_ptr<Video> from_frames(std::vector<Image> frames);
  // Requests may share a video: one from open() decodes for one of them at a time. A Video of your
  // own that is shared must allow frame() from several threads; each frame it returns must hold
  // width x height x 3 bytes (anything else is an Error naming the frame).
  virtual ~Video() = default;
  virtual int width() const = 0;
  virtual int height() const = 0;
  virtual int64_t frame_count() const = 0;
  virtual double fps() const = 0;  // 0 for frame folders
  virtual Image frame(int64_t index) = 0;
};

enum class Precision {
  F32,   // f32 weights and math: the conformance mode
  BF16,  // bf16 weights and attention operands, f32 accumulation and softmax (as upstream in bf16): the default
};

// How the language model's linear layers are stored and multiplied. Quantized formats hold
// blocks of 32 weights with one f16 scale each (8-bit: 34 bytes per block, 4-bit: 18).
enum class WeightFormat : uint8_t {
  F32,   // f32 weights (what Precision::F32 uses for every matrix)
  BF16,  // bf16 weights: the checkpoint's own format; the default
  Q8_0,  // 8-bit blocks, quantized at load
  Q4_0,  // 4-bit blocks, quantized at load
};

struct ModelOptions {
  Precision precision = Precision::BF16;
  // Format of the language model's linear layers: BF16 follows the precision (f32 in F32 mode);
  // Q8_0 / Q4_0 quantize them at load in either mode. Other components follow the precision.
  WeightFormat weights = WeightFormat::BF16;
  std::string device = "cpu";  // "cpu" ("cuda[:N]" where the library is built with CUDA)
  int threads = 0;             // threads of this model's own pool; 0 = as many as the process default (all cores)
};

struct GenerationOptions {
  int max_new_tokens = 2048;  // upstream default
  float temperature = 0.f;    // 0 = greedy (upstream); > 0 samples (1/temperature must be a float: >= ~3e-39)
  int top_k = 0;              // 0 = off
  float top_p = 1.f;          // 1 = off
  uint64_t seed = 0;          // sampling seed
  // Strings that end the answer (OpenAI's "stop"): generation ends once the answer contains one;
  // Prediction::content ends before it and on_text never hands it (or its start) over; text and
  // past_text keep what was generated (caption and phrases are read from text), and a [SEG] generated
  // before the end keeps its mask. Non-empty.
  std::vector<std::string> stop;
};

struct Prediction;

// Vision work on one image or video, kept across the turns of a conversation about it (a chat
// session): give every turn's Request the same cache together with the same image or video, and
// the vision encoder and SAM2's image encoder run on the first turn only (for a video, SAM2's
// features of as many frames as fit in max_bytes; the others are computed again). A cache belongs
// to the model and the medium of the first request that uses it: another model, another image (its
// size or pixels) or another video (its size or frame count) is an Error. Thread-safe.
class VisualCache {
 public:
  static std::shared_ptr<VisualCache> create(size_t max_bytes = size_t{1} << 30);
  virtual ~VisualCache() = default;
  virtual size_t bytes() const = 0;  // memory held
};

struct Request {
  // At most one of image / video. Neither = text-only chat.
  Image image;                       // used when width > 0
  Video* video = nullptr;            // not owned
  // The user's turn; put "<image>" (once) where the visual tokens go: on the first turn it is added in
  // front when missing; an image or video first brought on a later turn needs it.
  std::string text;
  std::string past_text;             // Prediction::past_text of the previous turn ("" for the first)
  std::vector<Mask> mask_prompts;    // visual prompts: one region per mask, any size (images only),
                                     // given with the first turn; a later turn passes the same again
  GenerationOptions generation;
  int max_tiles = 12;                // dynamic tiling of images (upstream: 12)
  int video_llm_frames = 5;          // video frames the language model sees (upstream: the first 5);
                                     // with the text, their tokens (256 each) must fit the context of a
                                     // model without RoPE scaling (Qwen2: 32768 tokens, under 128 frames)
  bool video_uniform_frames = false; // sample those frames uniformly over the video instead
  // Teacher forcing: when set, this answer is used as if the model had generated it (the
  // template's end-of-turn suffix is appended when missing). Useful to check masks.
  std::string forced_answer;
  // Video only: when set, masks are handed over frame by frame instead of being kept in
  // Prediction::masks (bounded memory for long videos). Called in frame order per [SEG].
  std::function<void(int seg_index, int64_t frame_index, const Mask& mask)> on_mask;
  // Progress of the mask propagation: frames done, frames in total.
  std::function<void(int64_t done, int64_t total)> on_progress;
  // Called once the answer is known, before any mask is computed, with the prediction so far:
  // text, phrases, caption, past_text and generated_ids are final; masks and scores are not yet.
  // Lets a caller show the answer while a long video is still being segmented.
  std::function<void(const Prediction& answer)> on_answer;
  // Streaming text: called with each new piece of the answer as tokens are generated (whole UTF-8
  // characters; concatenated, the pieces are Prediction::text but for surrounding whitespace).
  // Not called for a forced answer.
  std::function<void(const std::string& piece)> on_text;
  // Polled between generated tokens, video frames and stages: returning true stops the request,
  // and predict() throws sa2va::Cancelled (a client that went away, a time limit).
  std::function<bool()> should_stop;
  // See VisualCache: null = nothing kept.
  std::shared_ptr<VisualCache> cache;
};

struct Prediction {
  std::string text;                         // the answer, special tokens kept, e.g. "Sure, [SEG].<|im_end|>"
  std::vector<std::vector<Mask>> masks;     // [seg][frame]: one mask per [SEG] per frame (1 frame for images)
  std::vector<float> scores;                // per [SEG]: SAM2's predicted IoU of the chosen mask (images; 0 for videos)
  std::vector<std::string> phrases;         // per [SEG]: phrase i of extract_phrases(text) ("" if fewer)
  std::string caption;                      // the answer without tags and [SEG] (grounded captions)
  std::string past_text;                    // pass as Request::past_text for the next turn
  std::vector<int32_t> generated_ids;       // token ids of the answer
  std::string content;                      // text without the end-of-turn marker at its end ("Sure, [SEG]."),
                                            // or before the first GenerationOptions::stop string in it
  std::string finish_reason;                // "stop" (end of turn, or a forced answer) or "length"
                                            // (max_new_tokens, or the context of a model without RoPE scaling)
  int64_t prompt_tokens = 0;                // tokens the model read before answering (past_text and visual tokens included)
};

class Model {
 public:
  // Loads a model folder (config.json, safetensors, tokenizer). Throws Error naming the file
  // and the problem when the folder is not a usable Sa2VA checkpoint.
  static std::unique_ptr<Model> load(const std::string& model_dir, const ModelOptions& options = {});
  virtual ~Model() = default;

  // Answers one turn. Safe to call from several threads at once.
  virtual Prediction predict(const Request& request) const = 0;

  virtual std::string template_name() const = 0;  // "qwen_chat", "phi3_chat", "internlm2_chat"

  // The past_text the next turn would get had the model answered `answer` to `request` (the
  // template's end-of-turn marker is appended when missing): rebuilds a conversation from a chat
  // history (earlier user turns with their media, and the answers given) without running the model.
  virtual std::string conversation_after(const Request& request, const std::string& answer) const = 0;
};

// Built-in profiler (process-wide, off by default): wall time and calls per stage ("vision.internvit",
// "llm.prefill", "llm.decode_step", "sam2.image_encoder", "sam2.memory_attention", ...), summed
// over every predict() since it was enabled. The report is a table, one stage per line.
void set_profiling(bool enabled);
std::string profiling_report();

// Grounded-caption helpers: exactly what upstream's GCG evaluation does to an answer. Both first
// drop every "<s>" and every '\n' (no space put in), replace "  " by " " in one pass, and keep only
// the text after the last "ASSISTANT: ".
// extract_phrases: the <p>…</p> spans (shortest match, left to right), each trimmed of whitespace.
// clean_caption: every <…> removed, then every [SEG], whitespace runs made one space, ' stripped
// from both ends, then whitespace trimmed. Whitespace is Python's (Unicode spaces included).
std::vector<std::string> extract_phrases(const std::string& answer);
std::string clean_caption(const std::string& answer);

}  // namespace sa2va
