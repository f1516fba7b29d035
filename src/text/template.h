// Chat templates (upstream PROMPT_TEMPLATE, docs/tokenizer-template.md §4) and the prompt text Sa2VA's
// predict_forward builds: image/video token strings, visual-prompt regions, stop words.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace sa2va {

inline constexpr std::string_view kImageStart = "<img>";
inline constexpr std::string_view kImageEnd = "</img>";
inline constexpr std::string_view kImageContext = "<IMG_CONTEXT>";
inline constexpr std::string_view kVisualPromptStart = "<vp>";
inline constexpr std::string_view kVisualPromptEnd = "</vp>";
inline constexpr std::string_view kSegToken = "[SEG]";

struct ChatTemplate {
  std::string name;
  std::string instruction;  // contains "{input}"
  std::string suffix;
  std::vector<std::string> stop_words;
};

// Template by config name ("qwen_chat", "phi3_chat", "internlm2_chat"; '-' is read as '_').
// Throws sa2va::Error for an unknown name.
const ChatTemplate& chat_template(std::string name);

// "<img>" + "<IMG_CONTEXT>" x (tiles * tokens_per_tile) + "</img>" (no trailing newline).
std::string image_token_string(int tiles, int tokens_per_tile = 256);
// One image block per frame, joined by '\n' (no trailing newline).
std::string video_token_string(int frames, int tokens_per_frame = 256);
// "\nThere are K part regions in the picture: region1<vp><IMG_CONTEXT>xn1</vp>, ... .\n"; "" for no regions.
std::string region_prompt_string(const std::vector<int>& region_token_counts);

// Replaces every "<image>" in `text` with `visual_tokens` (image or video string + region string).
std::string replace_image_placeholder(std::string_view text, std::string_view visual_tokens);

// past_text + instruction with {input} = text where "<image>" became `visual_tokens`
// (pass "" for a text-only turn: the placeholder is removed).
std::string build_prompt(const ChatTemplate& chat, std::string_view text, std::string_view visual_tokens,
                         std::string_view past_text = "");

// StopWordStoppingCriteria: the decoded generated text with every '\r' and '\n' removed ends with
// one of the template's stop words.
bool ends_with_stop_word(std::string_view decoded_generated, const ChatTemplate& chat);

}  // namespace sa2va
