// The model's components on a device other than the CPU, checked on any machine: a host-memory
// stand-in for cuda:0 (test::FakeDeviceAllocator) holds the weights and every buffer, labelled
// cuda:0, while the CPU kernels compute. Any host access by model code to that memory throws, as it
// would on a real GPU, and the results must equal the CPU run's bit for bit. (On a GPU, the same code
// runs the CUDA kernels, which BackendOps.* compares with the CPU op by op.)
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/allocator.h"
#include "core/context.h"
#include "core/device.h"
#include "core/stages.h"
#include "io/config.h"
#include "io/image.h"
#include "io/video.h"
#include "io/safetensors.h"
#include "io/weights.h"
#include "models/generation.h"
#include "models/internvit.h"
#include "models/llm.h"
#include "models/sa2va_model.h"
#include "models/sam2/sam2_image.h"
#include "ops/ops.h"
#include "ops/ops_test_util.h"
#include "test_util.h"

namespace sa2va {
namespace {

// Installs the stand-in for cuda:0 for the test's lifetime.
struct StandInGpu {
  test::FakeDeviceAllocator allocator;
  StandInGpu() { register_allocator(DeviceType::CUDA, &allocator); }
  ~StandInGpu() { register_allocator(DeviceType::CUDA, nullptr); }
};

void expect_same(const Tensor& cpu, const Tensor& device, const std::string& what) {
  ASSERT_TRUE(cpu.defined() && device.defined()) << what;
  EXPECT_EQ(cpu.shape(), device.shape()) << what;
  EXPECT_EQ(cpu.to_vector(), device.to_vector()) << what << " differs between the CPU and the stand-in device";
}

// Qwen2 in f32, bf16 and with 4-bit weights (a quantized copy of the tied head), and InternLM2 (its
// grouped wqkv reordered on the device).
TEST(StandInDevice, LanguageModelGeneratesAndRecordsAsOnTheCpu) {
  SA2VA_REQUIRE_FIXTURE(tiny, "sa2va-tiny");
  SA2VA_REQUIRE_FIXTURE(internlm2, "sa2va-tiny-internlm2");
  struct Case {
    std::string dir;
    Precision precision;
    WeightFormat format;
  };
  StandInGpu stand_in;
  for (const Case& c : {Case{tiny, Precision::F32, WeightFormat::F32}, Case{tiny, Precision::BF16, WeightFormat::BF16},
                        Case{tiny, Precision::BF16, WeightFormat::Q4_0}, Case{internlm2, Precision::BF16, WeightFormat::BF16}}) {
    SCOPED_TRACE(c.dir + " " + weight_format_name(c.format));
    const std::string& dir = c.dir;
    const Precision precision = c.precision;
    const ModelConfig config = load_config(dir);
    const Checkpoint checkpoint = Checkpoint::open(dir);
    const Tensor prompt = ops_test::random_tensor({60, config.llm.hidden_size}, 5);
    LoadPolicy on_cpu(precision), on_device(precision);
    on_cpu.llm_format = on_device.llm_format = c.format;
    on_device.device = Device::cuda(0);
    Weights cpu_weights(checkpoint, on_cpu), device_weights(checkpoint, on_device);
    const LanguageModel cpu_lm = LanguageModel::load(cpu_weights, config);
    const LanguageModel device_lm = LanguageModel::load(device_weights, config);
    device_weights.finish();
    ASSERT_EQ(device_lm.device(), Device::cuda(0));
    ASSERT_EQ(device_lm.layers[0].wqkv.device(), Device::cuda(0));  // fused on the device

    SamplingOptions greedy;
    greedy.max_new_tokens = 6;
    StageRecorder cpu_stages, device_stages;
    const GenerationResult want = generate(cpu_lm, prompt, greedy, StopRules{}, ExecContext::recording(&cpu_stages));
    GenerationResult got;
    {
      ExecContext ctx = ExecContext::recording(&device_stages);
      ctx.device = Device::cuda(0);
      const ContextScope scope(ctx);
      got = generate(device_lm, prompt.to(Device::cuda(0)), greedy, StopRules{}, ctx);
      EXPECT_EQ(got.hidden.device(), Device::cuda(0));
    }
    EXPECT_EQ(got.ids, want.ids);
    expect_same(want.hidden, got.hidden, "generated hidden states");
    ASSERT_EQ(cpu_stages.stages().size(), device_stages.stages().size());
    for (size_t i = 0; i < cpu_stages.stages().size(); ++i)
      expect_same(cpu_stages.stages()[i].second, device_stages.stages()[i].second, cpu_stages.stages()[i].first);

    // Teacher forcing embeds the answer on the device.
    const std::vector<int32_t> answer = {want.ids[0], 11, 42, want.ids[1]};
    const GenerationResult forced_cpu = teacher_forced(cpu_lm, prompt, answer);
    GenerationResult forced_device;
    {
      ExecContext ctx;
      ctx.device = Device::cuda(0);
      const ContextScope scope(ctx);
      forced_device = teacher_forced(device_lm, prompt.to(Device::cuda(0)), answer, -1, ctx);
    }
    expect_same(forced_cpu.hidden, forced_device.hidden, "teacher-forced hidden states");
  }
}

// Both encoders loaded from the tiny checkpoint: one on the CPU, one on the stand-in.
template <typename Component>
struct OnBoth {
  Component cpu, device;
};

template <typename Component>
OnBoth<Component> load_on_both(const std::string& dir, Precision precision) {
  const Checkpoint checkpoint = Checkpoint::open(dir);
  LoadPolicy on_cpu(precision), on_device(precision);
  on_device.device = Device::cuda(0);
  Weights cpu_weights(checkpoint, on_cpu), device_weights(checkpoint, on_device);
  OnBoth<Component> both{Component::load(cpu_weights, load_config(dir)), Component::load(device_weights, load_config(dir))};
  cpu_weights.finish();
  device_weights.finish();
  return both;
}

TEST(StandInDevice, VisionEncoderAsOnTheCpu) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  StandInGpu stand_in;
  for (Precision precision : {Precision::F32, Precision::BF16}) {
    SCOPED_TRACE(precision == Precision::F32 ? "f32" : "bf16");
    const OnBoth<VisionEncoder> vit = load_on_both<VisionEncoder>(dir, precision);
    // The checkpoint's grid, and a smaller image (the position table resized by bicubic interpolation).
    for (const Tensor& pixels : {ops_test::random_tensor({2, 3, 448, 448}, 1), ops_test::random_tensor({1, 3, 224, 224}, 2)}) {
      StageRecorder cpu_stages, device_stages;
      const Tensor want = vit.cpu.forward(pixels, ExecContext::recording(&cpu_stages));
      const Tensor want_shuffled = vit.cpu.shuffled_features(pixels);
      ExecContext ctx = ExecContext::recording(&device_stages);
      ctx.device = Device::cuda(0);
      const ContextScope scope(ctx);
      const Tensor got = vit.device.forward(pixels, ctx);
      EXPECT_EQ(got.device(), Device::cuda(0));
      expect_same(want, got, "vit_embeds");
      ASSERT_EQ(cpu_stages.stages().size(), device_stages.stages().size());
      for (size_t i = 0; i < cpu_stages.stages().size(); ++i)
        expect_same(cpu_stages.stages()[i].second, device_stages.stages()[i].second, cpu_stages.stages()[i].first);
      expect_same(want_shuffled, vit.device.shuffled_features(pixels), "shuffled features");
    }
  }
}

// Records on both devices and compares every stage (the host copies the recorder keeps).
void expect_same_stages(const StageRecorder& cpu, const StageRecorder& device) {
  ASSERT_EQ(cpu.stages().size(), device.stages().size());
  for (size_t i = 0; i < cpu.stages().size(); ++i) {
    EXPECT_EQ(cpu.stages()[i].first, device.stages()[i].first);
    expect_same(cpu.stages()[i].second, device.stages()[i].second, cpu.stages()[i].first);
  }
}

TEST(StandInDevice, Sam2ImageEncoderAndDecoderAsOnTheCpu) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  StandInGpu stand_in;
  const OnBoth<sam2::Sam2Image> sam = load_on_both<sam2::Sam2Image>(dir, Precision::BF16);
  const int64_t S = sam.cpu.config.image_size;
  const Tensor image = ops_test::random_tensor({3, S, S}, 3, -2.f, 2.f);
  const Tensor language = ops_test::random_tensor({256}, 4);

