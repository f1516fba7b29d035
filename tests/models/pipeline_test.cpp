// The whole pipeline against the conformance fixtures: every case of sa2va-tiny run through
// Sa2vaModel::predict (the same path as `sa2va run` / `sa2va dump`), comparing the recorded stages.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "core/block_pool.h"
#include "core/stages.h"
#include "io/image.h"
#include "io/video.h"
#include "models/preprocess.h"
#include "core/profile.h"
#include "models/sa2va_model.h"
#include "test_util.h"

namespace sa2va {
namespace {
using json = nlohmann::json;

// `model` refuses `r` with an Error whose message holds `words`.
void expect_refused(const Sa2vaModel& model, const Request& r, const std::string& words) {
  try {
    model.predict(r);
    ADD_FAILURE() << "no error; expected one saying: " << words;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
  }
}

const Sa2vaModel& fixture_model(const std::string& dir, Precision precision) {
  static std::map<int, std::unique_ptr<Sa2vaModel>> models;
  auto& m = models[static_cast<int>(precision)];
  if (!m) m = Sa2vaModel::load(dir, precision);
  return *m;
}

Tensor stage(const StageRecorder& rec, const std::string& name) {
  for (const auto& [n, t] : rec.stages())
    if (n == name) return t;
  ADD_FAILURE() << "stage " << name << " was not recorded";
  return Tensor::zeros({1});
}

void expect_ids_equal(const Tensor& a, const Tensor& b) {
  ASSERT_EQ(a.numel(), b.numel());
  for (int64_t i = 0; i < a.numel(); ++i) ASSERT_EQ(a.data<int64_t>()[i], b.data<int64_t>()[i]) << "at " << i;
}

// The video case's first `n` frames as a video in memory.
std::unique_ptr<Video> first_frames(const std::string& dir, const json& video_case, int n) {
  std::vector<Image> frames;
  for (int i = 0; i < n; ++i) frames.push_back(load_image(dir + "/" + video_case["frames"][i].get<std::string>()));
  return Video::from_frames(std::move(frames));
}

// The video case's frames copied into a folder of frames named 00000.png, 00001.png, ...
std::string fixture_frames_folder(const std::string& dir, const json& video_case, const std::string& tag) {
  const std::string frames = test::temp_dir(tag);
  int i = 0;
  for (const auto& f : video_case["frames"]) {
    char name[32];
    std::snprintf(name, sizeof(name), "/%05d.png", i++);
    std::filesystem::copy_file(dir + "/" + f.get<std::string>(), frames + name);
  }
  return frames;
}

TEST(PipelineConformance, ImageCaseEveryStage) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  const json c = test::fixture_case(dir, "image");
  const std::string golden = dir + "/goldens/image.safetensors";
  StageRecorder rec;
  const Prediction p = fixture_model(dir, Precision::F32).predict(test::fixture_request(dir, c), &rec);
  EXPECT_EQ(p.text, c["prediction"].get<std::string>());
  expect_ids_equal(stage(rec, "prompt_ids"), test::load_golden(golden, "prompt_ids"));
  expect_ids_equal(stage(rec, "input_ids"), test::load_golden(golden, "input_ids"));
  EXPECT_EQ(stage(rec, "tiles_u8").to_vector(), test::load_golden(golden, "tiles_u8").to_vector());
  EXPECT_TRUE(test::close_rel(stage(rec, "vit_embeds"), test::load_golden(golden, "vit_embeds"), 1e-4));
  EXPECT_TRUE(test::close_rel(stage(rec, "llm.last_hidden_state"), test::load_golden(golden, "llm.last_hidden_state"), 1e-4));
  EXPECT_TRUE(test::close_rel(stage(rec, "seg.embeds"), test::load_golden(golden, "seg.embeds"), 1e-4));
  EXPECT_TRUE(test::close_rel(test::strided(stage(rec, "sam.fpn.2"), 16), test::load_golden(golden, "sam.fpn.2.sub16"), 1e-4));
  EXPECT_TRUE(test::close_rel(stage(rec, "seg0.mask_logits_lowres"), test::load_golden(golden, "seg0.mask_logits_lowres"), 1e-4));
  const double iou = test::mask_iou(stage(rec, "seg0.mask"), test::load_golden(golden, "seg0.mask"));
  EXPECT_GE(iou, 0.999);
  ASSERT_EQ(p.masks.size(), 1u);
  ASSERT_EQ(p.masks[0].size(), 1u);
  EXPECT_EQ(p.masks[0][0].width, 600);
  EXPECT_EQ(p.masks[0][0].height, 280);
}

TEST(PipelineConformance, GcgAnswerGivesOneMaskPerSegWithPhrases) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  const json c = test::fixture_case(dir, "multiseg");
  const std::string golden = dir + "/goldens/multiseg.safetensors";
  StageRecorder rec;
  const Prediction p = fixture_model(dir, Precision::F32).predict(test::fixture_request(dir, c), &rec);
  ASSERT_EQ(p.masks.size(), 2u);
  EXPECT_EQ(p.phrases, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(p.caption, "a and b .");
  EXPECT_TRUE(test::close_rel(stage(rec, "seg.embeds"), test::load_golden(golden, "seg.embeds"), 1e-4));
  for (int k = 0; k < 2; ++k) {
    const std::string name = "seg" + std::to_string(k);
    EXPECT_TRUE(test::close_rel(stage(rec, name + ".mask_logits_lowres"), test::load_golden(golden, name + ".mask_logits_lowres"), 1e-4));
    EXPECT_GE(test::mask_iou(stage(rec, name + ".mask"), test::load_golden(golden, name + ".mask")), 0.999);
  }
}

TEST(PipelineConformance, VisualPromptRegions) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  const json c = test::fixture_case(dir, "vp");
  const std::string golden = dir + "/goldens/vp.safetensors";
  Request r = test::fixture_request(dir, c);
  const Tensor regions = test::load_golden(golden, "mask_prompts_u8");
  for (int64_t k = 0; k < regions.size(0); ++k) {
    Mask m;
    m.height = static_cast<int>(regions.size(1));
    m.width = static_cast<int>(regions.size(2));
    const uint8_t* p = regions.data<uint8_t>() + k * m.width * m.height;
    m.data.assign(p, p + m.width * m.height);
    r.mask_prompts.push_back(m);
  }
  StageRecorder rec;
  fixture_model(dir, Precision::F32).predict(r, &rec);
  expect_ids_equal(stage(rec, "prompt_ids"), test::load_golden(golden, "prompt_ids"));
  EXPECT_TRUE(test::close_rel(stage(rec, "llm.inputs_embeds"), test::load_golden(golden, "llm.inputs_embeds"), 1e-4));
  EXPECT_TRUE(test::close_rel(stage(rec, "seg.embeds"), test::load_golden(golden, "seg.embeds"), 1e-4));
  EXPECT_GE(test::mask_iou(stage(rec, "seg0.mask"), test::load_golden(golden, "seg0.mask")), 0.999);
}

