#include "cli/request_options.h"

#include <unistd.h>

#include <charconv>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/profile.h"
#include "io/image.h"
#include "io/mask_io.h"
#include "io/video.h"
#include "models/preprocess.h"

namespace sa2va::cli {
namespace fs = std::filesystem;
using json = nlohmann::json;

void RequestOptions::add_to(CLI::App& app, bool with_prompt, const std::string& default_precision) {
  precision = default_precision;
  app.add_option("--model", model_dir, "Sa2VA model folder (config.json, *.safetensors, tokenizer)")->required();
  auto* image = app.add_option("--image", image_path, "Image file (JPEG or PNG)");
  auto* video = app.add_option("--video", video_path, "Video file (mp4, webm, mkv, avi, ...) or folder of frames");
  image->excludes(video);
  if (with_prompt) {
    app.add_option("--prompt", prompt, "The request, e.g. \"Please segment the girl in the yellow dress.\"")
        ->required();
    app.add_option("--answer", answer, "Teacher forcing: use this answer instead of generating one");
  }
  app.add_option("--past-text", past_text,
                 "The conversation so far (result.json's past_text of the previous turn): this request is a later turn");
  app.add_option("--mask-prompt", mask_prompt_paths,
                 "Visual prompt: a PNG mask of one region (repeatable; region1, region2, ...); a later turn "
                 "(--past-text) gives its conversation's regions again");
  app.add_option("--precision", precision, "f32 (reference) or bf16 (fast)")
      ->check(CLI::IsMember({"f32", "bf16"}))
      ->capture_default_str();
  app.add_option("--weights", weights,
                 "Format of the language model's linear layers: bf16 (as the checkpoint), q8_0 or q4_0 (quantized "
                 "at load)")
      ->check(CLI::IsMember({"bf16", "q8_0", "q4_0"}))
      ->capture_default_str();
  app.add_option("--device", device, "Where the model runs: cpu (cuda[:N] in CUDA builds)")->capture_default_str();
  app.add_option("--max-new-tokens", max_new_tokens, "Most tokens to generate")
      ->check(CLI::Range(1, std::numeric_limits<int>::max()))
      ->capture_default_str();
  app.add_option("--max-tiles", max_tiles, "Most 448px tiles per image")->check(CLI::Range(1, 40))
      ->capture_default_str();
  app.add_option("--llm-frames", llm_frames, "Video frames the language model sees")->check(CLI::Range(1, 64))
      ->capture_default_str();
  app.add_flag("--uniform-frames", uniform_frames,
               "Sample the language model's video frames uniformly over the video (default: the first ones)");
  app.add_option("--temperature", temperature, "Sampling temperature (0 = greedy)")->check(CLI::Range(0.0, 1e6));
  app.add_option("--top-k", top_k, "Sample from the k most likely tokens (0 = all)")
      ->check(CLI::Range(0, std::numeric_limits<int>::max()));
  app.add_option("--top-p", top_p, "Nucleus sampling threshold")->check(CLI::Range(0.0, 1.0));
  app.add_option("--stop", stop,
                 "End the answer where this text appears (repeatable); result.json's content stops before it");
  // Any 64-bit integer, signed or not (-1 is 2^64 - 1), as torch.manual_seed takes.
  app.add_option("--seed", seed, "Sampling seed (a 64-bit integer)")
      ->transform(CLI::Validator(
          [](std::string& text) {
        const char* end = text.data() + text.size();
        const auto whole = [end](std::from_chars_result r) { return r.ec == std::errc() && r.ptr == end; };
        uint64_t value = 0;
        int64_t negative = 0;
        if (!text.empty() && text[0] != '-' && whole(std::from_chars(text.data(), end, value))) return std::string();
        if (!text.empty() && text[0] == '-' && whole(std::from_chars(text.data(), end, negative))) {
          text = std::to_string(static_cast<uint64_t>(negative));
          return std::string();
        }
        return "'" + text + "' is not an integer that fits 64 bits";
          },
          "INT64"));
}

ModelOptions RequestOptions::model_options() const {
  ModelOptions o;
  o.precision = precision == "f32" ? Precision::F32 : Precision::BF16;
  o.weights = weights == "q8_0" ? WeightFormat::Q8_0 : weights == "q4_0" ? WeightFormat::Q4_0 : WeightFormat::BF16;
  o.device = device;
  return o;
}

void RequestOptions::fill(Request& request, std::unique_ptr<Video>& video_holder) const {
  if (!image_path.empty()) request.image = load_image(image_path);
  if (!video_path.empty()) {
    video_holder = with_last_frame_cache(Video::open(video_path));
    request.video = video_holder.get();
  }
  for (const std::string& path : mask_prompt_paths) {
    check(!image_path.empty(), "--mask-prompt needs --image");
    // Any size: the model samples it to the token grid as upstream does (docs/preprocess.md §5).
    const Image m = load_image(path);
    Mask mask;
    mask.width = m.width;
    mask.height = m.height;
    mask.data.resize(static_cast<size_t>(m.width) * static_cast<size_t>(m.height));
    for (size_t i = 0; i < mask.data.size(); ++i)
      mask.data[i] = (m.rgb[3 * i] | m.rgb[3 * i + 1] | m.rgb[3 * i + 2]) ? 1 : 0;
    request.mask_prompts.push_back(std::move(mask));
  }
  request.generation.max_new_tokens = max_new_tokens;
  request.generation.temperature = temperature;
  request.generation.top_k = top_k;
  request.generation.top_p = top_p;
  request.generation.seed = seed;
  request.generation.stop = stop;
  request.max_tiles = max_tiles;
  request.video_llm_frames = llm_frames;
  request.video_uniform_frames = uniform_frames;
  request.forced_answer = answer;
  request.past_text = past_text;
}

namespace {

// Keeps the two most recently decoded frames: the overlay of frame t is drawn when the masks of
// frame t+1 start arriving, after the tracker has already read frame t+1.
class CachedVideo final : public Video {
 public:
  explicit CachedVideo(std::unique_ptr<Video> inner) : inner_(std::move(inner)) {}
  int width() const override { return inner_->width(); }
  int height() const override { return inner_->height(); }
  int64_t frame_count() const override { return inner_->frame_count(); }
  double fps() const override { return inner_->fps(); }
  Image frame(int64_t index) override {
    for (const Entry& e : recent_)
      if (e.index == index) return e.image;
    recent_[oldest_] = {index, inner_->frame(index)};
    const Image& decoded = recent_[oldest_].image;
    oldest_ = 1 - oldest_;
    return decoded;
  }

