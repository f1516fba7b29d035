// Options shared by `run`, `chat` and `dump`: the model folder, the visual input, the prompt and
// the generation settings, and the writers of masks, overlays and result.json.
#pragma once
#include <CLI/CLI.hpp>

#include <memory>
#include <string>
#include <vector>

#include "sa2va/sa2va.h"

namespace sa2va::cli {

struct RequestOptions {
  std::string model_dir;
  std::string image_path, video_path;
  std::string prompt, answer, past_text;
  std::vector<std::string> mask_prompt_paths;
  std::vector<std::string> stop;
  std::string precision = "bf16", weights = "bf16", device = "cpu";
  int max_new_tokens = 2048, max_tiles = 12, llm_frames = 5;
  bool uniform_frames = false;
  float temperature = 0.f, top_p = 1.f;
  int top_k = 0;
  uint64_t seed = 0;

  // Adds the options; `with_prompt` false for `chat` (the prompt comes from the terminal).
  void add_to(CLI::App& app, bool with_prompt, const std::string& default_precision);
  ModelOptions model_options() const;  // precision, weight format, device; threads from --threads
  // Loads the image / opens the video / reads the mask prompts into `request`.
  void fill(Request& request, std::unique_ptr<Video>& video_holder) const;
};

// A Video that remembers its two most recent frames, so that the overlay writer can read the
// frames the tracker has just used without decoding the video again.
std::unique_ptr<Video> with_last_frame_cache(std::unique_ptr<Video> video);

// Checks that `dir` can be created and written, before any model work.
void ensure_writable_dir(const std::string& dir);

// Checks that the file `path` can be written (not a folder, its folder there and writable), before
// any model work: PATH.partial is created and removed.
void check_output_file(const std::string& path);

// Removes what an earlier run wrote into `dir` (result.json, overlay.png / .mp4, masks/<k>.png and
// masks/<k>/<NNNNN>.png), so that the folder never mixes two runs; other files stay.
void remove_earlier_outputs(const std::string& dir);

// Writes DIR/masks/<k>.png, DIR/overlay.png (with `overlay`) and DIR/result.json, last, for an image prediction.
void write_image_outputs(const std::string& dir, const Image& image, const Prediction& p, bool overlay = true);

// Writes a video prediction incrementally: per-frame mask PNGs DIR/masks/<k>/<NNNNN>.png, overlay
// frames in DIR/overlay.mp4, and COCO RLE per frame into DIR/result.json at finish().
class VideoOutputWriter {
 public:
  VideoOutputWriter(const std::string& dir, Video& video, bool overlay_video);
  ~VideoOutputWriter();
  void on_mask(int seg, int64_t frame, const Mask& mask);
  void finish(const Prediction& p);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A progress line "frames 12/100 (8.3 frames/s)" on stderr, only when stderr is a terminal.
std::function<void(int64_t, int64_t)> terminal_progress();

}  // namespace sa2va::cli
