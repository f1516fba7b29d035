#include "server/api.h"

#include <limits>

#include "io/json_number.h"

#include <unistd.h>

#include <algorithm>
#include <random>
#include <cmath>
#include <cstdio>
#include <array>
#include <filesystem>
#include <fstream>

#include "io/image.h"
#include "io/mask_io.h"

namespace sa2va::server {
namespace fs = std::filesystem;

namespace {

[[noreturn]] void bad_request(const std::string& message) { throw HttpError(400, message); }

const json& field(const json& object, const char* key) {
  static const json kNull;
  if (!object.is_object()) return kNull;
  const auto it = object.find(key);
  return it == object.end() ? kNull : *it;
}

std::string string_field(const json& value, const std::string& name) {
  if (!value.is_string()) bad_request(name + ": expected a string");
  return value.get<std::string>();
}

int64_t integer_field(const json& value, const std::string& name) {
  const auto i = json_integer(value);
  if (!i) bad_request(name + ": expected a 64-bit integer");
  return *i;
}

double number_field(const json& value, const std::string& name) {
  if (!value.is_number() || !std::isfinite(value.get<double>())) bad_request(name + ": expected a finite number");
  return value.get<double>();
}

// `holds`, when given, receives the count Limits::hold_decoded takes of the pixels before they are
// decoded (so that requests decoding at once are bounded together, not only once decoded).
Image decode_image_reference(const std::string& reference, const Limits& limits, const std::string& what,
                             std::vector<std::shared_ptr<void>>* holds = nullptr) {
  const std::vector<uint8_t> bytes = media_bytes(reference, limits, what);
  std::function<void(int, int)> before_pixels;
  if (holds && limits.hold_decoded)
    before_pixels = [&](int width, int height) {
      holds->push_back(limits.hold_decoded(static_cast<size_t>(width) * static_cast<size_t>(height) * 3, what));
    };
  try {
    return decode_image(bytes.data(), bytes.size(), what, limits.max_pixels, before_pixels);
  } catch (const HttpError&) {
    throw;
  } catch (const Error& e) {
    bad_request(e.what());
  }
}

// Where uploaded videos are kept: a private file each, which FFmpeg then reads like any other.
const std::string& upload_prefix() {
  static const std::string prefix = (fs::temp_directory_path() / "sa2va-upload-").string();
  return prefix;
}

std::string write_private_file(const std::vector<uint8_t>& bytes) {
  std::string path = upload_prefix() + "XXXXXX";
  const int fd = mkstemp(path.data());
  if (fd < 0) throw HttpError(500, "cannot create a temporary file for the uploaded video");
  size_t written = 0;
  while (written < bytes.size()) {
    const ssize_t n = write(fd, bytes.data() + written, bytes.size() - written);
    if (n <= 0) {
      close(fd);
      std::remove(path.c_str());
      throw HttpError(500, "cannot write the uploaded video to a temporary file");
    }
    written += static_cast<size_t>(n);
  }
  close(fd);
  return path;
}

std::unique_ptr<Media> video_media(std::unique_ptr<Video> video, std::string file, const Limits& limits) {
  auto media = std::make_unique<Media>();
  media->video = std::move(video);
  media->video_file = std::move(file);
  media->max_pixels = limits.max_pixels;
  if (media->video->frame_count() > limits.max_frames)
    bad_request("video: " + std::to_string(media->video->frame_count()) + " frames exceed this server's limit of " +
                std::to_string(limits.max_frames));
  // The frames' size needs no check here: a file is opened under limits.max_pixels, and frame lists
  // are decoded under it one by one.
  return media;
}

std::unique_ptr<Media> video_from_reference(const std::string& reference, const Limits& limits) {
  const std::vector<uint8_t> bytes = media_bytes(reference, limits, "video");
  std::string file = write_private_file(bytes);
  try {
    return video_media(Video::open(file, limits.max_pixels), file, limits);
  } catch (const HttpError&) {
    std::remove(file.c_str());
    throw;
  } catch (const Error& e) {
    std::remove(file.c_str());
    bad_request("video: " + std::string(e.what()));  // error_body names the file as the upload
  }
}

std::unique_ptr<Media> frames_media(const std::vector<std::string>& references, const Limits& limits) {
  if (references.empty()) bad_request("frames: no frames");
  if (references.size() > static_cast<size_t>(limits.max_frames))
    bad_request("frames: " + std::to_string(references.size()) + " frames exceed this server's limit of " +
                std::to_string(limits.max_frames));
  std::vector<Image> frames;
  std::vector<std::shared_ptr<void>> holds;
  size_t decoded = 0;
  for (size_t i = 0; i < references.size(); ++i) {
    frames.push_back(decode_image_reference(references[i], limits, "frames[" + std::to_string(i) + "]", &holds));
    decoded += frames.back().rgb.size();
    if (decoded > limits.max_media_bytes)
      bad_request("frames: the decoded frames exceed this server's limit of " +
                  mib(limits.max_media_bytes));
  }
  auto media = video_media(Video::from_frames(std::move(frames)), "", limits);
  media->decoded_bytes = decoded;
  media->decoding_holds = std::move(holds);
  return media;
}

std::unique_ptr<Media> image_media(const std::string& reference, const Limits& limits) {
  auto media = std::make_unique<Media>();
  media->image = decode_image_reference(reference, limits, "image", &media->decoding_holds);
  media->decoded_bytes = media->image.rgb.size();
  return media;
}

}  // namespace

std::string mib(size_t bytes) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  return text;
}

