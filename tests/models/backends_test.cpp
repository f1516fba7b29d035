// The load policy and execution context through the real models: quantized language-model
// weights prepared at load, models with their own thread pools side by side, and option errors.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <iostream>
#include <thread>

#include "core/error.h"
#include "core/stages.h"
#include "models/internvit.h"
#include "models/sa2va_model.h"
#include "ops/cpu/simd.h"
#include "test_util.h"
#include "tiny_llm.h"

namespace sa2va {
namespace {

std::string golden(const std::string& dir, const std::string& name) { return dir + "/goldens/" + name + ".safetensors"; }

// rms(a - b) / rms(b)
double relative_error(const Tensor& a, const Tensor& b) {
  const std::vector<float> x = a.to_vector(), y = b.to_vector();
  double diff = 0, sq = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    diff += (static_cast<double>(x[i]) - y[i]) * (static_cast<double>(x[i]) - y[i]);
    sq += static_cast<double>(y[i]) * y[i];
  }
  return std::sqrt(diff / sq);
}

TEST(QuantizedWeights, LanguageModelLayersArePreparedAtLoadAndStayClose) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  const Tensor embeds = test::load_golden(golden(dir, "image"), "llm.inputs_embeds").slice(0, 700, 790).contiguous();
  auto reference = test::load_tiny_language_model(dir, Precision::F32);
  LlmState ref_state = reference->lm.new_state(90);
  const Tensor want = reference->lm.forward(embeds, ref_state).clone();

  // Measured on the tiny random fixture: q8_0 1.2%, q4_0 19% of the rms (16x apart, as their steps
  // amax/127 and amax/8); the bounds leave room for rounding but fail on a wrong layout or scale.
  const std::pair<WeightFormat, double> cases[] = {{WeightFormat::Q8_0, 0.03}, {WeightFormat::Q4_0, 0.4}};
  for (const auto& [format, bound] : cases) {
    for (Precision precision : {Precision::F32, Precision::BF16}) {
      LoadPolicy policy(precision);
      policy.llm_format = format;
      const Checkpoint ck = Checkpoint::open(dir);
      Weights w(ck, policy);
      const LanguageModel lm = LanguageModel::load(w, load_config(dir));
      w.finish();
      EXPECT_EQ(lm.layers[0].wqkv.format(), format);
      EXPECT_EQ(lm.layers[0].w_down.format(), format);
      EXPECT_EQ(lm.lm_head.format(), format);  // tied head: a quantized copy of the embedding
      EXPECT_EQ(lm.layers[0].attention_norm.dtype(), DType::F32);
      LlmState state = lm.new_state(90);
      const double err = relative_error(lm.forward(embeds, state), want);
      std::cout << weight_format_name(format) << (precision == Precision::F32 ? " f32" : " bf16")
                << ": LLM hidden states rms(diff)/rms vs f32 " << err << "\n";
      EXPECT_LT(err, bound) << weight_format_name(format);
      EXPECT_GT(err, 0.0) << "quantized weights gave exactly the f32 result";
    }
  }
}

// A load gives the image encoder's matrices the bf16 GEMM's panels where its AVX-512 BF16 or AVX2
// tiles read them (bf16 mode only), and leaves the language model's rows for decode.
TEST(ImageMatrices, AreInGemmPanelsAfterABf16Load) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  const bool panels = ops::simd::isa() != ops::simd::Isa::Scalar;
  for (Precision precision : {Precision::F32, Precision::BF16}) {
    const Checkpoint ck = Checkpoint::open(dir);
    Weights w(ck, precision);
    const ModelConfig config = load_config(dir);
    const VisionEncoder vit = VisionEncoder::load(w, config);
    const LanguageModel lm = LanguageModel::load(w, config);
    w.finish();
    const bool want = panels && precision == Precision::BF16;
    EXPECT_EQ(vit.layers[0].qkv_weight.in_panels(), want);
    EXPECT_EQ(vit.layers[0].mlp.fc2.in_panels(), want);
    EXPECT_EQ(vit.projector.fc1.in_panels(), want);
    EXPECT_FALSE(lm.layers[0].w_down.in_panels());
  }
}

