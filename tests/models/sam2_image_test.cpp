// SAM2 image path (Hiera trunk, FPN neck, prompt encoder, mask decoder) against the sa2va-tiny goldens.
#include "models/sam2/sam2_image.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <iostream>
#include <memory>
#include <set>

#include "core/error.h"
#include "io/config.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "io/weights.h"
#include "models/preprocess.h"
#include "test_util.h"

namespace sa2va {
namespace {

using sam2::DecoderOutput;
using sam2::FrameFeatures;
using sam2::Sam2Image;

// close_rel with the measured error printed (the numbers reported for the f32 conformance).
void expect_close(const std::string& name, const Tensor& actual, const Tensor& expected, double tol = 1e-4) {
  const test::Diff d = test::compare(actual, expected);
  std::cout << "[ sam2 f32 ] " << name << ": max|d| " << d.max_abs << ", max|d|/rms " << d.rel() << "\n";
  EXPECT_TRUE(test::close_rel(actual, expected, tol)) << name;
}

const Tensor& recorded(const StageRecorder& rec, const std::string& name) {
  for (const auto& [n, t] : rec.stages())
    if (n == name) return t;
  throw Error("stage " + name + " was not recorded");
}

// One model + one encoded frame per precision, shared by the tests of this file.
struct EncodedFrame {
  std::unique_ptr<Checkpoint> checkpoint;
  std::unique_ptr<Weights> weights;
  Sam2Image sam;
  FrameFeatures features;
  StageRecorder rec;
  Image resized;
};

class Sam2ImageTest : public ::testing::Test {
 protected:
  static std::string dir() { return test::fixture_path("sa2va-tiny"); }
  static std::string golden(const std::string& c) { return dir() + "/goldens/" + c + ".safetensors"; }

  static EncodedFrame& run(Precision p) {
    static std::unique_ptr<EncodedFrame> runs[2];
    auto& r = runs[p == Precision::F32 ? 0 : 1];
    if (!r) {
      r = std::make_unique<EncodedFrame>();
      r->checkpoint = std::make_unique<Checkpoint>(Checkpoint::open(dir()));
      r->weights = std::make_unique<Weights>(*r->checkpoint, p);
      r->sam = Sam2Image::load(*r->weights, load_config(dir()));
      r->weights->finish();
      r->resized = preprocess::sam2_resize(load_image(dir() + "/inputs/image.png"));
      r->features = r->sam.encode(preprocess::sam2_normalize(r->resized), ExecContext::recording(&r->rec));
    }
    return *r;
  }