json error_body(int status, const std::string& text) {
  // An uploaded video is read from a private temporary file: its name means nothing to the client
  // (and tells it where the server keeps files), whichever stage failed on it.
  std::string message = text;
  const std::string& prefix = upload_prefix();
  for (size_t at = message.find(prefix); at != std::string::npos; at = message.find(prefix, at))
    message.replace(at, std::min(prefix.size() + 6, message.size() - at), "the uploaded video");
  const char* type = status == 401   ? "authentication_error"
                     : status == 404 ? "not_found_error"
                     : status == 413 ? "request_too_large"
                     : status == 429 ? "rate_limit_error"
                     : status < 500  ? "invalid_request_error"
                                     : "server_error";
  return {{"error", {{"message", message}, {"type", type}, {"code", status}}}};
}

void check_nesting(const std::string& text, int max_depth) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (const char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) bad_request("the body nests deeper than " + std::to_string(max_depth) + " levels");
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
}

// ---- media ------------------------------------------------------------------------------------------

std::vector<uint8_t> base64_decode(const std::string& text, const std::string& what) {
  static const std::array<int8_t, 256> kValue = [] {
    std::array<int8_t, 256> v{};
    v.fill(-1);
    const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < alphabet.size(); ++i) v[static_cast<unsigned char>(alphabet[i])] = static_cast<int8_t>(i);
    v['-'] = 62;  // the URL-safe alphabet too
    v['_'] = 63;
    return v;
  }();
  std::vector<uint8_t> out;
  out.reserve(text.size() / 4 * 3);
  uint32_t bits = 0;
  int count = 0;
  size_t padding = 0;
  for (const char c : text) {
    if (c == '=') {
      ++padding;
      continue;
    }
    if (c == '\n' || c == '\r' || c == ' ' || c == '\t') continue;
    const int8_t v = kValue[static_cast<unsigned char>(c)];
    if (v < 0 || padding > 0) bad_request(what + ": invalid base64");
    bits = (bits << 6) | static_cast<uint32_t>(v);
    if (++count == 4) {
      out.push_back(static_cast<uint8_t>(bits >> 16));
      out.push_back(static_cast<uint8_t>(bits >> 8));
      out.push_back(static_cast<uint8_t>(bits));
      bits = 0;
      count = 0;
    }
  }
  if (count == 1 || padding > 2) bad_request(what + ": invalid base64 (truncated)");
  if (count == 2) out.push_back(static_cast<uint8_t>(bits >> 4));
  if (count == 3) {
    out.push_back(static_cast<uint8_t>(bits >> 10));
    out.push_back(static_cast<uint8_t>(bits >> 2));
  }
  return out;
}