TEST(PipelineConformance, GreedyGenerationMatches) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  const json c = test::fixture_case(dir, "generate");
  const std::string golden = dir + "/goldens/generate.safetensors";
  const Request r = test::fixture_request(dir, c);
  StageRecorder rec;
  const Prediction p = fixture_model(dir, Precision::F32).predict(r, &rec);
  expect_ids_equal(stage(rec, "generated_ids"), test::load_golden(golden, "generated_ids"));
  EXPECT_EQ(p.text, c["prediction"].get<std::string>());
  EXPECT_TRUE(p.masks.empty());
}

TEST(PipelineConformance, VideoCaseAllFrames) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  const json c = test::fixture_case(dir, "video");
  const std::string golden = dir + "/goldens/video.safetensors";
  const std::string frames = fixture_frames_folder(dir, c, "frames");
  auto video = Video::open(frames);
  Request r = test::fixture_request(dir, c);
  r.video = video.get();
  StageRecorder rec;
  const Prediction p = fixture_model(dir, Precision::F32).predict(r, &rec);
  expect_ids_equal(stage(rec, "prompt_ids"), test::load_golden(golden, "prompt_ids"));
  EXPECT_TRUE(test::close_rel(stage(rec, "vit_embeds"), test::load_golden(golden, "vit_embeds"), 1e-4));
  EXPECT_TRUE(test::close_rel(stage(rec, "seg.embeds"), test::load_golden(golden, "seg.embeds"), 1e-4));
  EXPECT_TRUE(test::close_rel(stage(rec, "seg0.mask_logits_lowres"), test::load_golden(golden, "seg0.mask_logits_lowres"), 1e-4));
  const Tensor mask = stage(rec, "seg0.mask"), want = test::load_golden(golden, "seg0.mask");
  ASSERT_EQ(mask.shape(), want.shape());
  for (int64_t t = 0; t < want.size(0); ++t)
    EXPECT_GE(test::mask_iou(mask.select(0, t), want.select(0, t)), 0.999) << "frame " << t;
  ASSERT_EQ(p.masks.size(), 1u);
  EXPECT_EQ(p.masks[0].size(), 6u);
}

// on_answer hands the answer over once, before the first mask, with the final text fields;
// on_mask then streams every frame of every [SEG].
TEST(Pipeline, AnswerIsHandedOverBeforeTheMasks) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  const json c = test::fixture_case(dir, "video");
  auto video = first_frames(dir, c, 3);
  Request r = test::fixture_request(dir, c);
  r.video = video.get();
  std::vector<std::string> events;
  Prediction answer;
  r.on_answer = [&](const Prediction& p) {
    events.push_back("answer");
    answer = p;
  };
  r.on_mask = [&](int seg, int64_t frame, const Mask&) {
    events.push_back("mask " + std::to_string(seg) + " " + std::to_string(frame));
  };
  const Prediction p = fixture_model(dir, Precision::F32).predict(r);
  const std::vector<std::string> want = {"answer", "mask 0 0", "mask 0 1", "mask 0 2"};
  EXPECT_EQ(events, want);
  EXPECT_EQ(answer.text, p.text);
  EXPECT_EQ(answer.text, c["prediction"].get<std::string>());
  EXPECT_EQ(answer.past_text, p.past_text);
  EXPECT_EQ(answer.generated_ids, p.generated_ids);
  EXPECT_EQ(answer.phrases, p.phrases);
}