 private:
  struct Entry {
    int64_t index = -1;
    Image image;
  };
  std::unique_ptr<Video> inner_;
  Entry recent_[2];
  int oldest_ = 0;
};

json rle_json(const Mask& m) {
  const MaskView view{m.data.data(), m.height, m.width};
  const CocoRle rle = rle_encode(view);
  const auto box = mask_bbox(view);
  return {{"rle", {{"size", {m.height, m.width}}, {"counts", rle_counts_to_string(rle.counts)}}},
          {"bbox", box},
          {"area", mask_area(view)}};
}

// Written beside and renamed once closed without error: a full disk never leaves a short file under
// the final name (a stream's error shows only when its buffer is written, at the latest on close).
void write_text_file(const std::string& path, const std::function<void(std::ostream&)>& write) {
  const std::string partial = path + ".partial";
  std::ofstream out(partial, std::ios::binary | std::ios::trunc);
  if (out) write(out);
  out.close();
  std::error_code ec;
  if (out.fail()) {
    fs::remove(partial, ec);
    throw Error(path + ": write failed (disk full, or not writable)");
  }
  fs::rename(partial, path, ec);
  if (ec) throw Error(path + ": cannot write: " + ec.message());
}

void write_json_file(const std::string& path, const json& j) {
  write_text_file(path, [&](std::ostream& out) { out << j.dump(2) << "\n"; });
}

std::string frame_name(int64_t frame) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%05lld.png", static_cast<long long>(frame));
  return buf;
}

}  // namespace

std::unique_ptr<Video> with_last_frame_cache(std::unique_ptr<Video> video) {
  return std::make_unique<CachedVideo>(std::move(video));
}

void check_output_file(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw Error(path + ": is a folder (name the file to write)");
  const std::string partial = path + ".partial";
  std::FILE* f = std::fopen(partial.c_str(), "wb");
  if (!f) throw Error(path + ": cannot open for writing");
  std::fclose(f);
  std::remove(partial.c_str());
}