  // Low-res logits -> image-size boolean mask, as predict_forward does.
  static Tensor final_mask(const Tensor& low_res, int h, int w) {
    return preprocess::threshold_mask(preprocess::postprocess_mask_logits(low_res, h, w));
  }
};

TEST_F(Sam2ImageTest, InputMatchesGolden) {
  SA2VA_REQUIRE_FIXTURE(d, "sa2va-tiny");
  const EncodedFrame& r = run(Precision::F32);
  const Tensor expected = test::load_golden(golden("image"), "sam.input_u8.sub4");
  ASSERT_EQ(expected.shape(), (Shape{256, 256, 3}));
  int64_t mismatches = 0;
  for (int y = 0; y < 256; ++y)
    for (int x = 0; x < 256; ++x)
      for (int c = 0; c < 3; ++c)
        mismatches += r.resized.row(4 * y)[4 * x * 3 + c] != expected.data<uint8_t>()[(y * 256 + x) * 3 + c];
  EXPECT_EQ(mismatches, 0);
}

TEST_F(Sam2ImageTest, EncoderMatchesGoldensF32) {
  SA2VA_REQUIRE_FIXTURE(d, "sa2va-tiny");
  const EncodedFrame& r = run(Precision::F32);
  for (const char* name : {"sam.trunk.0", "sam.trunk.1", "sam.trunk.2", "sam.trunk.3", "sam.fpn.0", "sam.fpn.1",
                           "sam.fpn.2", "sam.feat_s0", "sam.feat_s1"}) {
    const Tensor expected = test::load_golden(golden("image"), std::string(name) + ".sub16");
    const Tensor& full = recorded(r.rec, name);
    ASSERT_EQ(full.size(0), expected.size(0)) << name;
    expect_close(name, test::strided(full, 16), expected);
  }
  // The features handed to the decoder / video tracker are the same tensors.
  EXPECT_TRUE(test::close_rel(test::strided(r.features.fpn2, 16), test::load_golden(golden("image"), "sam.fpn.2.sub16"), 1e-4));
  EXPECT_EQ(r.features.feat_s0.shape(), (Shape{32, 256, 256}));
  EXPECT_EQ(r.features.feat_s1.shape(), (Shape{64, 128, 128}));
  EXPECT_EQ(r.features.pos2.shape(), (Shape{256, 64, 64}));
}

// Without a recorder, FPN levels 0 and 1 are never made whole: the lateral convs and conv_s0/conv_s1
// run a chunk of tokens at a time. The features must be the recorded (whole-map) run's.
TEST_F(Sam2ImageTest, UnrecordedEncodeGivesTheSameFeatures) {
  SA2VA_REQUIRE_FIXTURE(d, "sa2va-tiny");
  for (Precision p : {Precision::F32, Precision::BF16}) {
    const EncodedFrame& r = run(p);
    const FrameFeatures plain = r.sam.encode(preprocess::sam2_normalize(r.resized));
    // Products of other row counts may round differently in the last bit.
    const char* mode = p == Precision::F32 ? "f32" : "bf16";
    EXPECT_TRUE(test::close_rel(plain.feat_s0, r.features.feat_s0, 1e-5)) << mode;
    EXPECT_TRUE(test::close_rel(plain.feat_s1, r.features.feat_s1, 1e-5)) << mode;
    EXPECT_TRUE(test::close_rel(plain.fpn2, r.features.fpn2, 1e-5)) << mode;
  }
}

TEST_F(Sam2ImageTest, DecoderMatchesGoldensF32) {
  SA2VA_REQUIRE_FIXTURE(d, "sa2va-tiny");
  const EncodedFrame& r = run(Precision::F32);
  const Tensor lang = test::load_golden(golden("image"), "seg.embeds");
  StageRecorder rec;
  const DecoderOutput out = r.sam.decode_conditioning(r.features, lang.f32(), ExecContext::recording(&rec));
  auto g = [&](const std::string& n) { return test::load_golden(golden("image"), n); };
  expect_close("sam.image_pe", test::strided(recorded(rec, "sam.image_pe"), 16), g("sam.image_pe.sub16"));
  expect_close("sam.decoder.image_embeddings", test::strided(recorded(rec, "sam.decoder.image_embeddings"), 16),
               g("sam.decoder.image_embeddings.sub16"));
  for (const char* name : {"sam.decoder.dense_prompt_embeddings.0_0", "sam.decoder.sparse_prompt_embeddings",
                           "sam.decoder.low_res_multimasks", "sam.decoder.iou_pred", "sam.decoder.object_score_logits",
                           "sam.decoder.sam_tokens_out"})
    expect_close(name, recorded(rec, name), g(name));
  expect_close("seg0.mask_logits_lowres", out.low_res_mask, g("seg0.mask_logits_lowres"));

  // The selected mask is the highest-IoU candidate and its token is the one returned.
  const Tensor iou = g("sam.decoder.iou_pred"), tokens = g("sam.decoder.sam_tokens_out");
  const std::vector<float> iv = iou.to_vector();
  const int64_t best = std::max_element(iv.begin(), iv.end()) - iv.begin();
  EXPECT_NEAR(out.iou, iv[best], 1e-5);
  EXPECT_TRUE(test::close_rel(out.sam_token, tokens.select(0, best), 1e-4));
  EXPECT_NEAR(out.object_score_logit, g("sam.decoder.object_score_logits").to_vector()[0], 1e-4);

  // Final mask after post-processing.
  const Tensor logits = preprocess::postprocess_mask_logits(out.low_res_mask, 280, 600);
  expect_close("seg0.mask_logits", logits.view({1, 280, 600}), g("seg0.mask_logits"));
  const double iou_mask = test::mask_iou(final_mask(out.low_res_mask, 280, 600), g("seg0.mask"));
  std::cout << "[ sam2 f32 ] mask IoU vs golden: " << iou_mask << "\n";
  EXPECT_GE(iou_mask, 0.999);
}

TEST_F(Sam2ImageTest, TwoSegTokensF32) {
  SA2VA_REQUIRE_FIXTURE(d, "sa2va-tiny");
  const EncodedFrame& r = run(Precision::F32);
  const Tensor embeds = test::load_golden(golden("multiseg"), "seg.embeds");
  ASSERT_EQ(embeds.shape(), (Shape{2, 256}));
  const Tensor image_embedding = r.sam.conditioning_embedding(r.features);
  for (int s = 0; s < 2; ++s) {
    SCOPED_TRACE(s);
    const std::string seg = "seg" + std::to_string(s);
    const DecoderOutput out = r.sam.decode(image_embedding, r.features, embeds.f32() + s * 256);
    expect_close("multiseg " + seg + ".mask_logits_lowres", out.low_res_mask,
                 test::load_golden(golden("multiseg"), seg + ".mask_logits_lowres"));
    EXPECT_GE(test::mask_iou(final_mask(out.low_res_mask, 280, 600), test::load_golden(golden("multiseg"), seg + ".mask")),
              0.999);
  }
}

TEST_F(Sam2ImageTest, Bf16MaskCloseToGolden) {
  SA2VA_REQUIRE_FIXTURE(d, "sa2va-tiny");
  const EncodedFrame& r = run(Precision::BF16);
  auto g = [&](const std::string& n) { return test::load_golden(golden("image"), n); };
  const Tensor lang = g("seg.embeds");
  const DecoderOutput out = r.sam.decode_conditioning(r.features, lang.f32());
  const test::Diff trunk = test::compare(test::strided(recorded(r.rec, "sam.trunk.3"), 16), g("sam.trunk.3.sub16"));
  const test::Diff fpn = test::compare(test::strided(r.features.fpn2, 16), g("sam.fpn.2.sub16"));
  const test::Diff low = test::compare(out.low_res_mask, g("seg0.mask_logits_lowres"));
  const double iou_mask = test::mask_iou(final_mask(out.low_res_mask, 280, 600), g("seg0.mask"));
  std::cout << "[ sam2 bf16 ] trunk.3 max|d|/rms " << trunk.rel() << ", fpn.2 " << fpn.rel() << ", low-res logits "
            << low.rel() << " (max|d| " << low.max_abs << "), mask IoU " << iou_mask << "\n";
  RecordProperty("bf16_mask_iou", std::to_string(iou_mask));
  EXPECT_LT(low.rel(), 0.1);
  EXPECT_GE(iou_mask, 0.99);
}

// Every SAM2 image-path tensor of the checkpoint is bound with its shape (memory modules belong to the tracker).
TEST_F(Sam2ImageTest, BindsEveryImagePathTensor) {
  SA2VA_REQUIRE_FIXTURE(d, "sa2va-tiny");
  Weights declaring = Weights::declaring(Precision::F32);
  Sam2Image::load(declaring, load_config(d));
  std::map<std::string, Shape> declared;
  for (const DeclaredTensor& t : declaring.declared()) EXPECT_TRUE(declared.emplace(t.name, t.shape).second) << t.name;

  const Checkpoint ck = Checkpoint::open(d);
  const std::string prefix = "grounding_encoder.sam2_model.";
  const std::vector<std::string> tracker = {"memory_attention.", "memory_encoder.", "maskmem_tpos_enc", "no_obj_ptr",
                                            "obj_ptr_proj.", "mask_downsample."};
  size_t expected = 0;
  for (const std::string& name : ck.names()) {
    if (name.rfind(prefix, 0) != 0) continue;
    const std::string rest = name.substr(prefix.size());
    if (std::any_of(tracker.begin(), tracker.end(), [&](const std::string& t) { return rest.rfind(t, 0) == 0; }))
      continue;
    ++expected;
    auto it = declared.find(name);
    ASSERT_NE(it, declared.end()) << name << " is not bound";
    EXPECT_EQ(it->second, ck.info(name).shape) << name;
  }
  EXPECT_EQ(declared.size(), expected);
}

TEST_F(Sam2ImageTest, RejectsWrongInputShape) {
  SA2VA_REQUIRE_FIXTURE(d, "sa2va-tiny");
  const EncodedFrame& r = run(Precision::F32);
  EXPECT_THROW(r.sam.encode(Tensor::zeros({3, 512, 512})), Error);
  EXPECT_THROW(r.sam.encode(Tensor::zeros({1, 1024, 1024})), Error);
  EXPECT_THROW(r.sam.decode(Tensor::zeros({256, 32, 32}), r.features, nullptr), Error);
}

TEST_F(Sam2ImageTest, TrackingPromptHasTwoPaddingPoints) {
  SA2VA_REQUIRE_FIXTURE(d, "sa2va-tiny");
  const EncodedFrame& r = run(Precision::F32);
  const Tensor sparse = r.sam.prompt_encoder.sparse_embeddings(nullptr);
  ASSERT_EQ(sparse.shape(), (Shape{2, 256}));
  const Tensor golden_sparse = test::load_golden(golden("image"), "sam.decoder.sparse_prompt_embeddings");
  EXPECT_TRUE(test::close_rel(sparse, golden_sparse.slice(0, 0, 2), 0));
  const DecoderOutput out = r.sam.decode_conditioning(r.features, nullptr);
  EXPECT_EQ(out.low_res_mask.shape(), (Shape{256, 256}));
  EXPECT_EQ(out.sam_token.shape(), (Shape{256}));
}

// Per-block geometry of Hiera-L (the default Sam2Config), as tabulated in docs/sam2.md §1.1.
TEST(Sam2ImageHiera, HieraLGeometry) {
  Weights declaring = Weights::declaring(Precision::BF16);
  const ModelConfig c;
  const sam2::HieraTrunk t = sam2::HieraTrunk::load(declaring, c.sam2, "trunk.");
  ASSERT_EQ(t.blocks.size(), 48u);
  EXPECT_EQ(t.stage_ends, (std::vector<int>{1, 7, 43, 47}));
  for (int b = 0; b < 48; ++b) {
    SCOPED_TRACE(b);
    const sam2::HieraBlock& k = t.blocks[b];
    const int stage = b <= 1 ? 0 : b <= 7 ? 1 : b <= 43 ? 2 : 3;
    const int64_t dims[4] = {144, 288, 576, 1152}, heads[4] = {2, 4, 8, 16};
    const bool first_of_stage = b == 2 || b == 8 || b == 44;
    EXPECT_EQ(k.dim_out, dims[stage]);
    EXPECT_EQ(k.dim_in, first_of_stage ? dims[stage - 1] : dims[stage]);
    EXPECT_EQ(k.heads, heads[stage]);
    EXPECT_EQ(k.q_stride, first_of_stage ? 2 : 1);
    // The first block of a stage keeps the previous stage's window; 23, 33, 43 are global.
    const int64_t windows[4] = {8, 4, 16, 8};
    const int64_t window = (b == 23 || b == 33 || b == 43) ? 0 : windows[first_of_stage ? stage - 1 : stage];
    EXPECT_EQ(k.window, window);
  }
}

}  // namespace
}  // namespace sa2va