// The accuracy table of README.md: each LLM weight format against the f32 model on the public
// fixtures' teacher-forced cases (the rest of the model in f32, so only the format differs; bf16
// runs the whole model in bf16 mode): rms(diff)/rms of the LLM's last hidden states and of the
// [SEG] embeddings, and the IoU of every mask with the f32 one.
TEST(QuantizedWeights, AccuracyOfEveryFormatThroughThePipeline) {
  SA2VA_REQUIRE_FIXTURE(tiny, "sa2va-tiny");
  const std::string root = tiny.substr(0, tiny.rfind('/'));
  struct Case {
    std::string fixture, name;
  };
  const Case cases[] = {{"sa2va-tiny", "image"}, {"sa2va-tiny-phi3", "image"}, {"sa2va-tiny-internlm2", "multiseg"}};
  auto stage = [](const StageRecorder& rec, const std::string& name) {
    for (const auto& [n, t] : rec.stages())
      if (n == name) return t;
    ADD_FAILURE() << "stage " << name << " was not recorded";
    return Tensor::zeros({1});
  };
  struct Variant {
    const char* label;
    Precision precision;
    WeightFormat weights;
    double hidden_bound, iou_bound;  // loose: they catch a wrong kernel, not rounding
  };
  const Variant variants[] = {{"f32", Precision::F32, WeightFormat::BF16, 0, 1},  // the reference
                              {"bf16", Precision::BF16, WeightFormat::BF16, 0.15, 0.9},
                              {"q8_0", Precision::F32, WeightFormat::Q8_0, 0.05, 0.9},
                              {"q4_0", Precision::F32, WeightFormat::Q4_0, 0.5, 0.5}};
  std::string loaded_fixture;
  std::vector<std::unique_ptr<Sa2vaModel>> models;
  for (const Case& c : cases) {
    const std::string dir = root + "/" + c.fixture;
    if (!std::filesystem::exists(dir + "/meta.json")) {
      std::cout << "[ note ] " << c.fixture << " not found, skipped\n";
      continue;
    }
    if (loaded_fixture != c.fixture) {
      models.clear();
      for (const Variant& v : variants) {
        ModelOptions options;
        options.precision = v.precision;
        options.weights = v.weights;
        models.push_back(Sa2vaModel::load(dir, options));
      }
      loaded_fixture = c.fixture;
    }
    const Request request = test::fixture_request(dir, test::fixture_case(dir, c.name));
    StageRecorder want;
    const Prediction reference = models[0]->predict(request, &want);
    ASSERT_FALSE(reference.masks.empty()) << c.fixture << " " << c.name;
    for (size_t i = 1; i < models.size(); ++i) {
      const Variant& v = variants[i];
      StageRecorder got;
      const Prediction p = models[i]->predict(request, &got);
      ASSERT_EQ(p.masks.size(), reference.masks.size());
      const double hidden = relative_error(stage(got, "llm.last_hidden_state"), stage(want, "llm.last_hidden_state"));
      const double seg = relative_error(stage(got, "seg.embeds"), stage(want, "seg.embeds"));
      double min_iou = 1;
      for (size_t k = 0; k < p.masks.size(); ++k) {
        const std::string name = "seg" + std::to_string(k) + ".mask";
        min_iou = std::min(min_iou, test::mask_iou(stage(got, name), stage(want, name)));
      }
      std::cout << "| " << c.fixture << " " << c.name << " | " << v.label << " | " << hidden << " | " << seg << " | "
                << min_iou << " |\n";
      EXPECT_LT(hidden, v.hidden_bound) << c.fixture << " " << v.label;
      EXPECT_LT(seg, v.hidden_bound) << c.fixture << " " << v.label;
      EXPECT_GE(min_iou, v.iou_bound) << c.fixture << " " << v.label;
    }
  }
}

TEST(ModelOptions, DeviceFormatAndThreadsAreChecked) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  ModelOptions cuda;
  cuda.device = "cuda:0";
  try {
    Sa2vaModel::load(dir, cuda);
    FAIL() << "a CPU-only build loaded a model on cuda:0";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cuda:0"), std::string::npos) << e.what();
  }
  ModelOptions bad_device;
  bad_device.device = "tpu";
  EXPECT_THROW(Sa2vaModel::load(dir, bad_device), Error);
  ModelOptions f32_weights;
  f32_weights.weights = WeightFormat::F32;  // f32 matrices with the bf16 precision
  EXPECT_THROW(Sa2vaModel::load(dir, f32_weights), Error);
  ModelOptions negative;
  negative.threads = -1;
  EXPECT_THROW(Sa2vaModel::load(dir, negative), Error);
  // Values outside the enums (a cast from an integer a caller got wrong).
  ModelOptions unknown_precision, unknown_format;
  unknown_precision.precision = static_cast<Precision>(7);
  unknown_format.weights = static_cast<WeightFormat>(9);
  for (const ModelOptions& o : {unknown_precision, unknown_format}) {
    try {
      Sa2vaModel::load(dir, o);
      ADD_FAILURE() << "an unknown enum value was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("model options: unknown"), std::string::npos) << e.what();
    }
  }
}

TEST(ModelOptions, ModelsWithTheirOwnThreadCountsRunSideBySide) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  ModelOptions one, two;
  one.precision = two.precision = Precision::F32;
  one.threads = 1;
  two.threads = 2;
  const auto a = Sa2vaModel::load(dir, one), b = Sa2vaModel::load(dir, two);
  EXPECT_EQ(a->pool->size(), 1);
  EXPECT_EQ(b->pool->size(), 2);

  Request request;
  request.text = "Tell me a story.";
  request.generation.max_new_tokens = 12;
  const Prediction alone = a->predict(request);
  Prediction pa, pb;
  std::thread ta([&] { pa = a->predict(request); });
  std::thread tb([&] { pb = b->predict(request); });
  ta.join();
  tb.join();
  EXPECT_EQ(pa.generated_ids, alone.generated_ids);
  EXPECT_EQ(pb.generated_ids, alone.generated_ids);
  EXPECT_EQ(pb.text, alone.text);
}

}  // namespace
}  // namespace sa2va
