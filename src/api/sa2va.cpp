// The public API (include/sa2va/sa2va.h) over the pipeline in models/sa2va_model.h.
#include "sa2va/sa2va.h"

#include <mutex>

#include "core/profile.h"
#include "core/threadpool.h"
#include "io/video.h"
#include "models/sa2va_model.h"

namespace sa2va {
namespace {

class ModelImpl final : public Model {
 public:
  explicit ModelImpl(std::unique_ptr<Sa2vaModel> m) : model_(std::move(m)) {}
  Prediction predict(const Request& request) const override { return model_->predict(request); }
  std::string template_name() const override { return model_->config.template_name; }
  std::string conversation_after(const Request& request, const std::string& answer) const override {
    return model_->conversation_after(request, answer);
  }

 private:
  std::unique_ptr<Sa2vaModel> model_;
};

class VideoImpl final : public Video {
 public:
  explicit VideoImpl(std::unique_ptr<VideoSource> source) : source_(std::move(source)) {}
  int width() const override { return source_->width(); }
  int height() const override { return source_->height(); }
  int64_t frame_count() const override { return source_->frame_count(); }
  double fps() const override { return source_->fps(); }
  Image frame(int64_t index) override {
    if (index < 0 || index >= source_->frame_count())
      throw Error(source_->path() + ": frame " + std::to_string(index) + " is out of range (the video has " +
                  std::to_string(source_->frame_count()) + " frames)");
    // A decoder has one read position: requests sharing this video take turns at it.
    const std::lock_guard<std::mutex> lock(mutex_);
    return source_->frame(index);
  }

 private:
  std::unique_ptr<VideoSource> source_;
  std::mutex mutex_;
};

}  // namespace

std::shared_ptr<VisualCache> VisualCache::create(size_t max_bytes) { return std::make_shared<VisualCacheImpl>(max_bytes); }

std::unique_ptr<Model> Model::load(const std::string& model_dir, const ModelOptions& options) {
  return std::make_unique<ModelImpl>(Sa2vaModel::load(model_dir, options));
}

void set_profiling(bool enabled) {
  if (enabled && !profile::enabled()) profile::reset();
  profile::set_enabled(enabled);
}

std::string profiling_report() { return profile::report(); }

std::unique_ptr<Video> Video::open(const std::string& path_or_folder) {
  return open(path_or_folder, kDefaultMaxPixels);
}

std::unique_ptr<Video> Video::open(const std::string& path_or_folder, int64_t max_pixels) {
  return std::make_unique<VideoImpl>(VideoSource::open(path_or_folder, max_pixels));
}

}  // namespace sa2va
