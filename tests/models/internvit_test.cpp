// InternViT + mlp1 against the upstream goldens of the tiny fixture (f32 conformance, bf16 error
// measured), plus weight binding and input validation.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iostream>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/config.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "io/weights.h"
#include "models/internvit.h"
#include "models/preprocess.h"
#include "test_util.h"

namespace sa2va {
namespace {

// Golden uint8 HWC tiles [n, H, W, 3] -> Images, then the shared ToTensor/Normalize.
Tensor pixel_values_from_tiles(const Tensor& tiles_u8) {
  const Tensor tiles = tiles_u8.contiguous();
  const int64_t n = tiles.size(0), H = tiles.size(1), W = tiles.size(2);
  std::vector<Image> images;
  for (int64_t t = 0; t < n; ++t) {
    Image image(static_cast<int>(W), static_cast<int>(H));
    std::memcpy(image.rgb.data(), tiles.data<uint8_t>() + t * H * W * 3, image.rgb.size());
    images.push_back(std::move(image));
  }
  return preprocess::normalize_for_vit(images);
}

struct TinyEncoder {
  std::string dir;
  Checkpoint checkpoint;
  ModelConfig config;
};

TinyEncoder open_tiny(const std::string& dir) { return {dir, Checkpoint::open(dir), load_config(dir)}; }

// Runs the encoder in both precisions; f32 must match the goldens, bf16's error is reported.
void check_against_goldens(const TinyEncoder& tiny, const Tensor& pixel_values, const std::string& case_name,
                           bool has_hidden_state) {
  const std::string golden_file = tiny.dir + "/goldens/" + case_name + ".safetensors";
  const Tensor golden_embeds = test::load_golden(golden_file, "vit_embeds");
  for (Precision precision : {Precision::F32, Precision::BF16}) {
    Weights w(tiny.checkpoint, precision);
    const VisionEncoder encoder = VisionEncoder::load(w, tiny.config);
    w.finish();
    StageRecorder rec;
    const Tensor embeds = encoder.forward(pixel_values, ExecContext::recording(&rec));
    ASSERT_EQ(embeds.shape(), golden_embeds.shape());
    ASSERT_EQ(rec.stages().size(), 2u);
    EXPECT_EQ(rec.stages()[0].first, "vit.last_hidden_state");
    EXPECT_EQ(rec.stages()[1].first, "vit_embeds");
    const char* mode = precision == Precision::F32 ? "f32" : "bf16";
    const test::Diff embeds_diff = test::compare(embeds, golden_embeds);
    std::cout << "[" << mode << "] " << case_name << " vit_embeds max|diff| " << embeds_diff.max_abs << " rel "
              << embeds_diff.rel() << "\n";
    if (has_hidden_state) {
      const Tensor golden_hidden = test::load_golden(golden_file, "vit.last_hidden_state");
      const Tensor& hidden = rec.stages()[0].second;
      ASSERT_EQ(hidden.shape(), golden_hidden.shape());
      const test::Diff hidden_diff = test::compare(hidden, golden_hidden);
      std::cout << "[" << mode << "] " << case_name << " vit.last_hidden_state max|diff| " << hidden_diff.max_abs
                << " rel " << hidden_diff.rel() << "\n";
      EXPECT_TRUE(test::close_rel(hidden, golden_hidden, precision == Precision::F32 ? 1e-4 : 5e-2));
    }
    // bf16 mode may round activations at matrix products; a few percent of the RMS is the bound.
    EXPECT_TRUE(test::close_rel(embeds, golden_embeds, precision == Precision::F32 ? 1e-4 : 1e-1));
  }
}

TEST(InternVit, ImageTilesMatchGoldens) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  const TinyEncoder tiny = open_tiny(dir);
  const std::string goldens = dir + "/goldens/image.safetensors";
  const Tensor pixel_values = pixel_values_from_tiles(test::load_golden(goldens, "tiles_u8"));
  ASSERT_EQ(pixel_values.shape(), (Shape{3, 3, 448, 448}));
  check_against_goldens(tiny, pixel_values, "image", true);
}

TEST(InternVit, VideoFramesMatchGoldens) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  const TinyEncoder tiny = open_tiny(dir);
  // The first 5 frames, each resized to 448x448 (no tiling), as the video path does.
  std::vector<Image> frames;
  for (int f = 0; f < 5; ++f) {
    const Image frame = load_image(dir + "/inputs/video_frame" + std::to_string(f) + ".png");
    frames.push_back(preprocess::resize_bicubic(frame, 448, 448));
  }
  check_against_goldens(tiny, preprocess::normalize_for_vit(frames), "video", false);
}

