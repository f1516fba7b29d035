// The whole pipeline on a real GPU against the CPU, on a random-weight tiny model written by the
// test itself (so that the GPU check carries no checkpoint): image segmentation with every stage
// recorded, a visual prompt, and a short video, in f32 (stages within 1e-4 of the CPU, masks by IoU)
// and bf16 (masks by IoU); and requests on four threads at once, as each gets alone. Skips, saying
// why, without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <thread>
#include <vector>

#include "core/device.h"
#include "core/stages.h"
#include "models/make_model.h"
#include "models/sa2va_model.h"
#include "test_util.h"

namespace sa2va {
namespace {

// A picture with a bright disc on a gradient, and a few shifted copies as video frames.
Image picture(int shift) {
  Image im(320, 240);
  for (int y = 0; y < im.height; ++y)
    for (int x = 0; x < im.width; ++x) {
      uint8_t* p = im.row(y) + 3 * x;
      const int dx = x - 150 - shift, dy = y - 110;
      const bool disc = dx * dx + dy * dy < 60 * 60;
      p[0] = static_cast<uint8_t>(disc ? 230 : x * 255 / im.width);
      p[1] = static_cast<uint8_t>(disc ? 40 : y * 255 / im.height);
      p[2] = static_cast<uint8_t>(disc ? 30 : 128);
    }
  return im;
}

double iou(const Mask& a, const Mask& b) {
  int64_t inter = 0, uni = 0;
  for (size_t i = 0; i < a.data.size() && i < b.data.size(); ++i) {
    inter += a.data[i] && b.data[i];
    uni += a.data[i] || b.data[i];
  }
  return uni == 0 ? 1.0 : static_cast<double>(inter) / static_cast<double>(uni);
}

// Neither empty nor full: a mask whose comparison says something (two empty masks agree at IoU 1).
bool informative(const Mask& m) {
  const auto set = std::count(m.data.begin(), m.data.end(), uint8_t{1});
  return set > 0 && set < static_cast<std::ptrdiff_t>(m.data.size());
}

void expect_masks_agree(const Prediction& cpu, const Prediction& gpu, double min_iou, const std::string& what) {
  SCOPED_TRACE(what);
  EXPECT_EQ(cpu.text, gpu.text);
  ASSERT_EQ(cpu.masks.size(), gpu.masks.size());
  int informative_references = 0;
  for (size_t k = 0; k < cpu.masks.size(); ++k) {
    ASSERT_EQ(cpu.masks[k].size(), gpu.masks[k].size());
    for (size_t t = 0; t < cpu.masks[k].size(); ++t) {
      const Mask &want = cpu.masks[k][t], &got = gpu.masks[k][t];
      ASSERT_EQ(want.width, got.width) << "mask " << k << ", frame " << t;
      ASSERT_EQ(want.height, got.height) << "mask " << k << ", frame " << t;
      informative_references += informative(want);
      EXPECT_GE(iou(want, got), min_iou) << "mask " << k << ", frame " << t;
    }
  }
  EXPECT_GT(informative_references, 0) << "every CPU mask is empty or full: the IoU would check nothing";
}

// The random tiny model of these tests, written once per process.
const std::string& tiny_model() {
  static const std::string dir = [] {
    const std::string d = test::temp_dir("gpu-tiny");
    MakeModelOptions make;
    make.out_dir = d;
    make.seed = 7;
    make_model(make);
    return d;
  }();
  return dir;
}

TEST(GpuPipeline, TinyModelMatchesTheCpu) {
  std::string why;
  if (!test::gpu_available(&why)) GTEST_SKIP() << "no GPU: " << why;
  const std::string dir = tiny_model();

  Request request;
  request.image = picture(0);
  request.text = "<image>Please segment the red disc.";
  request.forced_answer = "Sure, [SEG].";
  Request regions = request;
  Mask region;
  region.width = request.image.width;
  region.height = request.image.height;
  region.data.assign(static_cast<size_t>(region.width) * region.height, 0);
  for (int y = 60; y < 160; ++y)
    for (int x = 100; x < 200; ++x) region.data[static_cast<size_t>(y) * region.width + x] = 1;
  regions.mask_prompts.push_back(region);
  std::vector<Image> frames;
  for (int i = 0; i < 4; ++i) frames.push_back(picture(8 * i));

  // The CPU in f32 is the reference of both GPU modes.
  const std::unique_ptr<Sa2vaModel> cpu = Sa2vaModel::load(dir, Precision::F32);
  StageRecorder cpu_stages;
  const Prediction want = cpu->predict(request, &cpu_stages);
  const Prediction want_regions = cpu->predict(regions);
  const std::unique_ptr<Video> cpu_video = Video::from_frames(frames);
  Request video;
  video.text = "<image>Please segment the red disc.";
  video.forced_answer = "Sure, [SEG].";
  video.video = cpu_video.get();
  const Prediction want_video = cpu->predict(video);

  for (Precision precision : {Precision::F32, Precision::BF16}) {
    SCOPED_TRACE(precision == Precision::F32 ? "f32" : "bf16");
    ModelOptions on_gpu;
    on_gpu.precision = precision;
    on_gpu.device = "cuda:0";
    const std::unique_ptr<Sa2vaModel> gpu = Sa2vaModel::load(dir, on_gpu);
    // f32 with TF32 off is the reference mode: every stage within 1e-4 of the CPU's, masks >= 0.99.
    // bf16 rounds activations and weights: on this model the CPU's own bf16 masks reach IoU 0.994
    // with its f32 ones, and the GPU's bf16 path rounds in other places (tensor-core products,
    // fused attention), so its masks are held to 0.98 against the f32 reference.
    const double min_iou = precision == Precision::F32 ? 0.99 : 0.98;
    StageRecorder gpu_stages;
    expect_masks_agree(want, gpu->predict(request, &gpu_stages), min_iou, "image");
    if (precision == Precision::F32) {
      ASSERT_EQ(cpu_stages.stages().size(), gpu_stages.stages().size());
      for (size_t i = 0; i < cpu_stages.stages().size(); ++i) {
        const Tensor& a = cpu_stages.stages()[i].second;
        if (a.dtype() != DType::F32) continue;  // ids, images and masks: compared through the prediction
        EXPECT_TRUE(test::close_rel(gpu_stages.stages()[i].second, a, 1e-4)) << cpu_stages.stages()[i].first;
      }
    }
    expect_masks_agree(want_regions, gpu->predict(regions), min_iou, "visual prompt");
    const std::unique_ptr<Video> gpu_video = Video::from_frames(frames);
    video.video = gpu_video.get();
    expect_masks_agree(want_video, gpu->predict(video), min_iou, "video");
  }
}

// Requests on several threads at once share the model's weights and take a stream each: every answer
// and mask is the one the same request gets alone.
TEST(GpuPipeline, ConcurrentRequestsAsOneAtATime) {
  std::string why;
  if (!test::gpu_available(&why)) GTEST_SKIP() << "no GPU: " << why;
  ModelOptions on_gpu;
  on_gpu.device = "cuda:0";
  const std::unique_ptr<Sa2vaModel> gpu = Sa2vaModel::load(tiny_model(), on_gpu);
  std::vector<Request> requests(2);
  requests[0].image = picture(0);
  requests[0].text = "<image>Please segment the red disc.";
  requests[0].forced_answer = "Sure, [SEG].";
  requests[1].image = picture(24);
  requests[1].text = "<image>What is in the picture?";
  requests[1].generation.max_new_tokens = 6;
  std::vector<Prediction> alone;
  for (const Request& r : requests) alone.push_back(gpu->predict(r));

  constexpr int kThreads = 4, kRounds = 3;
  std::vector<std::vector<Prediction>> got(kThreads);
  std::vector<std::string> errors(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      try {
        for (int r = 0; r < kRounds; ++r) got[t].push_back(gpu->predict(requests[(t + r) % requests.size()]));
      } catch (const std::exception& e) {
        errors[t] = e.what();
      }
    });
  for (std::thread& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) {
    ASSERT_EQ(errors[t], "") << "thread " << t;
    ASSERT_EQ(got[t].size(), static_cast<size_t>(kRounds));
    for (int r = 0; r < kRounds; ++r) {
      const Prediction& want = alone[(t + r) % requests.size()];
      EXPECT_EQ(got[t][r].generated_ids, want.generated_ids) << "thread " << t << ", round " << r;
      expect_masks_agree(want, got[t][r], 0.999, "thread " + std::to_string(t) + ", round " + std::to_string(r));
    }
  }
}

}  // namespace
}  // namespace sa2va