void ensure_writable_dir(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir)) throw Error(dir + ": cannot create the output folder" + (ec ? " (" + ec.message() + ")" : ""));
  const fs::path probe = fs::path(dir) / ".sa2va-write-test";
  {
    std::ofstream out(probe);
    out << "x";
    out.close();  // the byte reaches the file system here
    if (out.fail()) {
      fs::remove(probe, ec);
      throw Error(dir + ": the output folder is not writable (or the disk is full)");
    }
  }
  fs::remove(probe, ec);
}

void remove_earlier_outputs(const std::string& dir) {
  std::error_code ec;
  const auto digits = [](const std::string& s) {
    return !s.empty() && s.find_first_not_of("0123456789") == std::string::npos;
  };
  for (const char* name : {"result.json", "overlay.png", "overlay.mp4"}) fs::remove(fs::path(dir) / name, ec);
  const fs::path masks = fs::path(dir) / "masks";
  if (!fs::is_directory(masks, ec)) return;
  // Only what this program writes there: masks/<k>.png, masks/<k>/<NNNNN>.png; anything else stays.
  for (const auto& entry : fs::directory_iterator(masks, ec)) {
    const fs::path& p = entry.path();
    if (entry.is_regular_file(ec) && p.extension() == ".png" && digits(p.stem().string())) {
      fs::remove(p, ec);
    } else if (entry.is_directory(ec) && digits(p.filename().string())) {
      for (const auto& frame : fs::directory_iterator(p, ec))
        if (frame.is_regular_file(ec) && frame.path().extension() == ".png" && digits(frame.path().stem().string()))
          fs::remove(frame.path(), ec);
      fs::remove(p, ec);  // only when now empty
    }
  }
  fs::remove(masks, ec);  // only when now empty
}

void write_image_outputs(const std::string& dir, const Image& image, const Prediction& p, bool overlay) {
  fs::create_directories(fs::path(dir) / "masks");
  std::vector<MaskView> views;
  json masks = json::array();
  for (size_t k = 0; k < p.masks.size(); ++k) {
    const Mask& m = p.masks[k].at(0);
    const MaskView view{m.data.data(), m.height, m.width};
    save_mask_png((fs::path(dir) / "masks" / (std::to_string(k) + ".png")).string(), view);
    views.push_back(view);
    json entry = rle_json(m);
    entry["index"] = k;
    entry["phrase"] = k < p.phrases.size() ? p.phrases[k] : "";
    entry["score"] = k < p.scores.size() ? p.scores[k] : 0.f;
    masks.push_back(entry);
  }
  if (overlay && image.width > 0) save_png_rgb((fs::path(dir) / "overlay.png").string(), render_overlay(image, views));
  write_json_file((fs::path(dir) / "result.json").string(),
                  {{"text", p.text}, {"content", p.content}, {"finish_reason", p.finish_reason}, {"caption", p.caption},
                   {"past_text", p.past_text}, {"width", image.width},
                   {"height", image.height}, {"masks", masks}});
}

struct VideoOutputWriter::Impl {
  fs::path dir;
  Video* video = nullptr;
  bool overlay_video = true;
  // The per-frame RLE entries of each [SEG] go to a scratch file as they come (memory stays flat on
  // long videos) and are spliced into result.json by finish().
  std::vector<fs::path> frame_entry_paths;
  std::vector<std::unique_ptr<std::ofstream>> frame_entries;
  std::vector<Mask> current;         // masks of the current frame, by [SEG]
  int64_t current_frame = -1;
  std::unique_ptr<VideoWriter> writer;

  ~Impl() {
    for (size_t k = 0; k < frame_entry_paths.size(); ++k) {
      frame_entries[k].reset();
      std::error_code ec;
      fs::remove(frame_entry_paths[k], ec);
    }
  }

  void flush_overlay() {
    if (current_frame < 0 || !overlay_video) return;
    std::vector<MaskView> views;
    for (const Mask& m : current)
      if (!m.data.empty()) views.push_back({m.data.data(), m.height, m.width});
    Image frame = video->frame(current_frame);
    // Masks are at the first frame's size; a frame of another size is drawn resized to it.
    if (frame.width != video->width() || frame.height != video->height())
      frame = preprocess::resize_bicubic(frame, video->width(), video->height());
    const Image overlay = render_overlay(frame, views);
    if (!writer) {
      const double fps = video->fps() > 0 ? video->fps() : 10.0;
      writer = std::make_unique<VideoWriter>((dir / "overlay.mp4").string(), overlay.width, overlay.height, fps);
    }
    writer->write(overlay);
  }
};