  StageRecorder cpu_stages, device_stages;
  const sam2::FrameFeatures cpu_features = sam.cpu.encode(image, ExecContext::recording(&cpu_stages));
  const sam2::DecoderOutput want = sam.cpu.decode_conditioning(cpu_features, language.f32(),
                                                               ExecContext::recording(&cpu_stages));
  const sam2::DecoderOutput tracking = sam.cpu.decode(cpu_features.fpn2, cpu_features, nullptr);

  ExecContext ctx = ExecContext::recording(&device_stages);
  ctx.device = Device::cuda(0);
  const ContextScope scope(ctx);
  const sam2::FrameFeatures features = sam.device.encode(image, ctx);
  EXPECT_EQ(features.fpn2.device(), Device::cuda(0));
  const Tensor device_language = language.to(Device::cuda(0));
  const sam2::DecoderOutput got = sam.device.decode_conditioning(features, device_language.kernel_f32(), ctx);
  expect_same_stages(cpu_stages, device_stages);
  expect_same(want.low_res_mask, got.low_res_mask, "low-res mask");
  expect_same(want.sam_token, got.sam_token, "SAM token");
  EXPECT_EQ(want.iou, got.iou);
  EXPECT_EQ(want.object_score_logit, got.object_score_logit);
  const sam2::DecoderOutput got_tracking = sam.device.decode(features.fpn2, features, nullptr);
  expect_same(tracking.low_res_mask, got_tracking.low_res_mask, "tracking mask");
}

