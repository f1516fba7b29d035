// sa2va chat: a multi-turn conversation in the terminal about an image, a video or nothing.
// Each answer's masks are written to OUT/turn-<n>/ when --out is given.
#include <unistd.h>

#include <cstdio>
#include <iostream>

#include "cli/command.h"
#include "cli/request_options.h"
#include "core/error.h"

namespace sa2va::cli {
namespace {

SA2VA_COMMAND("chat", "Multi-turn conversation about an image, a video or nothing", [](CLI::App& app) {
  auto opts = std::make_shared<RequestOptions>();
  auto out_dir = std::make_shared<std::string>();
  opts->add_to(app, false, "bf16");
  app.add_option("--out", *out_dir, "Folder for each turn's masks (turn-1/, turn-2/, ...)");
  return [=]() -> int {
    if (!out_dir->empty()) ensure_writable_dir(*out_dir);
    Request base;
    std::unique_ptr<Video> video;
    opts->fill(base, video);
    auto model = Model::load(opts->model_dir, opts->model_options());
    const bool interactive = isatty(STDIN_FILENO);
    if (interactive) std::fprintf(stderr, "sa2va chat — empty line or Ctrl-D to quit\n");
    std::string past_text = base.past_text;  // --past-text continues an earlier conversation
    for (int turn = 1;; ++turn) {
      if (interactive) std::fprintf(stderr, "> ");
      std::string line;
      if (!std::getline(std::cin, line)) break;
      if (!line.empty() && line.back() == '\r') line.pop_back();  // a line from Windows
      if (line.find_first_not_of(" \t") == std::string::npos) break;  // an empty (or blank) line ends it
      Request request = base;
      request.text = line;
      request.past_text = past_text;
      // Every turn passes the first turn's regions (--mask-prompt) again: their tokens are in past_text.
      std::unique_ptr<VideoOutputWriter> video_out;
      const std::string turn_dir = out_dir->empty() ? "" : *out_dir + "/turn-" + std::to_string(turn);
      if (!turn_dir.empty()) {
        ensure_writable_dir(turn_dir);
        remove_earlier_outputs(turn_dir);
      }
      if (video && !turn_dir.empty()) {
        video_out = std::make_unique<VideoOutputWriter>(turn_dir, *video, true);
        request.on_mask = [&](int seg, int64_t frame, const Mask& m) { video_out->on_mask(seg, frame, m); };
      }
      request.on_progress = terminal_progress();
      const Prediction p = model->predict(request);
      std::printf("%s\n", p.text.c_str());
      std::fflush(stdout);
      if (!turn_dir.empty()) {
        if (video_out) video_out->finish(p);
        else write_image_outputs(turn_dir, request.image, p);  // result.json (past_text) even without masks
      }
      past_text = p.past_text;
    }
    return 0;
  };
});

}  // namespace
}  // namespace sa2va::cli