// Frames of different sizes, as newer upstream accepts them: every frame is processed at its own
// size (448x448 for the language model, 1024x1024 for SAM2) and the masks come out at the first
// frame's size.
TEST(Pipeline, VideoFramesOfDifferentSizesGiveMasksAtTheFirstFramesSize) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  const json c = test::fixture_case(dir, "video");
  const Sa2vaModel& m = fixture_model(dir, Precision::F32);
  const Tensor golden = test::load_golden(dir + "/goldens/video.safetensors", "seg0.mask");
  auto predict = [&](const std::string& frames, StageRecorder& rec) {
    auto video = Video::open(frames);
    Request r = test::fixture_request(dir, c);
    r.video = video.get();
    return m.predict(r, &rec);
  };
  {
    // The last frame (tracked through memory, not seen by the language model) is 200x150.
    const std::string frames = fixture_frames_folder(dir, c, "mixed-sizes-last");
    const Image small = preprocess::resize_bicubic(load_image(frames + "/00005.png"), 200, 150);
    save_png_rgb(frames + "/00005.png", small);
    StageRecorder rec;
    const Prediction p = predict(frames, rec);
    ASSERT_EQ(p.masks.size(), 1u);
    ASSERT_EQ(p.masks[0].size(), 6u);
    for (const Mask& mask : p.masks[0]) {
      EXPECT_EQ(mask.width, 320);
      EXPECT_EQ(mask.height, 240);
    }
    const Tensor masks = stage(rec, "seg0.mask"), lowres = stage(rec, "seg0.mask_logits_lowres");
    ASSERT_EQ(masks.shape(), (Shape{6, 240, 320}));
    // Frames 0..4 are conditioning frames, untouched by frame 5.
    for (int64_t t = 0; t < 5; ++t)
      EXPECT_GE(test::mask_iou(masks.select(0, t), golden.select(0, t)), 0.999) << "frame " << t;
    // Frame 5: its low-res logits brought to the first frame's 320x240.
    const Tensor want5 = preprocess::threshold_mask(preprocess::postprocess_mask_logits(lowres.select(0, 5), 240, 320));
    EXPECT_EQ(test::mask_iou(masks.select(0, 5), want5), 1.0);
    // The same scene at a lower resolution: close to the full-size frame's mask.
    EXPECT_GE(test::mask_iou(masks.select(0, 5), golden.select(0, 5)), 0.9);
  }
  {
    // Two frames, the first one 200x150: masks are 200x150, and each 448x448 key frame the
    // language model sees is its frame resized from its own size.
    const std::string frames = test::temp_dir("mixed-sizes-first");
    const Image small = preprocess::resize_bicubic(load_image(dir + "/" + c["frames"][0].get<std::string>()), 200, 150);
    const Image full = load_image(dir + "/" + c["frames"][1].get<std::string>());
    save_png_rgb(frames + "/00000.png", small);
    save_png_rgb(frames + "/00001.png", full);
    StageRecorder rec;
    const Prediction p = predict(frames, rec);
    ASSERT_EQ(p.masks.size(), 1u);
    ASSERT_EQ(p.masks[0].size(), 2u);
    for (const Mask& mask : p.masks[0]) {
      EXPECT_EQ(mask.width, 200);
      EXPECT_EQ(mask.height, 150);
    }
    const Tensor key = stage(rec, "frames_448_u8").contiguous();
    ASSERT_EQ(key.numel(), 2 * 448 * 448 * 3);
    const Image want0 = preprocess::resize_bicubic(small, 448, 448), want1 = preprocess::resize_bicubic(full, 448, 448);
    EXPECT_TRUE(std::equal(want0.rgb.begin(), want0.rgb.end(), key.data<uint8_t>()));
    EXPECT_TRUE(std::equal(want1.rgb.begin(), want1.rgb.end(), key.data<uint8_t>() + 448 * 448 * 3));
    EXPECT_EQ(stage(rec, "seg0.mask").shape(), (Shape{2, 150, 200}));
  }
}

TEST(Pipeline, UniformKeyFramesConditionSam2OnTheFramesTheLlmSaw) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  const json c = test::fixture_case(dir, "video");
  const std::string frames = fixture_frames_folder(dir, c, "uniform-frames");
  auto video = Video::open(frames);
  Request r = test::fixture_request(dir, c);
  r.video = video.get();
  r.video_llm_frames = 2;
  r.video_uniform_frames = true;  // frames 1 and 4 of 6
  StageRecorder rec;
  const Prediction p = fixture_model(dir, Precision::F32).predict(r, &rec);
  const Tensor key = stage(rec, "frames_448_u8");
  ASSERT_EQ(key.size(0), 2);
  const Tensor ids = stage(rec, "prompt_ids");
  int64_t image_tokens = 0;
  for (int64_t k = 0; k < ids.numel(); ++k) image_tokens += ids.data<int64_t>()[k] == 151667;
  EXPECT_EQ(image_tokens, 2 * 256);
  ASSERT_EQ(p.masks.size(), 1u);
  ASSERT_EQ(p.masks[0].size(), 6u);
  // The language model saw frames 1 and 4: compare with the golden 448x448 frames (strided by 4).
  const Tensor golden = test::load_golden(dir + "/goldens/video.safetensors", "frames_448_u8.sub4");
  const int64_t expected_frame[2] = {1, 4};
  for (int64_t f = 0; f < 2; ++f)
    for (int64_t y = 0; y < 112; ++y)
      for (int64_t x = 0; x < 112; ++x)
        for (int64_t ch = 0; ch < 3; ++ch)
          ASSERT_EQ(key.data<uint8_t>()[((f * 448 + 4 * y) * 448 + 4 * x) * 3 + ch],
                    golden.data<uint8_t>()[((expected_frame[f] * 112 + y) * 112 + x) * 3 + ch])
              << "key frame " << f;
  for (const Mask& m : p.masks[0]) EXPECT_EQ(m.data.size(), 320u * 240u);
}

TEST(Pipeline, F32CheckpointsAreUsedInPlace) {
  // Some releases store F32 weights: those are read straight from the map in f32 mode.
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  const std::string f32_dir = test::temp_dir("f32-checkpoint");
  {
    Checkpoint ck = Checkpoint::open(dir);
    std::vector<std::pair<std::string, Tensor>> tensors;
    for (const std::string& name : ck.names()) tensors.emplace_back(name, ck.get(name).to(DType::F32));
    write_safetensors(f32_dir + "/model.safetensors", tensors);
  }
  for (const char* file : {"config.json", "tokenizer.json"})
    std::filesystem::copy_file(dir + "/" + file, f32_dir + "/" + file);
  const json c = test::fixture_case(dir, "image");
  for (Precision precision : {Precision::F32, Precision::BF16}) {
    auto model = Sa2vaModel::load(f32_dir, precision);
    StageRecorder rec;
    model->predict(test::fixture_request(dir, c), &rec);
    const double tol = precision == Precision::F32 ? 1e-4 : 0.2;
    EXPECT_TRUE(test::close_rel(stage(rec, "seg.embeds"),
                                test::load_golden(dir + "/goldens/image.safetensors", "seg.embeds"), tol));
  }
}

