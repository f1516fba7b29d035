#include "text/template.h"

#include <algorithm>
#include <array>

#include "core/error.h"

namespace sa2va {
namespace {

const std::array<ChatTemplate, 3>& templates() {
  static const std::array<ChatTemplate, 3> list = {{
      {"qwen_chat", "<|im_start|>user\n{input}<|im_end|>\n<|im_start|>assistant\n", "<|im_end|>",
       {"<|im_end|>", "<|endoftext|>"}},
      {"phi3_chat", "<|user|>\n{input}<|end|>\n<|assistant|>\n", "<|end|>", {"<|end|>"}},
      {"internlm2_chat", "<|im_start|>user\n{input}<|im_end|>\n<|im_start|>assistant\n", "<|im_end|>",
       {"<|im_end|>"}},
  }};
  return list;
}

std::string repeat(std::string_view s, int count) {
  std::string out;
  out.reserve(s.size() * size_t(std::max(count, 0)));
  for (int i = 0; i < count; ++i) out += s;
  return out;
}

std::string replace_all(std::string_view text, std::string_view from, std::string_view to) {
  std::string out;
  size_t pos = 0;
  for (size_t hit; (hit = text.find(from, pos)) != std::string_view::npos; pos = hit + from.size()) {
    out += text.substr(pos, hit - pos);
    out += to;
  }
  out += text.substr(pos);
  return out;
}

}  // namespace

const ChatTemplate& chat_template(std::string name) {
  std::replace(name.begin(), name.end(), '-', '_');
  for (const auto& t : templates())
    if (t.name == name) return t;
  throw Error("unknown chat template \"" + name + "\" (known: qwen_chat, phi3_chat, internlm2_chat)");
}

std::string image_token_string(int tiles, int tokens_per_tile) {
  check(tiles >= 0 && tokens_per_tile >= 0, "image_token_string: negative tile or token count");
  return std::string(kImageStart) + repeat(kImageContext, tiles * tokens_per_tile) + std::string(kImageEnd);
}

std::string video_token_string(int frames, int tokens_per_frame) {
  check(frames >= 0, "video_token_string: negative frame count");
  std::string out;
  for (int f = 0; f < frames; ++f) {
    if (f > 0) out += '\n';
    out += image_token_string(1, tokens_per_frame);
  }
  return out;
}

std::string region_prompt_string(const std::vector<int>& region_token_counts) {
  if (region_token_counts.empty()) return "";
  std::string out = "\nThere are " + std::to_string(region_token_counts.size()) + " part regions in the picture: ";
  for (size_t k = 0; k < region_token_counts.size(); ++k) {
    check(region_token_counts[k] >= 0, "region_prompt_string: negative token count");
    out += "region" + std::to_string(k + 1) + std::string(kVisualPromptStart) +
           repeat(kImageContext, region_token_counts[k]) + std::string(kVisualPromptEnd);
    out += k + 1 < region_token_counts.size() ? ", " : ".\n";
  }
  return out;
}

std::string replace_image_placeholder(std::string_view text, std::string_view visual_tokens) {
  return replace_all(text, "<image>", visual_tokens);
}

std::string build_prompt(const ChatTemplate& chat, std::string_view text, std::string_view visual_tokens,
                         std::string_view past_text) {
  const std::string input = replace_image_placeholder(text, visual_tokens);
  return std::string(past_text) + replace_all(chat.instruction, "{input}", input);
}

bool ends_with_stop_word(std::string_view decoded_generated, const ChatTemplate& chat) {
  std::string text;
  text.reserve(decoded_generated.size());
  for (char c : decoded_generated)
    if (c != '\r' && c != '\n') text.push_back(c);
  return std::any_of(chat.stop_words.begin(), chat.stop_words.end(),
                     [&](const std::string& word) { return std::string_view(text).ends_with(word); });
}

}  // namespace sa2va