std::string base64_encode(const uint8_t* data, size_t size) {
  static const char* kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((size + 2) / 3 * 4);
  for (size_t i = 0; i < size; i += 3) {
    const uint32_t b = (uint32_t{data[i]} << 16) | (i + 1 < size ? uint32_t{data[i + 1]} << 8 : 0) |
                       (i + 2 < size ? uint32_t{data[i + 2]} : 0);
    out += kAlphabet[(b >> 18) & 63];
    out += kAlphabet[(b >> 12) & 63];
    out += i + 1 < size ? kAlphabet[(b >> 6) & 63] : '=';
    out += i + 2 < size ? kAlphabet[b & 63] : '=';
  }
  return out;
}

std::vector<uint8_t> media_bytes(const std::string& reference, const Limits& limits, const std::string& what) {
  if (reference.empty()) bad_request(what + ": empty");
  if (reference.rfind("data:", 0) == 0) {
    const size_t comma = reference.find(',');
    if (comma == std::string::npos) bad_request(what + ": a data URI without ','");
    if (comma < 12 || reference.compare(comma - 7, 7, ";base64") != 0)
      bad_request(what + ": only base64 data URIs are accepted");
    return base64_decode(reference.substr(comma + 1), what);
  }
  if (reference.rfind("http://", 0) == 0 || reference.rfind("https://", 0) == 0)
    bad_request(what + ": remote URLs are not fetched; send the bytes as a data URI");
  // A path names a file (it has a '.' or a second '/'... that base64 lacks or rarely has): base64 of
  // a JPEG starts with "/9j/", so a leading '/' alone does not make a path.
  // A name under the allowed folder is a path whatever its characters.
  const bool base64_alphabet_only = reference.find_first_not_of(
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_\r\n \t") == std::string::npos;
  const std::string root_prefix = limits.files_dir.empty() ? "" : fs::path(limits.files_dir).lexically_normal().string();
  const bool under_root = !root_prefix.empty() && root_prefix[0] == '/' && reference.size() > root_prefix.size() &&
                          reference.compare(0, root_prefix.size(), root_prefix) == 0 &&
                          (root_prefix.back() == '/' || reference[root_prefix.size()] == '/');
  const bool looks_like_path = reference.rfind("file://", 0) == 0 || under_root ||
                               ((reference[0] == '/' || reference[0] == '.') && !base64_alphabet_only);
  if (!looks_like_path) {
    if (!base64_alphabet_only)
      bad_request(what + ": neither a data URI nor base64 (a file is named by a path that starts with '/', './' or "
                         "file://, readable when the server allows its folder)");
    return base64_decode(reference, what);
  }
  if (limits.files_dir.empty())
    throw HttpError(403, what + ": local files are not readable through this server (start it with --allow-files DIR)");
  // The file system ends a name at a NUL: a path holding one would open a shorter one.
  if (reference.find('\0') != std::string::npos) bad_request(what + ": a path holds a NUL character");
  // Relative paths are taken under the allowed folder, not the server's working directory.
  fs::path named = reference.rfind("file://", 0) == 0 ? fs::path(reference.substr(7)) : fs::path(reference);
  if (named.is_relative()) named = fs::path(limits.files_dir) / named;
  std::error_code ec;
  const fs::path path = fs::weakly_canonical(named, ec);
  if (ec) bad_request(what + ": cannot read " + reference + " (" + ec.message() + ")");
  const fs::path root = fs::weakly_canonical(limits.files_dir, ec);
  if (ec) throw HttpError(500, "the allowed folder cannot be read (" + ec.message() + ")");
  const auto [root_end, path_it] = std::mismatch(root.begin(), root.end(), path.begin(), path.end());
  if (root_end != root.end()) throw HttpError(403, what + ": " + reference + " is outside the allowed folder");
  if (!fs::is_regular_file(path, ec)) bad_request(what + ": " + reference + " is not a file");
  std::ifstream file(path, std::ios::binary);
  if (!file) bad_request(what + ": cannot read " + reference);
  std::vector<uint8_t> bytes;
  try {
    bytes.assign(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
  } catch (const std::exception& e) {
    bad_request(what + ": cannot read " + reference + " (" + e.what() + ")");
  }
  return bytes;
}

Media::~Media() {
  viewer.reset();
  video.reset();
  if (!video_file.empty()) std::remove(video_file.c_str());
}

Image Media::frame(int64_t t) const {
  if (t < 0 || t >= frames()) throw HttpError(404, "frame " + std::to_string(t) + " does not exist");
  if (!is_video()) return image;
  if (video_file.empty()) return video->frame(t);  // frames in memory
  std::lock_guard<std::mutex> lock(viewer_mutex);
  if (!viewer) viewer = Video::open(video_file, max_pixels);
  return viewer->frame(t);
}

size_t Media::bytes() const { return decoded_bytes; }

std::unique_ptr<Media> media_from_body(const json& body, const Limits& limits) {
  const int given = (body.contains("image") ? 1 : 0) + (body.contains("video") ? 1 : 0) + (body.contains("frames") ? 1 : 0);
  if (given != 1) bad_request("give exactly one of \"image\", \"video\" or \"frames\"");
  if (body.contains("image")) return image_media(string_field(body["image"], "image"), limits);
  if (body.contains("video")) return video_from_reference(string_field(body["video"], "video"), limits);
  const json& frames = body["frames"];
  if (!frames.is_array()) bad_request("frames: expected an array of images");
  std::vector<std::string> references;
  for (size_t i = 0; i < frames.size(); ++i) references.push_back(string_field(frames[i], "frames[" + std::to_string(i) + "]"));
  return frames_media(references, limits);
}

std::vector<Mask> mask_prompts_from_json(const json& list, int width, int height, const Limits& limits) {
  std::vector<Mask> masks;
  if (list.is_null()) return masks;
  if (!list.is_array()) bad_request("mask_prompts: expected an array");
  if (list.size() > static_cast<size_t>(limits.max_mask_prompts))
    bad_request("mask_prompts: " + std::to_string(list.size()) + " regions exceed this server's limit of " +
                std::to_string(limits.max_mask_prompts));
  for (size_t k = 0; k < list.size(); ++k) {
    const std::string what = "mask_prompts[" + std::to_string(k) + "]";
    const json& item = list[k];
    Mask m;
    if (const json& box = field(item, "box"); !box.is_null()) {
      if (!box.is_array() || box.size() != 4) bad_request(what + ".box: expected [x, y, w, h]");
      const double x = number_field(box[0], what), y = number_field(box[1], what);
      const double w = number_field(box[2], what), h = number_field(box[3], what);
      if (!std::isfinite(x + w) || !std::isfinite(y + h) || w < 0 || h < 0)
        bad_request(what + ".box: expected finite [x, y, w, h] with w, h >= 0");
      m.width = width;
      m.height = height;
      m.data.assign(static_cast<size_t>(width) * height, 0);
      const auto clamped = [](double v, int hi) { return static_cast<int>(std::clamp(v, 0.0, static_cast<double>(hi))); };
      const int x0 = clamped(std::floor(x), width), y0 = clamped(std::floor(y), height);
      const int x1 = clamped(std::ceil(x + w), width), y1 = clamped(std::ceil(y + h), height);
      for (int r = y0; r < y1; ++r) std::fill_n(m.data.begin() + static_cast<std::ptrdiff_t>(r) * width + x0, x1 - x0, 1);
    } else if (const json& rle = field(item, "rle"); !rle.is_null()) {
      const json& size = field(rle, "size");
      if (!size.is_array() || size.size() != 2) bad_request(what + ".rle.size: expected [height, width]");
      CocoRle coco;
      const int64_t rle_height = integer_field(size[0], what + ".rle.size");
      const int64_t rle_width = integer_field(size[1], what + ".rle.size");
      if (rle_height <= 0 || rle_width <= 0 || rle_height > limits.max_pixels || rle_width > limits.max_pixels ||
          rle_height * rle_width > limits.max_pixels)
        bad_request(what + ".rle.size: out of range");
      if (rle_height != height || rle_width != width)  // before decoding it
        bad_request(what + ": a " + std::to_string(rle_width) + "x" + std::to_string(rle_height) + " mask for a " +
                    std::to_string(width) + "x" + std::to_string(height) + " image (width x height)");
      coco.height = static_cast<int>(rle_height);
      coco.width = static_cast<int>(rle_width);
      const json& counts = field(rle, "counts");
      try {
        if (counts.is_string()) coco.counts = rle_counts_from_string(counts.get<std::string>());
        else if (counts.is_array()) {
          for (const json& c : counts) {
            const auto run = json_integer(c, 0, std::numeric_limits<uint32_t>::max());
            if (!run) bad_request(what + ".rle.counts: runs must be integers in 0..2^32-1");
            coco.counts.push_back(static_cast<uint32_t>(*run));
          }
        }
        else bad_request(what + ".rle.counts: expected a string or an array");
        m.data = rle_decode(coco);
      } catch (const HttpError&) {
        throw;
      } catch (const std::exception& e) {
        bad_request(what + ".rle: " + e.what());
      }
      m.width = coco.width;
      m.height = coco.height;
    } else if (const json& png = field(item, "png"); !png.is_null()) {
      const Image image = decode_image_reference(string_field(png, what + ".png"), limits, what + ".png");
      m.width = image.width;
      m.height = image.height;
      m.data.resize(static_cast<size_t>(image.width) * image.height);
      for (size_t i = 0; i < m.data.size(); ++i) m.data[i] = image.rgb[3 * i] > 127 ? 1 : 0;
    } else {
      bad_request(what + ": expected {\"box\": [x, y, w, h]}, {\"rle\": {...}} or {\"png\": ...}");
    }
    // A region drawn on another picture would be stretched over this one: refused.
    if (m.width != width || m.height != height)
      bad_request(what + ": a " + std::to_string(m.width) + "x" + std::to_string(m.height) + " mask for a " +
                  std::to_string(width) + "x" + std::to_string(height) + " image (width x height)");
    masks.push_back(std::move(m));
  }
  return masks;
}

void apply_generation(const json& body, const Limits& limits, Request& request) {
  request.generation.max_new_tokens = limits.max_tokens;
  // As OpenAI's: sampling without a seed differs from call to call (greedy answers do not depend on it).
  static thread_local std::mt19937_64 seeds(std::random_device{}());
  request.generation.seed = seeds();
  apply_generation_overrides(body, limits, request);
}

void apply_generation_overrides(const json& body, const Limits& limits, Request& request) {
  GenerationOptions& g = request.generation;
  for (const char* key : {"max_tokens", "max_completion_tokens", "max_new_tokens"}) {
    const json& v = field(body, key);
    if (v.is_null()) continue;
    const int64_t n = integer_field(v, key);
    if (n < 1) bad_request(std::string(key) + ": must be at least 1");
    if (n > limits.max_tokens)
      bad_request(std::string(key) + ": " + std::to_string(n) + " exceeds this server's limit of " +
                  std::to_string(limits.max_tokens));
    g.max_new_tokens = static_cast<int>(n);
  }
  if (const json& v = field(body, "temperature"); !v.is_null()) {
    const double t = number_field(v, "temperature");
    if (t < 0 || t > 2) bad_request("temperature: must be in [0, 2]");
    g.temperature = static_cast<float>(t);
  }
  if (const json& v = field(body, "top_p"); !v.is_null()) {
    const double p = number_field(v, "top_p");
    if (!(p > 0 && p <= 1)) bad_request("top_p: must be in (0, 1]");
    g.top_p = static_cast<float>(p);
  }
  if (const json& v = field(body, "top_k"); !v.is_null()) {
    const int64_t k = integer_field(v, "top_k");
    if (k < 0 || k > 1'000'000) bad_request("top_k: out of range");
    g.top_k = static_cast<int>(k);
  }
  if (const json& v = field(body, "seed"); !v.is_null()) g.seed = static_cast<uint64_t>(integer_field(v, "seed"));
  if (const json& v = field(body, "answer"); !v.is_null()) request.forced_answer = string_field(v, "answer");
  if (const json& v = field(body, "stop"); !v.is_null()) {  // OpenAI's: a string or up to 4 of them
    g.stop.clear();
    if (v.is_string()) g.stop.push_back(v.get<std::string>());
    else if (v.is_array() && v.size() <= 4)
      for (size_t i = 0; i < v.size(); ++i) g.stop.push_back(string_field(v[i], "stop[" + std::to_string(i) + "]"));
    else bad_request("stop: expected a string or an array of up to 4 strings");
  }
}

// ---- OpenAI chat completions -------------------------------------------------------------------------

namespace {

struct ChatMessage {
  std::string role, text;
  std::vector<std::string> images;
  std::string video;
};

ChatMessage parse_message(const json& message, size_t index) {
  const std::string where = "messages[" + std::to_string(index) + "]";
  if (!message.is_object()) bad_request(where + ": expected an object");
  ChatMessage m;
  m.role = string_field(field(message, "role"), where + ".role");
  if (m.role != "system" && m.role != "developer" && m.role != "user" && m.role != "assistant")
    bad_request(where + ".role: '" + m.role + "' is not one of system, user, assistant");
  const json& content = field(message, "content");
  if (content.is_null() && m.role == "assistant") return m;  // OpenAI allows it (say, beside tool calls)
  if (content.is_string()) {
    m.text = content.get<std::string>();
    return m;
  }
  if (!content.is_array()) bad_request(where + ".content: expected a string or an array of parts");
  for (size_t i = 0; i < content.size(); ++i) {
    const std::string part_where = where + ".content[" + std::to_string(i) + "]";
    const json& part = content[i];
    const std::string type = string_field(field(part, "type"), part_where + ".type");
    if (type == "text") {
      if (!m.text.empty()) m.text += "\n";
      m.text += string_field(field(part, "text"), part_where + ".text");
    } else if (type == "image_url" || type == "video_url") {
      if (m.role != "user") bad_request(part_where + ": media go in the first user message (the model answers in text)");
      const json& ref = field(part, type.c_str());
      const std::string url = ref.is_string() ? ref.get<std::string>() : string_field(field(ref, "url"), part_where + "." + type + ".url");
      if (type == "image_url") m.images.push_back(url);
      else if (m.video.empty()) m.video = url;
      else bad_request(part_where + ": one video per conversation");
    } else {
      bad_request(part_where + ".type: '" + type + "' is not one of text, image_url, video_url");
    }
  }
  return m;
}

void attach(Request& r, const Media* media) {
  if (media == nullptr) return;
  if (media->is_video()) r.video = media->video.get();
  else r.image = media->image;
}

}  // namespace

ChatCall chat_call_from_body(const json& body, const Model& model, const Limits& limits) {
  if (!body.is_object()) bad_request("the body must be a JSON object");
  const json& messages = field(body, "messages");
  if (!messages.is_array() || messages.empty()) bad_request("messages: expected a non-empty array");
  std::vector<ChatMessage> turns;
  for (size_t i = 0; i < messages.size(); ++i) {
    ChatMessage m = parse_message(messages[i], i);
    if (m.role == "system" || m.role == "developer") continue;  // Sa2VA's templates have no system prompt
    const bool expect_user = turns.empty() || turns.back().role == "assistant";
    if ((m.role == "user") != expect_user)
      bad_request("messages[" + std::to_string(i) + "]: user and assistant messages must alternate, starting with user");
    if (m.role == "user" && !turns.empty() && (!m.images.empty() || !m.video.empty()))
      bad_request("messages[" + std::to_string(i) + "]: images and videos go in the first user message");
    turns.push_back(std::move(m));
  }
  if (turns.empty() || turns.back().role != "user") bad_request("messages: the last message must be from the user");

  ChatCall call;
  const ChatMessage& first = turns.front();
  if (!first.video.empty() && !first.images.empty()) bad_request("messages: give images or a video, not both");
  if (!first.video.empty()) call.media = video_from_reference(first.video, limits);
  else if (first.images.size() == 1) call.media = image_media(first.images[0], limits);
  else if (first.images.size() > 1) call.media = frames_media(first.images, limits);

  const json& extension = field(body, "sa2va");
  if (!extension.is_null() && !extension.is_object()) bad_request("sa2va: expected an object");
  if (const json& n = field(body, "n"); !n.is_null() && integer_field(n, "n") != 1)
    bad_request("n: one choice is generated per request (n = 1)");
  std::vector<Mask> mask_prompts;
  if (const json& prompts = field(extension, "mask_prompts"); !prompts.is_null()) {
    if (!call.media || call.media->is_video()) bad_request("sa2va.mask_prompts: visual prompts need an image");
    mask_prompts = mask_prompts_from_json(prompts, call.media->width(), call.media->height(), limits);
  }
  if (const json& format = field(extension, "mask_format"); !format.is_null()) {
    call.mask_format = string_field(format, "sa2va.mask_format");
    check_mask_format(call.mask_format);
  }
  if (const json& stream = field(body, "stream"); !stream.is_null()) {
    if (!stream.is_boolean()) bad_request("stream: expected true or false");
    call.stream = stream.get<bool>();
  }
  if (const json& options = field(body, "stream_options"); !options.is_null()) {
    if (!options.is_object()) bad_request("stream_options: expected an object");
    if (const json& usage = field(options, "include_usage"); !usage.is_null()) {
      if (!usage.is_boolean()) bad_request("stream_options.include_usage: expected true or false");
      call.include_usage = usage.get<bool>();
    }
  }

  // Earlier turns become past_text exactly as the model would have written it.
  std::string past;
  for (size_t i = 0; i + 1 < turns.size(); i += 2) {
    Request earlier;
    earlier.text = turns[i].text;
    earlier.past_text = past;
    if (i == 0) {
      attach(earlier, call.media.get());
      earlier.mask_prompts = mask_prompts;
    }
    try {
      past = model.conversation_after(earlier, turns[i + 1].text);
    } catch (const Error& e) {
      bad_request("messages: turn " + std::to_string(i / 2 + 1) + ": " + e.what());
    }
  }
  Request& r = call.request;
  r.text = turns.back().text;
  r.past_text = past;
  if (call.media && !call.media->is_video()) {
    // The request takes the pixels (Media keeps the size): held once, as the server counts them.
    r.image = std::move(call.media->image);
    call.media->image.width = r.image.width;
    call.media->image.height = r.image.height;
  } else {
    attach(r, call.media.get());
  }
  r.mask_prompts = std::move(mask_prompts);  // the first turn's regions, passed again on later turns
  apply_generation(body, limits, r);
  if (extension.is_object()) apply_generation_overrides(extension, limits, r);
  return call;
}

// ---- masks out ---------------------------------------------------------------------------------------

void check_mask_format(const std::string& format) {
  if (format != "rle" && format != "png" && format != "polygon")
    bad_request("mask format '" + format + "' is not one of rle, png, polygon");
}

json mask_json(const Mask& mask, const std::string& format) {
  const MaskView view{mask.data.data(), mask.height, mask.width};
  json j = {{"bbox", mask_bbox(view)}, {"area", mask_area(view)}};
  if (format == "rle") {
    j["rle"] = {{"size", {mask.height, mask.width}}, {"counts", rle_counts_to_string(rle_encode(view).counts)}};
  } else if (format == "png") {
    std::vector<uint8_t> gray(mask.data.size());
    std::transform(mask.data.begin(), mask.data.end(), gray.begin(), [](uint8_t v) { return v ? 255 : 0; });
    const std::vector<uint8_t> png = encode_png(gray.data(), mask.width, mask.height, 1);
    j["png"] = base64_encode(png.data(), png.size());
  } else {
    j["polygon"] = mask_polygons(view);
  }
  return j;
}

json masks_json(const Prediction& p, const std::string& format) {
  json out = json::array();
  for (size_t k = 0; k < p.masks.size(); ++k) {
    json seg = {{"index", k}, {"phrase", k < p.phrases.size() ? p.phrases[k] : ""},
                {"score", k < p.scores.size() ? p.scores[k] : 0.f}};
    json frames = json::array();
    for (size_t t = 0; t < p.masks[k].size(); ++t) {
      json frame = mask_json(p.masks[k][t], format);
      frame["frame"] = t;
      frames.push_back(std::move(frame));
    }
    // An image's one mask is also at the top, where a reader of one mask looks.
    if (p.masks[k].size() == 1)
      for (const auto& [key, value] : frames[0].items())
        if (key != "frame") seg[key] = value;
    seg["frames"] = std::move(frames);
    out.push_back(std::move(seg));
  }
  return out;
}

json sa2va_object(const Prediction& p, const std::string& format) {
  return {{"text", p.text},       {"content", p.content},   {"caption", p.caption},
          {"phrases", p.phrases}, {"finish_reason", p.finish_reason}, {"masks", masks_json(p, format)}};
}

}  // namespace sa2va::server
