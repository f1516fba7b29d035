// Generation: greedy decoding against the upstream golden, stop rules, teacher forcing, [SEG]
// selection and seeded sampling.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <numeric>
#include <set>

#include "core/error.h"
#include "io/config.h"
#include "io/safetensors.h"
#include "io/weights.h"
#include "models/generation.h"
#include "models/llm.h"
#include "test_util.h"
#include "tiny_llm.h"

namespace sa2va {
namespace {

using test::kImEnd;
using test::kImgContext;
using test::kSegId;
using test::to_ids;

// The generate case's prompt with the image features spliced in.
Tensor generate_case_prompt(const LanguageModel& lm, const std::string& dir) {
  const std::vector<int32_t> ids = to_ids(test::load_golden(dir + "/goldens/generate.safetensors", "prompt_ids"));
  const Tensor vit = test::load_golden(dir + "/goldens/image.safetensors", "vit_embeds");
  return splice_image_embeddings(lm.embed(ids), ids, kImgContext, image_replacement_rows(vit));
}

TEST(GenerationGolden, GreedyReproducesUpstreamIdsAndTop5) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  auto m = test::load_tiny_language_model(dir, Precision::F32);
  const std::string file = dir + "/goldens/generate.safetensors";
  const Tensor prompt = generate_case_prompt(m->lm, dir);

  std::vector<int32_t> top5_ids;
  std::vector<float> top5_logits;
  auto observer = [&](int, const float* logits, int64_t vocab) {
    std::vector<int32_t> order(static_cast<size_t>(vocab));
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + 5, order.end(),
                      [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
    for (int i = 0; i < 5; ++i) {
      top5_ids.push_back(order[i]);
      top5_logits.push_back(logits[order[i]]);
    }
  };
  SamplingOptions options;
  options.max_new_tokens = 16;
  StopRules stop;
  stop.eos_id = kImEnd;
  const GenerationResult r = generate(m->lm, prompt, options, stop, {}, observer);

  EXPECT_EQ(r.ids, to_ids(test::load_golden(file, "generated_ids")));
  EXPECT_EQ(r.stop_reason, StopReason::MaxTokens);
  EXPECT_EQ(r.prompt_length, 784);
  EXPECT_EQ(r.hidden.shape(), (Shape{784 + 15, 64}));
  EXPECT_EQ(top5_ids, to_ids(test::load_golden(file, "step_top5_ids")));
  EXPECT_TRUE(test::close_rel(Tensor::from_vector(top5_logits, {16, 5}), test::load_golden(file, "step_top5_logits"), 1e-4));

  // Teacher forcing the generated answer gives the same hidden states.
  const GenerationResult tf = teacher_forced(m->lm, prompt, r.ids, kImEnd);
  EXPECT_EQ(tf.ids, r.ids);
  EXPECT_EQ(tf.hidden.shape(), r.hidden.shape());
  EXPECT_TRUE(test::close_rel(tf.hidden, r.hidden, 1e-5));
}

TEST(GenerationGolden, MultiSegTeacherForcedSegHidden) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  auto m = test::load_tiny_language_model(dir, Precision::F32);
  const std::string file = dir + "/goldens/multiseg.safetensors";
  const std::vector<int32_t> ids = to_ids(test::load_golden(file, "input_ids"));
  const std::vector<int32_t> prompt_ids = to_ids(test::load_golden(file, "prompt_ids"));
  // Same image as the image case: its features fill the prompt.
  const Tensor vit = test::load_golden(dir + "/goldens/image.safetensors", "vit_embeds");
  const Tensor prompt = splice_image_embeddings(m->lm.embed(prompt_ids), prompt_ids, kImgContext, image_replacement_rows(vit));
  const GenerationResult r =
      teacher_forced(m->lm, prompt, std::vector<int32_t>(ids.begin() + prompt_ids.size(), ids.end()), kImEnd);
  EXPECT_EQ(r.stop_reason, StopReason::Eos);
  const Tensor seg = seg_hidden_states(r, kSegId);
  EXPECT_EQ(seg.shape(), (Shape{2, 64}));
  EXPECT_TRUE(test::close_rel(seg, test::load_golden(file, "seg.hidden"), 1e-4));
}

TEST(GenerationStop, EosAndStopWords) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  auto m = test::load_tiny_language_model(dir, Precision::F32);
  const Tensor prompt = m->lm.embed({151644, 872, 198, 9707, 151645, 198, 151644, 77091, 198});
  SamplingOptions options;
  options.max_new_tokens = 1;
  const int32_t first = generate(m->lm, prompt, options, {}).ids.at(0);