TEST(InternVit, BindsEveryVisionAndProjectorTensor) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  const Checkpoint checkpoint = Checkpoint::open(dir);
  const ModelConfig config = load_config(dir);
  Weights declaring = Weights::declaring();
  VisionEncoder::load(declaring, config);
  std::set<std::string> declared;
  for (const DeclaredTensor& t : declaring.declared()) {
    EXPECT_TRUE(declared.insert(t.name).second) << "declared twice: " << t.name;
    ASSERT_TRUE(checkpoint.has(t.name)) << "not in the checkpoint: " << t.name;
    EXPECT_EQ(checkpoint.info(t.name).shape, t.shape) << t.name;
  }
  for (const std::string& name : checkpoint.names()) {
    if (name.rfind("vision_model.", 0) == 0 || name.rfind("mlp1.", 0) == 0) {
      EXPECT_TRUE(declared.count(name)) << "checkpoint tensor not bound: " << name;
    }
  }
}

TEST(InternVit, SelectLayerRunsFewerLayers) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  const Checkpoint checkpoint = Checkpoint::open(dir);
  ModelConfig config = load_config(dir);
  const int L = config.vision.num_layers;
  Weights w(checkpoint, Precision::F32);
  EXPECT_EQ(VisionEncoder::load(w, config).layers_to_run, L);
  config.select_layer = -2;
  const VisionEncoder shallower = VisionEncoder::load(w, config);
  EXPECT_EQ(shallower.layers_to_run, L - 1);
  EXPECT_EQ(shallower.layers.size(), static_cast<size_t>(L));  // all layers still bound
  config.select_layer = 0;
  EXPECT_EQ(VisionEncoder::load(w, config).layers_to_run, 0);
  config.select_layer = -(L + 2);
  EXPECT_THROW(VisionEncoder::load(w, config), Error);
  config.select_layer = L + 1;
  EXPECT_THROW(VisionEncoder::load(w, config), Error);
}

TEST(InternVit, OtherGridResamplesPositionEmbedding) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  const TinyEncoder tiny = open_tiny(dir);
  Weights w(tiny.checkpoint, Precision::F32);
  const VisionEncoder encoder = VisionEncoder::load(w, tiny.config);
  w.finish();
  // 224 px = 16x16 patches -> 8x8 = 64 tokens; the position table is resampled bicubically.
  const Tensor pixel_values = Tensor::zeros({1, 3, 224, 224});
  StageRecorder rec;
  const Tensor embeds = encoder.forward(pixel_values, ExecContext::recording(&rec));
  EXPECT_EQ(embeds.shape(), (Shape{1, 64, tiny.config.llm.hidden_size}));
  EXPECT_EQ(rec.stages()[0].second.shape(), (Shape{1, 257, tiny.config.vision.hidden_size}));
  for (float v : embeds.to_vector()) ASSERT_TRUE(std::isfinite(v));
}

TEST(InternVit, RejectsBadPixelValues) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  const TinyEncoder tiny = open_tiny(dir);
  Weights w(tiny.checkpoint, Precision::F32);
  const VisionEncoder encoder = VisionEncoder::load(w, tiny.config);
  EXPECT_THROW(encoder.forward(Tensor()), Error);
  EXPECT_THROW(encoder.forward(Tensor::zeros({3, 448, 448})), Error);          // no batch dimension
  EXPECT_THROW(encoder.forward(Tensor::zeros({1, 4, 448, 448})), Error);       // 4 channels
  EXPECT_THROW(encoder.forward(Tensor::zeros({1, 3, 448, 420})), Error);       // not square
  EXPECT_THROW(encoder.forward(Tensor::zeros({1, 3, 434, 434})), Error);       // odd patch grid
  EXPECT_THROW(encoder.forward(Tensor::zeros({0, 3, 448, 448})), Error);       // no tiles
  EXPECT_THROW(encoder.forward(Tensor::zeros({1, 3, 448, 448}, DType::BF16)), Error);
}

TEST(InternVit, RejectsUnsupportedConfig) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  const Checkpoint checkpoint = Checkpoint::open(dir);
  const ModelConfig base = load_config(dir);
  Weights w(checkpoint, Precision::F32);
  ModelConfig c = base;
  c.ps_version = "v1";
  EXPECT_THROW(VisionEncoder::load(w, c), Error);
  c = base;
  c.vision.norm_type = "rms_norm";
  EXPECT_THROW(VisionEncoder::load(w, c), Error);
  c = base;
  c.vision.hidden_size = 33;  // not a multiple of the heads
  EXPECT_THROW(VisionEncoder::load(w, c), Error);
}

TEST(InternVit, MisShapedCheckpointIsReported) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  const Checkpoint checkpoint = Checkpoint::open(dir);
  ModelConfig config = load_config(dir);
  config.vision.intermediate_size *= 2;  // every fc1/fc2 now mismatches
  Weights w(checkpoint, Precision::F32);
  VisionEncoder::load(w, config);
  try {
    w.finish();
    FAIL() << "finish() accepted mis-shaped fc1/fc2 weights";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("mlp.fc1.weight"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace sa2va
