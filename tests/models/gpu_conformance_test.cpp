// The conformance fixtures on a real GPU: each fixture folder found (the 4B template's Qwen2 +
// phi3_chat, the 8B path's InternLM2, the 1B shape) is loaded onto cuda:0 and its cases run there.
//  - f32 (TF32 off): every golden tensor of the case within the tolerance the CPU is held to,
//    texts and generated ids identical;
//  - bf16: every mask of the image cases against the golden (f32) masks, IoU >= 0.99.
// Skips, saying why, without a GPU. Runs for the fixture folders present under $SA2VA_FIXTURES (the
// GPU check ships the ones $SA2VA_GPU_FIXTURES names); for all three when CI=true or when none is
// present, so that a missing one is reported (a failure when CI=true, as for every fixture test).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "core/stages.h"
#include "io/safetensors.h"
#include "models/sa2va_model.h"
#include "test_util.h"

namespace sa2va {
namespace {

struct FixtureCase {
  const char* fixture;
  const char* name;
};
// The cases with goldens in every folder that has them; the image cases carry masks.
const FixtureCase kCases[] = {{"sa2va-tiny-phi3", "image"},      {"sa2va-tiny-phi3", "generate"},
                              {"sa2va-tiny-internlm2", "image"}, {"sa2va-tiny-internlm2", "multiseg"},
                              {"sa2va-tiny-internlm2", "generate"}, {"sa2va-tiny", "image"},
                              {"sa2va-tiny", "multiseg"},        {"sa2va-tiny", "generate"}};

std::unique_ptr<Sa2vaModel> load_on_gpu(const std::string& dir, Precision precision) {
  ModelOptions options;
  options.precision = precision;
  options.device = "cuda:0";
  return Sa2vaModel::load(dir, options);
}

// Runs every case of `fixture` in kCases on `model`; `check` judges each.
template <typename Check>
void run_cases(const std::string& fixture, const Sa2vaModel& model, Check check) {
  const std::string dir = test::fixtures_dir() + "/" + fixture;
  for (const FixtureCase& c : kCases) {
    if (fixture != c.fixture) continue;
    SCOPED_TRACE(fixture + " " + c.name);
    const nlohmann::json meta = test::fixture_case(dir, c.name);
    StageRecorder rec;
    const Prediction p = model.predict(test::fixture_request(dir, meta), &rec);
    check(dir + "/goldens/" + c.name + ".safetensors", meta, rec, p);
  }
}

// The fixture folders present; all three when CI=true or when none is, so that their absence is
// reported.
std::vector<const char*> present_fixtures() {
  const std::vector<const char*> all = {"sa2va-tiny-phi3", "sa2va-tiny-internlm2", "sa2va-tiny"};
  const char* ci = std::getenv("CI");
  if (ci && std::string(ci) == "true") return all;
  std::vector<const char*> present;
  for (const char* f : all)
    if (std::filesystem::exists(test::fixtures_dir() + "/" + f + "/meta.json")) present.push_back(f);
  return present.empty() ? all : present;
}

class GpuConformance : public ::testing::TestWithParam<const char*> {};

TEST_P(GpuConformance, F32EveryStageAsTheGoldens) {
  std::string why;
  if (!test::gpu_available(&why)) GTEST_SKIP() << "no GPU: " << why;
  SA2VA_REQUIRE_FIXTURE(dir, GetParam());
  const std::unique_ptr<Sa2vaModel> model = load_on_gpu(dir, Precision::F32);
  run_cases(GetParam(), *model, [](const std::string& golden, const nlohmann::json& meta, const StageRecorder& rec,
                                   const Prediction& p) {
    test::expect_stages_match_goldens(golden, rec, test::conformance_tolerance);
    EXPECT_EQ(p.text, meta.at("prediction").get<std::string>());
    if (meta.contains("generated_ids")) {
      EXPECT_EQ(p.generated_ids, meta["generated_ids"].get<std::vector<int32_t>>());
    }
  });
}

TEST_P(GpuConformance, Bf16MasksAsTheGoldens) {
  std::string why;
  if (!test::gpu_available(&why)) GTEST_SKIP() << "no GPU: " << why;
  SA2VA_REQUIRE_FIXTURE(dir, GetParam());
  const std::unique_ptr<Sa2vaModel> model = load_on_gpu(dir, Precision::BF16);
  run_cases(GetParam(), *model, [](const std::string& golden_file, const nlohmann::json& meta,
                                   const StageRecorder& rec, const Prediction&) {
    if (!meta.contains("answer_text")) return;  // generation cases: bf16 may pick other tokens
    const auto golden = SafetensorsFile::open(golden_file);
    int masks = 0;
    for (const auto& [name, info] : golden->tensors()) {
      if (!name.ends_with(".mask")) continue;
      const Tensor* got = nullptr;
      for (const auto& [stage, tensor] : rec.stages())
        if (!got && stage == name) got = &tensor;
      ASSERT_NE(got, nullptr) << name << " was not recorded";
      const double iou = test::mask_iou(*got, golden->get(name));
      std::cout << "[ bf16 ] " << golden_file << " " << name << " IoU " << iou << "\n";
      EXPECT_GE(iou, 0.99) << name;
      ++masks;
    }
    EXPECT_GT(masks, 0) << golden_file << " has no masks";
  });
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GpuConformance,
                         ::testing::ValuesIn(present_fixtures()),
                         [](const ::testing::TestParamInfo<const char*>& info) {
                           std::string name = info.param;
                           for (char& ch : name)
                             if (ch == '-') ch = '_';
                           return name;
                         });

}  // namespace
}  // namespace sa2va