  options.max_new_tokens = 10;
  StopRules eos;
  eos.eos_id = first;
  const GenerationResult at_eos = generate(m->lm, prompt, options, eos);
  EXPECT_EQ(at_eos.ids, std::vector<int32_t>{first});
  EXPECT_EQ(at_eos.stop_reason, StopReason::Eos);
  EXPECT_EQ(at_eos.hidden.size(0), 9);

  // Every token decodes to "x\r\n"; line breaks are deleted before the ends-with test.
  StopRules words;
  words.stop_words = {"never", "xxx"};
  std::vector<size_t> seen_lengths;
  words.decode = [&](const std::vector<int32_t>& ids) {
    seen_lengths.push_back(ids.size());
    std::string s;
    for (size_t i = 0; i < ids.size(); ++i) s += "x\r\n";
    return s;
  };
  const GenerationResult at_word = generate(m->lm, prompt, options, words);
  EXPECT_EQ(at_word.ids.size(), 3u);
  EXPECT_EQ(at_word.stop_reason, StopReason::StopWord);
  EXPECT_EQ(seen_lengths, (std::vector<size_t>{1, 2, 3}));  // only generated ids are decoded
  EXPECT_EQ(at_word.hidden.size(0), 9 + 2);

  StopRules missing_decode;
  missing_decode.stop_words = {"x"};
  EXPECT_THROW(generate(m->lm, prompt, options, missing_decode), Error);
  options.max_new_tokens = 0;
  EXPECT_THROW(generate(m->lm, prompt, options, {}), Error);
  // More positions than a state holds: an error naming max_new_tokens (not a wrapped-around capacity).
  options.max_new_tokens = std::numeric_limits<int>::max();
  try {
    generate(m->lm, prompt, options, {});
    ADD_FAILURE() << "no error for max_new_tokens " << options.max_new_tokens;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("max_new_tokens 2147483647"), std::string::npos) << e.what();
  }
  // A generous limit costs only reserved memory: the answer still ends at its end-of-sequence id.
  options.max_new_tokens = 32768;
  EXPECT_EQ(generate(m->lm, prompt, options, eos).ids, std::vector<int32_t>{first});
}

TEST(GenerationStop, StopAfterLooksAtTheNewestIdAndTheWholeDecodedText) {
  StopRules stop;
  stop.eos_id = 99;
  stop.stop_words = {"<|end|>"};
  stop.decode = [](const std::vector<int32_t>& ids) {
    static const std::map<int32_t, std::string> text = {{0, "<|"}, {1, "end"}, {3, "|>"}, {4, "\r\n"}, {5, "x"},
                                                        {99, "</s>"}};
    std::string s;
    for (int32_t id : ids) s += text.at(id);
    return s;
  };
  EXPECT_FALSE(stop_after({}, stop).has_value());
  EXPECT_EQ(stop_after({5, 99}, stop), StopReason::Eos);
  EXPECT_FALSE(stop_after({99, 5}, stop).has_value());  // only the newest id is the eos test
  EXPECT_EQ(stop_after({0, 1, 3}, stop), StopReason::StopWord);  // the stop word spans three tokens
  EXPECT_EQ(stop_after({0, 1, 4, 3}, stop), StopReason::StopWord);  // line breaks are deleted first
  EXPECT_FALSE(stop_after({0, 1, 3, 5}, stop).has_value());
  StopRules no_decode;
  no_decode.stop_words = {"x"};
  EXPECT_THROW(stop_after({5}, no_decode), Error);
  // The caller's stop strings stop wherever they appear, a token carrying text past them included.
  stop.stop_strings = {"endx"};
  EXPECT_FALSE(stop_after({1}, stop).has_value());
  EXPECT_EQ(stop_after({1, 5, 5}, stop), StopReason::StopWord);
}

TEST(GenerationStop, TextHandedOverStopsShortOfWhatMayBecomeAStopString) {
  const std::vector<std::string> stops = {"STOP", "##"};
  EXPECT_EQ(first_stop_string("abc##dSTOP", stops), 3u);
  EXPECT_EQ(first_stop_string("abc", stops), std::string::npos);
  EXPECT_EQ(stop_string_safe_length("hello", stops), 5u);
  EXPECT_EQ(stop_string_safe_length("hello ST", stops), 6u);  // "ST" may become "STOP"
  EXPECT_EQ(stop_string_safe_length("hello #", stops), 6u);
  EXPECT_EQ(stop_string_safe_length("hello STOP and more", stops), 6u);
  EXPECT_EQ(stop_string_safe_length("STO", stops), 0u);
  EXPECT_EQ(stop_string_safe_length("", stops), 0u);
  EXPECT_EQ(stop_string_safe_length("abc", {}), 3u);
  // The longest tail (measured from the end) that may begin any of them, whatever their order:
  // "xab" cannot become "xa!", only "b!".
  EXPECT_EQ(stop_string_safe_length("xab", {"b!", "xa!"}), 2u);
  EXPECT_EQ(stop_string_safe_length("xab", {"xa!", "b!"}), 2u);
  EXPECT_EQ(stop_string_safe_length("say ab", {"b!", "ab!"}), 4u);
}