TEST(PipelineConformance, Bf16ModeMasksAgree) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  const json c = test::fixture_case(dir, "image");
  const std::string golden = dir + "/goldens/image.safetensors";
  StageRecorder rec;
  fixture_model(dir, Precision::BF16).predict(test::fixture_request(dir, c), &rec);
  const test::Diff d = test::compare(stage(rec, "seg0.mask_logits_lowres"), test::load_golden(golden, "seg0.mask_logits_lowres"));
  const double iou = test::mask_iou(stage(rec, "seg0.mask"), test::load_golden(golden, "seg0.mask"));
  std::cout << "bf16 mode: low-res logits max|diff|/rms " << d.rel() << ", mask IoU " << iou << "\n";
  EXPECT_GE(iou, 0.99);
}

TEST(Pipeline, DestroyedModelReturnsItsLargeBuffers) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  {
    auto model = Sa2vaModel::load(dir, Precision::F32);
#if !defined(__SANITIZE_ADDRESS__)
    EXPECT_GT(block_pool::stats().mapped_bytes, 0u);  // the f32 weights of the fixture include large tensors
#endif
  }
  EXPECT_EQ(block_pool::stats().idle_bytes, 0u);
}

TEST(Pipeline, TextOnlyAndMultiTurn) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  const Sa2vaModel& m = fixture_model(dir, Precision::F32);
  Request r;
  r.text = "Hello, who are you?";
  r.generation.max_new_tokens = 4;
  const Prediction first = m.predict(r);
  EXPECT_TRUE(first.masks.empty());
  EXPECT_EQ(first.generated_ids.size(), 4u);
  EXPECT_EQ(first.past_text.rfind("<|im_start|>user\nHello, who are you?<|im_end|>\n<|im_start|>assistant\n", 0), 0u);
  Request second = r;
  second.text = "And then?";
  second.past_text = first.past_text;
  StageRecorder rec;
  m.predict(second, &rec);
  // The second prompt is the whole first turn followed by the new instruction.
  const Tensor ids = stage(rec, "prompt_ids");
  const std::vector<int32_t> expected = m.tokenizer->encode(first.past_text + "<|im_start|>user\nAnd then?<|im_end|>\n<|im_start|>assistant\n");
  ASSERT_EQ(ids.numel(), static_cast<int64_t>(expected.size()));
  for (size_t i = 0; i < expected.size(); ++i) EXPECT_EQ(ids.data<int64_t>()[i], expected[i]);
}

TEST(Pipeline, LaterTurnWithoutTheImageGivesNoMasks) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  const Sa2vaModel& m = fixture_model(dir, Precision::F32);
  // The conversation so far was about an image (its tokens are in past_text), but this request
  // carries no image or video: a [SEG] in the answer cannot become a mask.
  Request r;
  r.past_text = "<|im_start|>user\n<img><IMG_CONTEXT><IMG_CONTEXT></img>\nWhat is this?<|im_end|>\n"
                "<|im_start|>assistant\nA dog.<|im_end|>\n";
  r.text = "Please segment it.";
  r.forced_answer = "Sure, [SEG].";
  const Prediction p = m.predict(r);
  EXPECT_EQ(p.text, "Sure, [SEG].<|im_end|>");
  EXPECT_TRUE(p.masks.empty());
  ASSERT_EQ(p.phrases.size(), 1u);  // one (empty) phrase per [SEG], as for image answers
  r.past_text = "<|im_start|>user\n<image>\nWhat is this?<|im_end|>\n<|im_start|>assistant\nA dog.<|im_end|>\n";
  EXPECT_TRUE(m.predict(r).masks.empty());
}

int64_t profiled_calls(const std::string& stage) {
  for (const auto& e : profile::entries())
    if (e.stage == stage) return e.calls;
  return 0;
}

