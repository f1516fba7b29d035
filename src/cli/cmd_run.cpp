// sa2va run: one request — text only, an image or a video — printing the answer and writing
// masks, an overlay and result.json.
#include <cstdio>
#include <memory>

#include "cli/command.h"
#include "cli/request_options.h"
#include "core/error.h"

namespace sa2va::cli {
namespace {

SA2VA_COMMAND("run", "Answer a prompt about an image, a video or nothing; write the masks", [](CLI::App& app) {
  auto opts = std::make_shared<RequestOptions>();
  auto out_dir = std::make_shared<std::string>();
  auto no_overlay = std::make_shared<bool>(false);
  opts->add_to(app, true, "bf16");
  app.add_option("--out", *out_dir, "Folder for masks/, overlay and result.json");
  app.add_flag("--no-overlay", *no_overlay, "Do not write overlay.png / overlay.mp4");
  return [=]() -> int {
    if (!out_dir->empty()) {
      ensure_writable_dir(*out_dir);  // fail before any model work
      remove_earlier_outputs(*out_dir);
    }
    Request request;
    request.text = opts->prompt;
    std::unique_ptr<Video> video;
    opts->fill(request, video);
    auto model = Model::load(opts->model_dir, opts->model_options());
    std::unique_ptr<VideoOutputWriter> video_out;
    if (video && !out_dir->empty()) {
      video_out = std::make_unique<VideoOutputWriter>(*out_dir, *video, !*no_overlay);
      request.on_mask = [&](int seg, int64_t frame, const Mask& m) { video_out->on_mask(seg, frame, m); };
    }
    request.on_progress = terminal_progress();
    const Prediction p = model->predict(request);
    std::printf("%s\n", p.text.c_str());
    if (!out_dir->empty()) {
      if (video_out) video_out->finish(p);
      else if (request.image.width > 0) write_image_outputs(*out_dir, request.image, p, !*no_overlay);
      else write_image_outputs(*out_dir, Image(), p);
    }
    return 0;
  };
});

}  // namespace
}  // namespace sa2va::cli
