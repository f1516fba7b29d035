// The two other language-model paths against their conformance fixtures, through
// Sa2vaModel::predict (the path of `sa2va run` / `sa2va dump`):
//  - sa2va-tiny-phi3: a Qwen2 LLM with the phi3_chat template (Sa2VA-4B);
//  - sa2va-tiny-internlm2: InternLM2 with its SentencePiece tokenizer and internlm2_chat (Sa2VA-8B).
// Every golden tensor of a case is compared with the stage recorded under the same name; texts and
// ids must be identical. The stop cases check when generation ends, with the model's own stop rules.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "core/stages.h"
#include "models/generation.h"
#include "models/sa2va_model.h"
#include "test_util.h"

namespace sa2va {
namespace {
using json = nlohmann::json;

const Sa2vaModel& model_of(const std::string& dir) {
  static std::map<std::string, std::unique_ptr<Sa2vaModel>> models;
  auto& m = models[dir];
  if (!m) m = Sa2vaModel::load(dir, Precision::F32);
  return *m;
}

std::vector<int32_t> ids_of(const json& list) { return list.get<std::vector<int32_t>>(); }

// Runs the case and compares every tensor of its golden file; returns the prediction.
Prediction run_case(const std::string& dir, const std::string& name, StageRecorder& rec) {
  const json c = test::fixture_case(dir, name);
  const Prediction p = model_of(dir).predict(test::fixture_request(dir, c), &rec);
  test::expect_stages_match_goldens(dir + "/goldens/" + name + ".safetensors", rec, test::conformance_tolerance);
  EXPECT_EQ(p.text, c.at("prediction").get<std::string>()) << name;
  if (c.contains("generated_ids")) {
    EXPECT_EQ(p.generated_ids, ids_of(c["generated_ids"])) << name;
  }
  return p;
}

// A stop case: upstream forced `forced_ids` through generate(); generation ended after
// `generated_ids` for the reason `stopped_by`.
void expect_stop_case(const std::string& dir, const std::string& name) {
  const json c = test::fixture_case(dir, name);
  const Sa2vaModel& m = model_of(dir);
  const std::string prompt = build_prompt(*m.chat, c.at("prompt").get<std::string>(), "");
  EXPECT_EQ(prompt, c.at("prompt_text").get<std::string>());
  EXPECT_EQ(m.tokenizer->encode(prompt), ids_of(c.at("prompt_ids")));
  const StopRules stop = m.stop_rules();
  std::vector<int32_t> generated;
  std::optional<StopReason> reason;
  for (int32_t id : ids_of(c.at("forced_ids"))) {
    generated.push_back(id);
    if ((reason = stop_after(generated, stop))) break;
  }
  EXPECT_EQ(generated, ids_of(c.at("generated_ids")));
  ASSERT_TRUE(reason.has_value());
  const std::string by = c.at("stopped_by").get<std::string>();
  EXPECT_EQ(*reason, by == "eos" ? StopReason::Eos : StopReason::StopWord) << by;
  const std::string decoded = m.tokenizer->decode(generated);
  EXPECT_EQ(decoded, c.at("decoded_raw").get<std::string>());
}

// ---- Sa2VA-4B template: Qwen2 + phi3_chat --------------------------------------------------------

TEST(Phi3Conformance, StopRulesComeFromTheTokenizerAndTheTemplate) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny-phi3");
  const Sa2vaModel& m = model_of(dir);
  EXPECT_EQ(m.chat->name, "phi3_chat");
  const StopRules stop = m.stop_rules();
  EXPECT_EQ(stop.eos_id, m.tokenizer->token_id("<|im_end|>"));  // tokenizer_config.json's eos
  EXPECT_EQ(stop.stop_words, std::vector<std::string>{"<|end|>"});
}

TEST(Phi3Conformance, EosIsTheTokenizersNotTheLlmConfigs) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny-phi3");
  // The same model with an llm_config eos_token_id that differs from the tokenizer's eos
  // (<|endoftext|>, as the Qwen2.5 base configs have it): generation still ends on <|im_end|>.
  const std::string copy = test::temp_dir("phi3-eos");
  json config;
  std::ifstream(dir + "/config.json") >> config;
  config["llm_config"]["eos_token_id"] = 151643;
  std::ofstream(copy + "/config.json") << config.dump();
  for (const char* file : {"model.safetensors", "tokenizer.json", "tokenizer_config.json"})
    std::filesystem::create_symlink(dir + "/" + file, copy + "/" + file);
  const auto m = Sa2vaModel::load(copy, Precision::F32);
  EXPECT_EQ(m->config.llm.eos_token_id, 151643);
  EXPECT_EQ(m->stop_rules().eos_id, 151645);
}