TEST(Pipeline, BadRequestsAreErrors) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  const Sa2vaModel& m = fixture_model(dir, Precision::F32);
  Request empty;
  empty.text = "   ";
  EXPECT_THROW(m.predict(empty), Error);
  Request vp_without_image;
  vp_without_image.text = "hi";
  vp_without_image.mask_prompts.push_back(Mask{2, 2, {1, 0, 0, 1}});
  EXPECT_THROW(m.predict(vp_without_image), Error);
  Request short_mask = test::fixture_request(dir, test::fixture_case(dir, "image"));
  short_mask.mask_prompts.push_back(Mask{2, 2, {1, 0, 0}});  // 3 values for a 2x2 mask
  EXPECT_THROW(m.predict(short_mask), Error);
  const auto expect_error = [&](const Request& r, const std::string& words) { expect_refused(m, r, words); };
  // Generation options and mask prompts are checked before the encoders run.
  Request bad_top_p = test::fixture_request(dir, test::fixture_case(dir, "generate"));
  bad_top_p.generation.top_p = 1.5f;
  Request bad_region = test::fixture_request(dir, test::fixture_case(dir, "image"));
  bad_region.mask_prompts.push_back(Mask{0, 0, {}});
  set_profiling(true);
  profile::reset();
  expect_error(bad_top_p, "top_p must be in (0, 1]");
  expect_error(bad_region, "mask prompt 1");
  EXPECT_EQ(profiled_calls("vision.internvit"), 0);
  set_profiling(false);
  // "<image>" twice; an image arriving on a later turn of a text-only conversation, which needs its
  // place in the text.
  Request twice = test::fixture_request(dir, test::fixture_case(dir, "image"));
  twice.text = "<image><image>Please segment the red circle.";
  expect_error(twice, "more than once");
  Request chat;
  chat.text = "Hello.";
  chat.generation.max_new_tokens = 2;
  Request later = test::fixture_request(dir, test::fixture_case(dir, "image"));
  later.past_text = m.predict(chat).past_text;
  later.text = "Please segment the red circle.";
  expect_error(later, "did not start with");
  later.text = "<image>\nPlease segment the red circle.";
  EXPECT_FALSE(m.predict(later).text.empty());
  // A temperature whose inverse overflows would turn the scores into inf - inf.
  Request tiny_temperature = test::fixture_request(dir, test::fixture_case(dir, "generate"));
  tiny_temperature.generation.temperature = 1e-40f;
  expect_error(tiny_temperature, "too small to divide by");
  // A caller's own Video: a frame whose buffer does not match its size, and more frames than an int counts.
  struct BadVideo final : Video {
    int64_t frames;
    explicit BadVideo(int64_t n) : frames(n) {}
    int width() const override { return 3000; }
    int height() const override { return 3000; }
    int64_t frame_count() const override { return frames; }
    double fps() const override { return 0; }
    Image frame(int64_t) override {
      Image image;
      image.width = image.height = 3000;
      image.rgb.assign(30, 0);
      return image;
    }
  };
  Request bad_frame = test::fixture_request(dir, test::fixture_case(dir, "video"));
  BadVideo short_buffer(2);
  bad_frame.video = &short_buffer;
  expect_error(bad_frame, "video frame 0: 3000x3000 with 30 bytes of RGB");
  BadVideo endless(int64_t{1} << 32);
  bad_frame.video = &endless;
  expect_error(bad_frame, "1 to 2^31 - 1 are supported");
  // More frames for the language model than its context holds: refused before a frame is decoded.
  BadVideo long_video(int64_t{1} << 20);
  bad_frame.video = &long_video;
  bad_frame.video_llm_frames = 1 << 20;
  expect_error(bad_frame, "tokens exceed the language model's context of 32768 tokens");
  // A conversation grown past the context.
  Request long_text;
  long_text.text = "Hello.";
  long_text.past_text.reserve(40000 * 6);
  for (int i = 0; i < 40000; ++i) long_text.past_text += " word";
  expect_error(long_text, "more than the language model's context of 32768 tokens");
}

// A model without RoPE scaling ends its answer at its trained context ("length"), whatever
// max_new_tokens asks (here a copy of the tiny model whose context is 40 positions).
TEST(Pipeline, AnswersEndAtTheContextOfAModelWithoutRopeScaling) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  namespace fs = std::filesystem;
  const std::string copy = test::temp_dir("short-context");
  for (const char* file : {"model.safetensors", "tokenizer.json"}) fs::create_symlink(fs::path(dir) / file, fs::path(copy) / file);
  nlohmann::json config;
  std::ifstream(dir + "/config.json") >> config;
  ASSERT_TRUE(config["llm_config"]["rope_scaling"].is_null());
  config["llm_config"]["max_position_embeddings"] = 40;
  std::ofstream(copy + "/config.json") << config.dump();
  const auto model = Sa2vaModel::load(copy, Precision::F32);
  Request r;
  r.text = "Hello.";
  r.generation.max_new_tokens = 200;
  const Prediction p = model->predict(r);
  EXPECT_EQ(p.prompt_tokens + static_cast<int64_t>(p.generated_ids.size()), 40) << p.text;
  EXPECT_EQ(p.finish_reason, "length");
  // The same request on the model as released (context 32768) generates all it asks for.
  EXPECT_EQ(fixture_model(dir, Precision::F32).predict(r).generated_ids.size(), 200u);
}

