// Chat templates and prompt construction against the sa2va-tiny fixture (prompt_text in meta.json,
// prompt_ids in the goldens), plus the stop-word check.
#include "text/template.h"

#include <fstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "test_util.h"
#include "text/tokenizer.h"

namespace sa2va {
namespace {

TEST(ChatTemplate, KnownTemplatesByConfigName) {
  EXPECT_EQ(chat_template("qwen_chat").instruction, "<|im_start|>user\n{input}<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(chat_template("qwen-chat").stop_words, (std::vector<std::string>{"<|im_end|>", "<|endoftext|>"}));
  EXPECT_EQ(chat_template("phi3_chat").instruction, "<|user|>\n{input}<|end|>\n<|assistant|>\n");
  EXPECT_EQ(chat_template("phi3_chat").suffix, "<|end|>");
  EXPECT_EQ(chat_template("internlm2-chat").stop_words, (std::vector<std::string>{"<|im_end|>"}));
  EXPECT_THROW(chat_template("vicuna"), Error);
}

TEST(ChatTemplate, TokenStrings) {
  EXPECT_EQ(image_token_string(1, 2), "<img><IMG_CONTEXT><IMG_CONTEXT></img>");
  EXPECT_EQ(image_token_string(3).size(), 5 + 768 * 13 + 6u);
  EXPECT_EQ(video_token_string(2, 1), "<img><IMG_CONTEXT></img>\n<img><IMG_CONTEXT></img>");
  EXPECT_EQ(region_prompt_string({2, 1}),
            "\nThere are 2 part regions in the picture: region1<vp><IMG_CONTEXT><IMG_CONTEXT></vp>, "
            "region2<vp><IMG_CONTEXT></vp>.\n");
  EXPECT_EQ(region_prompt_string({}), "");
  const auto& qwen = chat_template("qwen_chat");
  EXPECT_EQ(build_prompt(qwen, "<image>Hi {x}", "", "past"), "past<|im_start|>user\nHi {x}<|im_end|>\n<|im_start|>assistant\n");
}

TEST(ChatTemplate, StopWordsIgnoreNewlines) {
  const auto& qwen = chat_template("qwen_chat");
  EXPECT_TRUE(ends_with_stop_word("Sure, [SEG].<|im_end|>", qwen));
  EXPECT_TRUE(ends_with_stop_word("Sure.<|endoftext|>\n", qwen));
  EXPECT_TRUE(ends_with_stop_word("x<|im_\r\nend|>", qwen));
  EXPECT_FALSE(ends_with_stop_word("Sure, [SEG].", qwen));
  EXPECT_FALSE(ends_with_stop_word("<|im_end|> more", qwen));
  EXPECT_TRUE(ends_with_stop_word("ok<|end|>", chat_template("phi3_chat")));
  EXPECT_FALSE(ends_with_stop_word("ok<|endoftext|>", chat_template("internlm2_chat")));
}

// Builds each case's prompt the way predict_forward does and compares text and ids with the fixture.
TEST(ChatTemplate, FixturePromptsTextAndIds) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  std::ifstream file(dir + "/meta.json");
  const auto meta = nlohmann::json::parse(file);
  const auto tokenizer = Tokenizer::load(dir);
  const auto& chat = chat_template("qwen_chat");
  int checked = 0;
  for (const auto& [name, c] : meta["cases"].items()) {
    std::string visual;
    const std::string kind = c["kind"];
    if (kind == "video") {
      visual = video_token_string(c["llm_frames"].get<int>());
    } else {
      // The image string's tile count is whatever the prompt holds: count context tokens in <img>...</img>.
      const std::string prompt_text = c["prompt_text"];
      const size_t begin = prompt_text.find("<img>"), end = prompt_text.find("</img>");
      ASSERT_NE(begin, std::string::npos);
      size_t contexts = 0;
      for (size_t p = begin; (p = prompt_text.find("<IMG_CONTEXT>", p)) < end; p += 13) {
        ++contexts;
      }
      ASSERT_EQ(contexts % 256, 0u);
      visual = image_token_string(int(contexts / 256));
      if (c.contains("num_tiles")) {
        EXPECT_EQ(int(contexts / 256), c["num_tiles"].get<int>());
      }
      if (kind == "visual_prompt") visual += region_prompt_string(c["region_pixels"].get<std::vector<int>>());
    }
    const std::string prompt = build_prompt(chat, c["prompt"].get<std::string>(), visual);
    EXPECT_EQ(prompt, c["prompt_text"].get<std::string>()) << name;
    const Tensor golden = test::load_golden(dir + "/goldens/" + name + ".safetensors", "prompt_ids");
    ASSERT_EQ(golden.dtype(), DType::I64);
    const auto ids = tokenizer->encode(prompt);
    std::vector<int32_t> expected(golden.data<int64_t>(), golden.data<int64_t>() + golden.numel());
    EXPECT_EQ(ids, expected) << name;
    if (c.contains("answer_ids")) {
      const auto answer = c["answer_ids"].get<std::vector<int32_t>>();
      EXPECT_EQ(tokenizer->decode(answer), c["answer_text"].get<std::string>()) << name;
      EXPECT_TRUE(ends_with_stop_word(tokenizer->decode(answer), chat)) << name;
    }
    ++checked;
  }
  EXPECT_EQ(checked, 5);
}

}  // namespace
}  // namespace sa2va