TEST(Phi3Conformance, ImageCaseEveryStage) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny-phi3");
  StageRecorder rec;
  const Prediction p = run_case(dir, "image", rec);
  ASSERT_EQ(p.masks.size(), 1u);
  EXPECT_EQ(p.masks[0][0].width, 600);
}

TEST(Phi3Conformance, GreedyGenerationMatches) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny-phi3");
  StageRecorder rec;
  const Prediction p = run_case(dir, "generate", rec);
  EXPECT_TRUE(p.masks.empty());
}

TEST(Phi3Conformance, StopsAtTheStopWordText) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny-phi3");
  expect_stop_case(dir, "stopword");
}

// ---- Sa2VA-8B path: InternLM2 + internlm2_chat -------------------------------------------------

TEST(InternLM2Conformance, StopRulesComeFromTheTokenizerAndTheTemplate) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny-internlm2");
  const Sa2vaModel& m = model_of(dir);
  EXPECT_EQ(m.chat->name, "internlm2_chat");
  const StopRules stop = m.stop_rules();
  EXPECT_EQ(stop.eos_id, 2);  // </s>: the SentencePiece model's eos
  EXPECT_EQ(stop.stop_words, std::vector<std::string>{"<|im_end|>"});
  EXPECT_EQ(m.seg_id, 1033);
  EXPECT_EQ(m.img_context_id, 1026);
}

TEST(InternLM2Conformance, ImageCaseEveryStage) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny-internlm2");
  StageRecorder rec;
  const Prediction p = run_case(dir, "image", rec);
  ASSERT_EQ(p.masks.size(), 1u);
  // The next turn's conversation is exactly the one the image_turn2 case continues.
  EXPECT_EQ(p.past_text, test::fixture_case(dir, "image_turn2")["past_text"].get<std::string>());
}

TEST(InternLM2Conformance, GcgAnswerWithTwoSegs) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny-internlm2");
  StageRecorder rec;
  const Prediction p = run_case(dir, "multiseg", rec);
  ASSERT_EQ(p.masks.size(), 2u);
}

TEST(InternLM2Conformance, GreedyGenerationMatches) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny-internlm2");
  StageRecorder rec;
  const Prediction p = run_case(dir, "generate", rec);
  EXPECT_TRUE(p.masks.empty());
}

TEST(InternLM2Conformance, ChatAndItsSecondTurn) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny-internlm2");
  StageRecorder first;
  const Prediction p = run_case(dir, "chat", first);
  // The answer decodes with a leading space (" I can ..."); the conversation continues with the
  // stripped answer, as the second turn's golden past_text.
  EXPECT_EQ(p.past_text, test::fixture_case(dir, "chat_turn2")["past_text"].get<std::string>());
  StageRecorder second;
  run_case(dir, "chat_turn2", second);
}

TEST(InternLM2Conformance, LaterTurnsWithAndWithoutTheImage) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny-internlm2");
  StageRecorder with_image;
  const Prediction p = run_case(dir, "image_turn2", with_image);
  EXPECT_EQ(p.masks.size(), 1u);
  // No image: the <IMG_CONTEXT> tokens of the conversation are embedded as ordinary tokens and the
  // generated [SEG] gives no mask.
  StageRecorder without_image;
  const Prediction q = run_case(dir, "later_turn_no_image", without_image);
  EXPECT_TRUE(q.masks.empty());
}

TEST(InternLM2Conformance, StopsAtTheTokenizersEos) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny-internlm2");
  expect_stop_case(dir, "stop_eos");
}

}  // namespace
}  // namespace sa2va
