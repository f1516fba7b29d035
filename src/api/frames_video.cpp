// Video::from_frames (include/sa2va/sa2va.h): frames already in memory. Kept apart from the
// decoder-backed videos of sa2va.cpp, so that a program using only this brings no video decoder
// libraries with it (the GPU check's programs, carried to a machine without them).
#include "core/error.h"
#include "sa2va/sa2va.h"

namespace sa2va {
namespace {

class FramesVideo final : public Video {
 public:
  explicit FramesVideo(std::vector<Image> frames) : frames_(std::move(frames)) {}
  int width() const override { return frames_.front().width; }
  int height() const override { return frames_.front().height; }
  int64_t frame_count() const override { return static_cast<int64_t>(frames_.size()); }
  double fps() const override { return 0.0; }
  Image frame(int64_t index) override {
    if (index < 0 || index >= frame_count())
      throw Error("frame " + std::to_string(index) + " is out of range (the video has " +
                  std::to_string(frame_count()) + " frames)");
    return frames_[static_cast<size_t>(index)];
  }

 private:
  std::vector<Image> frames_;
};

}  // namespace

std::unique_ptr<Video> Video::from_frames(std::vector<Image> frames) {
  if (frames.empty()) throw Error("a video needs at least one frame");
  for (size_t i = 0; i < frames.size(); ++i)
    if (frames[i].width <= 0 || frames[i].height <= 0 ||
        frames[i].rgb.size() != static_cast<size_t>(frames[i].width) * static_cast<size_t>(frames[i].height) * 3)
      throw Error("frame " + std::to_string(i) + ": its pixel buffer does not match its size");
  return std::make_unique<FramesVideo>(std::move(frames));
}

}  // namespace sa2va