// Visual prompts as upstream: a mask of any size is sampled straight to the 16x16 token grid with
// PyTorch's legacy nearest (src = floor(dst * in / 16)), and a region that selects no cell is kept
// with no tokens ("region2<vp></vp>") instead of being refused.
TEST(Pipeline, VisualPromptsOfAnySizeAndRegionsCoveringNoCell) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  const Sa2vaModel& m = fixture_model(dir, Precision::F32);
  Request r = test::fixture_request(dir, test::fixture_case(dir, "vp"));  // a 600x280 image: 2 tiles + thumbnail
  // Region 1: a 5x3 mask with only pixel (x 2, y 1) set. Rows read y = floor(i * 3/16): 1 for
  // i = 6..10; columns read x = floor(j * 5/16): 2 for j = 7..9. So 5 x 3 = 15 cells.
  Mask small{5, 3, std::vector<uint8_t>(15, 0)};
  small.data[1 * 5 + 2] = 1;
  // Region 2: a 40x40 mask with only pixel (1, 1) set: rows and columns read floor(k * 2.5) =
  // 0, 2, 5, 7, ... and never 1, so the region covers no cell.
  Mask missed{40, 40, std::vector<uint8_t>(1600, 0)};
  missed.data[1 * 40 + 1] = 1;
  r.mask_prompts = {small, missed};
  StageRecorder rec;
  const Prediction p = m.predict(r, &rec);

  const Tensor grid = stage(rec, "mask_prompts_16x16").contiguous();
  ASSERT_EQ(grid.shape(), (Shape{2, 16, 16}));
  std::vector<int64_t> region1_cells;
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 16; ++j) {
      const bool inside = i >= 6 && i <= 10 && j >= 7 && j <= 9;
      EXPECT_EQ(grid.data<uint8_t>()[i * 16 + j], inside ? 1 : 0) << "region 1 cell " << i << "," << j;
      EXPECT_EQ(grid.data<uint8_t>()[256 + i * 16 + j], 0) << "region 2 cell " << i << "," << j;
      if (inside) region1_cells.push_back(i * 16 + j);
    }
  ASSERT_EQ(region1_cells.size(), 15u);

  std::string region1;
  for (int k = 0; k < 15; ++k) region1 += "<IMG_CONTEXT>";
  EXPECT_NE(p.past_text.find("</img>\nThere are 2 part regions in the picture: region1<vp>" + region1 +
                             "</vp>, region2<vp></vp>.\nPlease segment region1."),
            std::string::npos)
      << p.past_text.substr(0, 200);
  const Tensor ids = stage(rec, "prompt_ids");
  int64_t slots = 0;
  std::vector<int64_t> slot_positions;
  for (int64_t i = 0; i < ids.numel(); ++i)
    if (ids.data<int64_t>()[i] == m.img_context_id) {
      ++slots;
      slot_positions.push_back(i);
    }
  ASSERT_EQ(slots, 3 * 256 + 15);

  // The 15 region slots hold the thumbnail's (last tile's) tokens at those cells, in raster order.
  const Tensor vit = stage(rec, "vit_embeds").to(DType::F32).contiguous();
  const Tensor embeds = stage(rec, "llm.inputs_embeds").to(DType::F32).contiguous();
  ASSERT_EQ(vit.size(0), 3);
  const int64_t D = vit.size(2);
  for (size_t k = 0; k < region1_cells.size(); ++k) {
    const float* want = vit.f32() + (2 * 256 + region1_cells[k]) * D;
    const float* got = embeds.f32() + slot_positions[3 * 256 + k] * D;
    for (int64_t d = 0; d < D; ++d) ASSERT_EQ(got[d], want[d]) << "region slot " << k << " dim " << d;
  }
  ASSERT_EQ(p.masks.size(), 1u);  // the forced "Sure, [SEG]." still segments
}

TEST(Pipeline, GcgHelpers) {
  using Phrases = std::vector<std::string>;
  EXPECT_EQ(extract_phrases("<p> A man </p> [SEG] riding <p> a horse </p> [SEG].<|im_end|>"),
            (Phrases{"A man", "a horse"}));
  EXPECT_EQ(clean_caption("<p> A man </p> [SEG] riding <p> a horse </p> [SEG].<|im_end|>"), "A man riding a horse .");
  EXPECT_TRUE(extract_phrases("no phrases [SEG]").empty());

  // Every '\n' is deleted, not turned into a space (also inside tags and phrases).
  EXPECT_EQ(extract_phrases("<p>A\nman</p> [SEG]"), (Phrases{"Aman"}));
  EXPECT_EQ(clean_caption("<p>A\nman</p> [SEG] is\nhere"), "Aman ishere");
  EXPECT_EQ(extract_phrases("<p\n>dog</p\n> [SEG]"), (Phrases{"dog"}));
  // "  " -> " " in one pass: three or four spaces inside a phrase leave two.
  EXPECT_EQ(extract_phrases("<p>a   b</p> <p>c    d</p> <p>e  f</p>"), (Phrases{"a  b", "c  d", "e f"}));
  EXPECT_EQ(clean_caption("<p>a    b</p> [SEG]"), "a b");
  // "<s>" is removed first, in one pass, so "<<s>p>" becomes the tag "<p>".
  EXPECT_EQ(extract_phrases("<s><<s>p>x</p> [SEG]"), (Phrases{"x"}));
  // Only the text after the last "ASSISTANT: " counts.
  EXPECT_EQ(extract_phrases("<p>cat</p> USER: hi ASSISTANT: <p>dog</p> [SEG]"), (Phrases{"dog"}));
  EXPECT_EQ(clean_caption("<p>cat</p> ASSISTANT: x ASSISTANT: <p>dog</p> [SEG] runs."), "dog runs.");
  // Quotes: ' is stripped at both ends after collapsing, then whitespace is trimmed again.
  EXPECT_EQ(clean_caption("' <p>a</p> [SEG] '"), "a");
  EXPECT_EQ(clean_caption("''it's <p>Bob's</p> [SEG]''"), "it's Bob's");
  // An unclosed <p> gives no phrase; a '<' with no '>' after it stays in the caption.
  EXPECT_EQ(extract_phrases("<p>a</p> [SEG] <p>b"), (Phrases{"a"}));
  EXPECT_EQ(clean_caption("<p>a</p> [SEG] <p>b"), "a b");
  EXPECT_EQ(clean_caption("1 < 2"), "1 < 2");
  EXPECT_EQ(clean_caption("a <b> c <d"), "a c <d");
  // Tags are removed before [SEG], and [SEG] in one pass.
  EXPECT_EQ(clean_caption("x [SE<i>G] y [SE[SEG]G]"), "x y [SEG]");
  // Empty phrases; Python whitespace (\r, \t, U+00A0, U+3000) is trimmed and collapsed.
  EXPECT_EQ(extract_phrases("<p></p> [SEG] <p> \r\t</p>"), (Phrases{"", ""}));
  EXPECT_EQ(extract_phrases("<p>\u3000x\u00a0</p>"), (Phrases{"x"}));
  EXPECT_EQ(clean_caption("a\u00a0\u00a0b\u2003c\x1f" "d"), "a b c d");
  EXPECT_EQ(clean_caption("caf\u00e9 \u00e0"), "caf\u00e9 \u00e0");  // non-space multi-byte text is kept
  EXPECT_EQ(clean_caption(""), "");
  EXPECT_EQ(clean_caption("''"), "");
}

}  // namespace
}  // namespace sa2va