VideoOutputWriter::VideoOutputWriter(const std::string& dir, Video& video, bool overlay_video)
    : impl_(std::make_unique<Impl>()) {
  impl_->dir = dir;
  impl_->video = &video;
  impl_->overlay_video = overlay_video;
}

VideoOutputWriter::~VideoOutputWriter() = default;

void VideoOutputWriter::on_mask(int seg, int64_t frame, const Mask& mask) {
  Impl& s = *impl_;
  const profile::Scope timed("output.write_frame");
  if (frame != s.current_frame) {
    s.flush_overlay();
    s.current_frame = frame;
    for (Mask& m : s.current) m.data.clear();
  }
  const size_t k = static_cast<size_t>(seg);
  while (s.frame_entries.size() <= k) {
    s.frame_entry_paths.push_back(s.dir / (".result-frames-" + std::to_string(s.frame_entries.size()) + ".json"));
    s.frame_entries.push_back(std::make_unique<std::ofstream>(s.frame_entry_paths.back()));
    if (!*s.frame_entries.back()) throw Error(s.frame_entry_paths.back().string() + ": cannot create");
  }
  if (s.current.size() <= k) s.current.resize(k + 1);
  s.current[k] = mask;
  const fs::path seg_dir = s.dir / "masks" / std::to_string(seg);
  if (!fs::exists(seg_dir)) fs::create_directories(seg_dir);
  save_mask_png((seg_dir / frame_name(frame)).string(), {mask.data.data(), mask.height, mask.width});
  json entry = rle_json(mask);
  entry["frame"] = frame;
  std::ofstream& entries = *s.frame_entries[k];
  entries << (entries.tellp() > 0 ? ",\n" : "") << entry.dump();
  if (!entries) throw Error(s.frame_entry_paths[k].string() + ": write failed");
}

void VideoOutputWriter::finish(const Prediction& p) {
  Impl& s = *impl_;
  s.flush_overlay();
  if (s.writer) s.writer->close();
  std::string head = json{{"text", p.text}, {"content", p.content}, {"finish_reason", p.finish_reason},
                          {"caption", p.caption}, {"past_text", p.past_text}, {"width", s.video->width()},
                          {"height", s.video->height()}, {"frames", s.video->frame_count()}}
                         .dump();
  head.pop_back();  // the closing brace: "masks" follows
  for (size_t k = 0; k < s.frame_entries.size(); ++k) {
    s.frame_entries[k]->close();
    if (s.frame_entries[k]->fail()) throw Error(s.frame_entry_paths[k].string() + ": write failed (disk full?)");
  }
  write_text_file((s.dir / "result.json").string(), [&](std::ostream& out) {
    out << head << ",\n\"masks\":[";
    for (size_t k = 0; k < s.frame_entries.size(); ++k) {
      std::string seg_head = json{{"index", k}, {"phrase", k < p.phrases.size() ? p.phrases[k] : ""}}.dump();
      seg_head.pop_back();
      out << (k ? ",\n" : "") << seg_head << ",\"frames\":[\n";
      std::ifstream entries(s.frame_entry_paths[k]);
      if (entries.peek() != std::ifstream::traits_type::eof()) out << entries.rdbuf();
      out << "\n]}";
    }
    out << "]}\n";
  });
}

std::function<void(int64_t, int64_t)> terminal_progress() {
  if (!isatty(STDERR_FILENO)) return nullptr;
  auto start = std::make_shared<std::chrono::steady_clock::time_point>(std::chrono::steady_clock::now());
  return [start](int64_t done, int64_t total) {
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - *start).count();
    const int width = 30;
    const int filled = total > 0 ? static_cast<int>(width * done / total) : 0;
    std::fprintf(stderr, "\r[%s%s] frames %lld/%lld (%.1f frames/s)", std::string(filled, '#').c_str(),
                 std::string(width - filled, ' ').c_str(), static_cast<long long>(done), static_cast<long long>(total),
                 seconds > 0 ? done / seconds : 0.0);
    if (done == total) std::fprintf(stderr, "\n");
    std::fflush(stderr);
  };
}

}  // namespace sa2va::cli