void expect_same_prediction(const Prediction& cpu, const Prediction& device, const std::string& what) {
  SCOPED_TRACE(what);
  EXPECT_EQ(cpu.text, device.text);
  EXPECT_EQ(cpu.generated_ids, device.generated_ids);
  EXPECT_EQ(cpu.phrases, device.phrases);
  EXPECT_EQ(cpu.scores, device.scores);
  ASSERT_EQ(cpu.masks.size(), device.masks.size());
  for (size_t k = 0; k < cpu.masks.size(); ++k) {
    ASSERT_EQ(cpu.masks[k].size(), device.masks[k].size());
    for (size_t t = 0; t < cpu.masks[k].size(); ++t) EXPECT_TRUE(cpu.masks[k][t] == device.masks[k][t]) << k << "/" << t;
  }
}

// The whole pipeline, loaded with --device cuda:0 onto the stand-in: image segmentation (every stage
// recorded), a visual prompt, greedy generation and a short video, each equal to the CPU model's.
TEST(StandInDevice, WholePipelineAsOnTheCpu) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  StandInGpu stand_in;
  ModelOptions on_device;
  on_device.precision = Precision::BF16;
  on_device.device = "cuda:0";
  const std::unique_ptr<Sa2vaModel> cpu = Sa2vaModel::load(dir, Precision::BF16);
  const std::unique_ptr<Sa2vaModel> device = Sa2vaModel::load(dir, on_device);

  const Request image = test::fixture_request(dir, test::fixture_case(dir, "image"));
  StageRecorder cpu_stages, device_stages;
  const Prediction want = cpu->predict(image, &cpu_stages);
  expect_same_prediction(want, device->predict(image, &device_stages), "image");
  ASSERT_FALSE(want.masks.empty());
  expect_same_stages(cpu_stages, device_stages);

  Request regions = image;
  Mask region;
  region.width = image.image.width;
  region.height = image.image.height;
  region.data.assign(static_cast<size_t>(region.width) * region.height, 0);
  for (int y = region.height / 4; y < region.height / 2; ++y)
    for (int x = region.width / 4; x < region.width / 2; ++x) region.data[static_cast<size_t>(y) * region.width + x] = 1;
  regions.mask_prompts.push_back(region);
  expect_same_prediction(cpu->predict(regions), device->predict(regions), "visual prompt");

  Request generated = test::fixture_request(dir, test::fixture_case(dir, "generate"));
  generated.generation.max_new_tokens = 8;
  expect_same_prediction(cpu->predict(generated), device->predict(generated), "generation");

  const nlohmann::json video_case = test::fixture_case(dir, "video");
  std::vector<Image> frames;
  // Three of its frames, the language model seeing two: two conditioning frames, then a tracked one
  // attending to their memories. Further tracked frames run the same device code (at ~6 s each
  // under the sanitizers, where this test runs too).
  for (const auto& f : video_case["frames"])
    if (frames.size() < 3) frames.push_back(load_image(dir + "/" + f.get<std::string>()));
  auto cpu_video = Video::from_frames(frames), device_video = Video::from_frames(frames);
  Request video = test::fixture_request(dir, video_case);
  video.video_llm_frames = 2;
  video.video = cpu_video.get();
  const Prediction video_want = cpu->predict(video);
  video.video = device_video.get();
  expect_same_prediction(video_want, device->predict(video), "video");
  EXPECT_EQ(video_want.masks.at(0).size(), frames.size());
}

}  // namespace
}  // namespace sa2va