namespace sa2va {
namespace {

TEST(Pipeline, TextStreamsAsItIsGeneratedAndContentDropsTheEndOfTurn) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  const json c = test::fixture_case(dir, "generate");
  Request r = test::fixture_request(dir, c);  // with the case's token limit
  std::vector<std::string> pieces;
  r.on_text = [&](const std::string& piece) { pieces.push_back(piece); };
  set_profiling(true);
  profile::reset();
  const Prediction p = fixture_model(dir, Precision::F32).predict(r);
  set_profiling(false);
  // A decoding speed counts whole tokens: every token after the first is one decode_token (layers
  // and output head); the head also runs once after the prefill.
  EXPECT_EQ(profiled_calls("llm.decode_token"), static_cast<int64_t>(p.generated_ids.size()) - 1);
  EXPECT_EQ(profiled_calls("llm.decode_step"), static_cast<int64_t>(p.generated_ids.size()) - 1);
  EXPECT_EQ(profiled_calls("llm.head"), static_cast<int64_t>(p.generated_ids.size()));
  EXPECT_EQ(pieces.size(), p.generated_ids.size());
  std::string streamed;
  for (const auto& piece : pieces) streamed += piece;
  EXPECT_EQ(streamed, p.text);
  EXPECT_EQ(p.finish_reason, "length");
  EXPECT_EQ(p.content, p.text);  // no end-of-turn marker: the limit ended it

  const json forced = test::fixture_case(dir, "image");
  Request f = test::fixture_request(dir, forced);
  f.on_text = [&](const std::string&) { ADD_FAILURE() << "a forced answer is not streamed"; };
  const Prediction q = fixture_model(dir, Precision::F32).predict(f);
  EXPECT_EQ(q.text, "Sure, [SEG].<|im_end|>");
  EXPECT_EQ(q.content, "Sure, [SEG].");
  EXPECT_EQ(q.finish_reason, "stop");
}

// OpenAI's "stop": generation ends once the answer holds a stop string; the content ends before it
// and the streamed pieces add up to that content (the string, and its start, are never handed over).
TEST(Pipeline, StopStringsEndTheAnswerBeforeThem) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  const json c = test::fixture_case(dir, "generate");
  Request r = test::fixture_request(dir, c);
  r.generation.max_new_tokens = 24;
  const Prediction whole = fixture_model(dir, Precision::F32).predict(r);
  ASSERT_GE(whole.content.size(), 12u) << whole.content;
  // A stop string taken from the middle of the unstopped answer.
  const std::string stop = whole.content.substr(whole.content.size() / 2, 3);
  const size_t at = whole.content.find(stop);
  r.generation.stop = {"never in this answer", stop};
  std::string streamed;
  r.on_text = [&](const std::string& piece) { streamed += piece; };
  const Prediction p = fixture_model(dir, Precision::F32).predict(r);
  EXPECT_EQ(p.content, whole.content.substr(0, at));
  EXPECT_EQ(streamed, p.content);
  EXPECT_EQ(p.finish_reason, "stop");
  ASSERT_LT(p.generated_ids.size(), whole.generated_ids.size());
  EXPECT_TRUE(std::equal(p.generated_ids.begin(), p.generated_ids.end(), whole.generated_ids.begin()));
  EXPECT_NE(p.text.find(stop), std::string::npos);  // the raw answer keeps what was generated
  r.generation.stop = {""};
  EXPECT_THROW(fixture_model(dir, Precision::F32).predict(r), Error);
}

TEST(Pipeline, ShouldStopCancelsTheRequest) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  const json c = test::fixture_case(dir, "generate");
  Request r = test::fixture_request(dir, c);
  r.generation.max_new_tokens = 64;
  int polls = 0, tokens = 0;
  r.on_text = [&](const std::string&) { ++tokens; };
  r.should_stop = [&] { return ++polls > 4; };  // stops after a few tokens
  EXPECT_THROW(fixture_model(dir, Precision::F32).predict(r), Cancelled);
  EXPECT_GT(tokens, 0);
  EXPECT_LT(tokens, 64);
  r.should_stop = [] { return false; };
  r.generation.max_new_tokens = 2;
  EXPECT_EQ(fixture_model(dir, Precision::F32).predict(r).generated_ids.size(), 2u);
}

// A conversation about one image with a cache: the encoders run on the first turn only, and every
// turn's answer and masks are those of a request without a cache.
TEST(Pipeline, VisualCacheRunsTheEncodersOnceAcrossTurns) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  const json c = test::fixture_case(dir, "image");
  const Sa2vaModel& m = fixture_model(dir, Precision::F32);
  Request first = test::fixture_request(dir, c);
  const Prediction plain1 = m.predict(first);
  Request second = test::fixture_request(dir, c);
  second.text = "And the blue box?";
  second.past_text = plain1.past_text;
  const Prediction plain2 = m.predict(second);

  const std::shared_ptr<VisualCache> cache = VisualCache::create();
  first.cache = second.cache = cache;
  set_profiling(true);
  profile::reset();
  const Prediction cached1 = m.predict(first);
  EXPECT_GT(cache->bytes(), 0u);
  const Prediction cached2 = m.predict(second);
  EXPECT_EQ(profiled_calls("vision.internvit"), 1);
  EXPECT_EQ(profiled_calls("sam2.image_encoder"), 1);
  set_profiling(false);
  for (const auto& [a, b] : {std::pair{&plain1, &cached1}, std::pair{&plain2, &cached2}}) {
    EXPECT_EQ(a->text, b->text);
    EXPECT_EQ(a->past_text, b->past_text);
    ASSERT_EQ(a->masks.size(), 1u);
    ASSERT_EQ(b->masks.size(), 1u);
    EXPECT_EQ(a->masks[0][0].data, b->masks[0][0].data);
  }
  // The cache belongs to that image and that model: another image (one pixel changed), another
  // model, or a video is an error, not the first image's features.
  Request other_image = first;
  other_image.image.rgb[0] ^= 1;
  expect_refused(m, other_image, "a cache belongs to one image or video");
  const std::unique_ptr<Sa2vaModel> another = Sa2vaModel::load(dir, Precision::F32);
  expect_refused(*another, first, "another model's features");
  EXPECT_EQ(m.predict(first).text, plain1.text);  // still the cache of its own image and model
}