TEST(GenerationSeg, SelectsHiddenWhereSegWasTheInput) {
  GenerationResult r;
  r.prompt_length = 3;
  r.ids = {5, kSegId, 7, kSegId};  // the final [SEG] was never fed back: ignored
  std::vector<float> rows;
  for (int i = 0; i < 3 + 4 - 1; ++i) rows.insert(rows.end(), {float(i), float(-i)});
  r.hidden = Tensor::from_vector(rows, {6, 2});
  EXPECT_EQ(seg_hidden_states(r, kSegId).to_vector(), (std::vector<float>{4, -4}));
  r.ids = {kSegId};
  r.hidden = r.hidden.slice(0, 0, 3);
  EXPECT_EQ(seg_hidden_states(r, kSegId).shape(), (Shape{0, 2}));
}

TEST(GenerationSampling, GreedyTakesFirstMaximum) {
  const std::vector<float> logits = {1.f, 3.f, -2.f, 3.f, 0.f};
  uint64_t state = 0;
  EXPECT_EQ(argmax(logits.data(), 5), 1);
  EXPECT_EQ(choose_token(logits.data(), 5, SamplingOptions{}, state), 1);
}

TEST(GenerationSampling, SeededTopKTopP) {
  // Probabilities 0.5, 0.3, 0.15, 0.05 at temperature 1, shuffled over the ids.
  const std::vector<int32_t> id_of_rank = {4, 0, 5, 2};
  std::vector<float> logits(6, -1e9f);
  const double probs[4] = {0.5, 0.3, 0.15, 0.05};
  for (int r = 0; r < 4; ++r) logits[id_of_rank[r]] = static_cast<float>(std::log(probs[r]));

  auto draw = [&](SamplingOptions o, int n) {
    std::map<int32_t, int> counts;
    uint64_t state = o.seed;
    for (int i = 0; i < n; ++i) ++counts[choose_token(logits.data(), 6, o, state)];
    return counts;
  };
  SamplingOptions o;
  o.temperature = 1.f;
  o.seed = 42;
  const auto plain = draw(o, 4000);
  EXPECT_EQ(plain.size(), 4u);
  EXPECT_NEAR(plain.at(4) / 4000.0, 0.5, 0.04);
  EXPECT_NEAR(plain.at(2) / 4000.0, 0.05, 0.02);
  EXPECT_EQ(draw(o, 200), draw(o, 200));  // same seed, same tokens
  SamplingOptions other_seed = o;
  other_seed.seed = 43;
  EXPECT_NE(draw(o, 200), draw(other_seed, 200));

  o.top_k = 2;  // ranks 0 and 1: 0.5/0.8 and 0.3/0.8
  auto k2 = draw(o, 4000);
  EXPECT_EQ(k2.size(), 2u);
  EXPECT_NEAR(k2[4] / 4000.0, 0.625, 0.04);

  o.top_k = 0;
  o.top_p = 0.85f;  // cumulative before rank 2 is 0.8 < 0.85 → ranks 0..2
  const auto p85 = draw(o, 4000);
  EXPECT_EQ(p85.size(), 3u);
  EXPECT_EQ(p85.count(2), 0u);
  o.top_p = 0.4f;  // the best token alone already reaches 0.4
  EXPECT_EQ(draw(o, 500).size(), 1u);

  o.top_p = 1.f;
  o.temperature = 0.05f;  // sharpened: almost always the best
  EXPECT_GE(draw(o, 500)[4], 499);
}

TEST(GenerationSampling, GenerateWithSeedIsDeterministic) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  auto m = test::load_tiny_language_model(dir, Precision::F32);
  const Tensor prompt = m->lm.embed({151644, 872, 198, 9707, 151645, 198, 151644, 77091, 198});
  SamplingOptions o;
  o.max_new_tokens = 8;
  o.temperature = 1.5f;
  o.top_k = 40;
  o.top_p = 0.9f;
  o.seed = 1234;
  const GenerationResult a = generate(m->lm, prompt, o, {}), b = generate(m->lm, prompt, o, {});
  EXPECT_EQ(a.ids, b.ids);
  EXPECT_EQ(a.ids.size(), 8u);
  EXPECT_TRUE(test::close_rel(a.hidden, b.hidden, 0));
  o.top_p = 1.5f;
  EXPECT_THROW(generate(m->lm, prompt, o, {}), Error);
}

}  // namespace
}  // namespace sa2va
