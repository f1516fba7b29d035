#include "io/config.h"

#include <gtest/gtest.h>

#include <tuple>
#include <vector>

#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "test_util.h"

namespace sa2va {
namespace {
using json = nlohmann::json;

std::string error_of(const json& j) {
  try {
    parse_config(j, "m/config.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Config, ParsesTheFixtureConfig) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  ModelConfig c = load_config(dir);
  EXPECT_EQ(c.template_name, "qwen_chat");
  EXPECT_EQ(c.vision.hidden_size, 32);
  EXPECT_EQ(c.vision.num_layers, 2);
  EXPECT_EQ(c.llm.arch, LlmArch::Qwen2);
  EXPECT_EQ(c.llm.hidden_size, 64);
  EXPECT_EQ(c.llm.num_kv_heads, 2);
  EXPECT_EQ(c.llm.head_dim, 16);
  EXPECT_EQ(c.llm.vocab_size, 151936);
  EXPECT_TRUE(c.llm.tie_word_embeddings);
  EXPECT_EQ(c.llm.eos_token_id, 151645);
  EXPECT_EQ(c.num_image_tokens(), 256);
  ASSERT_TRUE(c.has_sam2_override);
  EXPECT_EQ(c.sam2.embed_dim, 16);
  EXPECT_EQ(c.sam2.stages, (std::vector<int>{1, 2, 3, 2}));
  EXPECT_EQ(c.sam2.global_att_blocks, (std::vector<int>{5}));
  EXPECT_EQ(c.sam2.backbone_channel_list, (std::vector<int>{128, 64, 32, 16}));
  EXPECT_EQ(c.sam2.mem_attn_layers, 1);
  EXPECT_EQ(c.sam2.mem_attn_ffn, 256);
  EXPECT_EQ(c.sam2.fuser_layers, 1);
}

TEST(Config, RoundTripsThroughJson) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  ModelConfig a = load_config(dir);
  ModelConfig b = parse_config(config_to_json(a), "roundtrip");
  EXPECT_EQ(config_to_json(a), config_to_json(b));
}

TEST(Config, ReportsBadFieldsByPath) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  json good;
  std::ifstream(dir + "/config.json") >> good;
  ASSERT_EQ(error_of(good), "");

  json j = good;
  j["llm_config"]["hidden_size"] = "64";
  EXPECT_NE(error_of(j).find("llm_config.hidden_size: must be an integer"), std::string::npos) << error_of(j);

  j = good;
  j["llm_config"].erase("num_hidden_layers");
  EXPECT_NE(error_of(j).find("llm_config.num_hidden_layers: missing required field"), std::string::npos);

  j = good;
  j["llm_config"]["architectures"] = {"MistralForCausalLM"};
  EXPECT_NE(error_of(j).find("unknown language model 'MistralForCausalLM'"), std::string::npos);

  j = good;
  j["architectures"] = {"LlavaForConditionalGeneration"};
  EXPECT_NE(error_of(j).find("not a Sa2VA checkpoint"), std::string::npos);

  j = good;
  j.erase("vision_config");
  EXPECT_NE(error_of(j).find("vision_config: missing required object"), std::string::npos);

  j = good;
  j["sam2_config"]["hiera"]["stages"] = {1, 2};
  EXPECT_NE(error_of(j).find("sam2_config.hiera.stages"), std::string::npos);

  // Numbers out of the target type's range (found by fuzzing: undefined behaviour when converted).
  j = good;
  j["llm_config"]["rms_norm_eps"] = 1e300;
  EXPECT_NE(error_of(j).find("llm_config.rms_norm_eps: must be a finite number a float can hold"), std::string::npos)
      << error_of(j);
  j = good;
  j["llm_config"]["hidden_size"] = int64_t{1} << 40;
  EXPECT_NE(error_of(j).find("llm_config.hidden_size: must be an integer that fits an int"), std::string::npos);

  // Values that would load and make every answer noise.
  for (const auto& [object, field, value, words] :
       std::vector<std::tuple<std::string, std::string, json, std::string>>{
           {"llm_config", "rope_theta", 0, "llm_config.rope_theta: must be positive"},
           {"llm_config", "rms_norm_eps", -1.0, "llm_config.rms_norm_eps: must be positive"},
           {"llm_config", "max_position_embeddings", 0, "llm_config.max_position_embeddings: must be positive"},
           {"vision_config", "layer_norm_eps", -1.0, "vision_config.layer_norm_eps: must be positive"},
           {"", "force_image_size", 224, "force_image_size: must equal vision_config.image_size"}}) {
    j = good;
    (object.empty() ? j : j[object])[field] = value;
    EXPECT_NE(error_of(j).find(words), std::string::npos) << field << ": " << error_of(j);
  }
  j = good;
  j["llm_config"]["rope_scaling"] = {{"type", "dynamic"}, {"factor", 0}};
  EXPECT_NE(error_of(j).find("rope_scaling.factor: must be at least 1"), std::string::npos) << error_of(j);

  j = good;
  j["template"] = 3;
  EXPECT_NE(error_of(j).find("template: must be a string"), std::string::npos);
  EXPECT_NE(error_of(j).find("m/config.json"), std::string::npos);
}

TEST(Config, InternLM2FixtureAndTheDefaultsOfAbsentFields) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny-internlm2");
  json j;
  std::ifstream(dir + "/config.json") >> j;
  const ModelConfig c = parse_config(j, "internlm2");
  EXPECT_EQ(c.template_name, "internlm2_chat");
  EXPECT_EQ(c.llm.arch, LlmArch::InternLM2);
  EXPECT_EQ(c.llm.rope_theta, 1e6f);
  EXPECT_EQ(c.llm.rms_norm_eps, 1e-5f);
  EXPECT_FALSE(c.llm.attention_bias);
  EXPECT_FALSE(c.llm.tie_word_embeddings);
  EXPECT_EQ(c.llm.rope_scaling_type, "dynamic");
  EXPECT_EQ(c.llm.eos_token_id, 2);
  // A config.json without them takes upstream InternLM2Config's defaults: rope_theta 10000,
  // rms_norm_eps 1e-6, bias true.
  for (const char* key : {"rope_theta", "rms_norm_eps", "bias"}) j["llm_config"].erase(key);
  const ModelConfig d = parse_config(j, "internlm2");
  EXPECT_EQ(d.llm.rope_theta, 1e4f);
  EXPECT_EQ(d.llm.rms_norm_eps, 1e-6f);
  EXPECT_TRUE(d.llm.attention_bias);
}

TEST(Config, MissingOrMalformedFile) {
  const std::string dir = test::temp_dir("cfg");
  EXPECT_THROW(load_config(dir), Error);
  std::ofstream(dir + "/config.json") << "{\"architectures\": [";
  try {
    load_config(dir);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("malformed JSON"), std::string::npos) << e.what();
  }
  // A number too large for any type is refused as malformed, not thrown past the caller (found by fuzzing).
  std::ofstream(dir + "/config.json") << "{\"llm_config\": {\"hidden_size\": 3E333333}}";
  EXPECT_THROW(load_config(dir), Error);
}

TEST(Config, RealCheckpointsDefaultToHieraL) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  json j;
  std::ifstream(dir + "/config.json") >> j;
  j.erase("sam2_config");
  ModelConfig c = parse_config(j, "x");
  EXPECT_FALSE(c.has_sam2_override);
  EXPECT_EQ(c.sam2.embed_dim, 144);
  EXPECT_EQ(c.sam2.stages, (std::vector<int>{2, 6, 36, 4}));
  EXPECT_EQ(c.sam2.mem_attn_layers, 4);
}

}  // namespace
}  // namespace sa2va