// A video conversation with a cache: SAM2 encodes every frame once over two turns; with a budget
// too small for any frame it encodes them again, and the masks are the same either way.
TEST(Pipeline, VisualCacheKeepsVideoFrameFeaturesWithinItsBudget) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  const json c = test::fixture_case(dir, "video");
  const Sa2vaModel& m = fixture_model(dir, Precision::F32);
  auto video = first_frames(dir, c, 3);  // three frames are enough to see what is encoded when
  Request first = test::fixture_request(dir, c);
  first.video = video.get();
  const Prediction plain = m.predict(first);
  Request second = first;
  second.text = "And now?";
  second.past_text = plain.past_text;
  const Prediction plain2 = m.predict(second);
  for (const size_t budget : {size_t{1} << 30, size_t{1}}) {
    first.cache = second.cache = VisualCache::create(budget);
    set_profiling(true);
    profile::reset();
    const Prediction a = m.predict(first);
    const Prediction b = m.predict(second);
    const int64_t encodes = profiled_calls("sam2.image_encoder");
    set_profiling(false);
    EXPECT_EQ(encodes, budget > 1 ? 3 : 6) << "budget " << budget;
    EXPECT_EQ(a.masks, plain.masks);
    EXPECT_EQ(b.masks, plain2.masks);
    EXPECT_LE(first.cache->bytes(), budget);
  }
}

// conversation_after rebuilds past_text without running the model: the same text as a prediction
// with that answer forced, for images (with and without visual prompts), videos, later turns and text.
TEST(Pipeline, ConversationAfterIsThePastTextOfThatAnswer) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  const Sa2vaModel& m = fixture_model(dir, Precision::F32);
  const std::string answer = "Sure, [SEG].";
  const auto expect_same = [&](Request r, const std::string& what) {
    const std::string rebuilt = m.conversation_after(r, answer);
    r.forced_answer = answer;
    EXPECT_EQ(rebuilt, m.predict(r).past_text) << what;
    return rebuilt;
  };
  Request image = test::fixture_request(dir, test::fixture_case(dir, "image"));
  image.forced_answer.clear();
  const std::string after_first = expect_same(image, "image");
  image.text = "And the blue box?";
  image.past_text = after_first;
  expect_same(image, "later turn");

  Request vp = test::fixture_request(dir, test::fixture_case(dir, "vp"));
  vp.forced_answer.clear();
  const Tensor regions = test::load_golden(dir + "/goldens/vp.safetensors", "mask_prompts_u8");
  for (int64_t k = 0; k < regions.size(0); ++k) {
    Mask mask;
    mask.height = static_cast<int>(regions.size(1));
    mask.width = static_cast<int>(regions.size(2));
    const uint8_t* src = regions.data<uint8_t>() + k * mask.height * mask.width;
    mask.data.assign(src, src + static_cast<size_t>(mask.height) * mask.width);
    vp.mask_prompts.push_back(mask);
  }
  const std::string after_vp = expect_same(vp, "visual prompts");
  // A later turn of that conversation passes the same regions again (their tokens are in past_text).
  vp.text = "And region2?";
  vp.past_text = after_vp;
  expect_same(vp, "visual prompts, later turn");
  // Without them, or with other regions, the image tokens do not match: refused naming both counts.
  const auto refused = [&](const Request& r, const std::string& words) { expect_refused(m, r, words); };
  Request without = vp;
  without.mask_prompts.clear();
  refused(without, "a later turn passes its conversation's medium again, with the same visual prompts");
  Request fewer = vp;
  fewer.mask_prompts.pop_back();
  refused(fewer, "this request's image and visual prompts give");
  // The same regions in another order give as many tokens, but not the list the first turn made.
  Request swapped = vp;
  std::swap(swapped.mask_prompts.front(), swapped.mask_prompts.back());
  ASSERT_NE(swapped.mask_prompts.front(), vp.mask_prompts.front());
  refused(swapped, "a later turn passes the first turn's regions again, in the same order");
  // A later turn does not place the image again, nor does any text hold the image-context token.
  Request placed_again = vp;
  placed_again.text = "<image>And region2?";
  refused(placed_again, "a later turn's text holds \"<image>\"");
  Request forged = image;
  forged.text = "<IMG_CONTEXT>Please segment it.";
  forged.past_text.clear();
  refused(forged, "a token the model places itself");
  forged.text = "Please segment it.";
  forged.forced_answer = "Sure <IMG_CONTEXT>";
  refused(forged, "the forced answer holds");
  try {
    m.conversation_after(image, "It is <IMG_CONTEXT>.");
    ADD_FAILURE() << "an answer with an image-context token was taken";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("the answer holds"), std::string::npos) << e.what();
  }

  const json video_case = test::fixture_case(dir, "video");
  auto video = first_frames(dir, video_case, 2);
  Request v = test::fixture_request(dir, video_case);
  v.forced_answer.clear();
  v.video = video.get();
  expect_same(v, "video");

  Request text;
  text.text = "Hello there";
  expect_same(text, "text only");
}

}  // namespace
}  // namespace sa2va
