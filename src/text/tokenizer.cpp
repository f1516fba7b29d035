#include "text/tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "text/bpe_tokenizer.h"
#include "text/sentencepiece_tokenizer.h"
#include "text/unicode.h"

namespace sa2va {
namespace {

// HF's `\w` test for single_word tokens, on the code point before/after a match.
bool is_word_char(char32_t cp) { return cp == U'_' || unicode::is_letter(cp) || unicode::is_number(cp); }

char32_t last_code_point(std::string_view text) {
  size_t i = text.size();
  while (i > 0 && (static_cast<uint8_t>(text[i - 1]) & 0xC0) == 0x80) --i;
  if (i == 0) return 0;
  std::vector<char32_t> cps;
  unicode::decode_utf8(text.substr(i - 1), cps);
  return cps.empty() ? 0 : cps.back();
}

char32_t first_code_point(std::string_view text) {
  if (text.empty()) return 0;
  size_t length = 1;
  while (length < text.size() && length < 4 && (static_cast<uint8_t>(text[length]) & 0xC0) == 0x80) ++length;
  std::vector<char32_t> cps;
  unicode::decode_utf8(text.substr(0, length), cps);
  return cps.empty() ? 0 : cps.front();
}

size_t utf8_length_of(char32_t cp) { return cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4; }

}  // namespace

AddedToken added_token_from_json(int32_t id, const nlohmann::json& entry) {
  AddedToken token;
  token.id = id;
  token.content = entry.at("content").get<std::string>();
  token.special = entry.value("special", false);
  token.normalized = entry.value("normalized", !token.special);
  token.lstrip = entry.value("lstrip", false);
  token.rstrip = entry.value("rstrip", false);
  token.single_word = entry.value("single_word", false);
  return token;
}

void AddedVocabulary::add(AddedToken token) {
  check(!token.content.empty(), "added token " + std::to_string(token.id) + " has empty content");
  if (const auto it = by_content_.find(token.content); it != by_content_.end()) {
    by_id_.erase(tokens_[it->second].id);
    tokens_[it->second] = token;
    by_id_[token.id] = it->second;
    return;
  }
  const size_t index = tokens_.size();
  by_content_[token.content] = index;
  by_id_[token.id] = index;
  auto& bucket = by_first_byte_[static_cast<uint8_t>(token.content[0])];
  tokens_.push_back(std::move(token));
  bucket.push_back(index);
  std::stable_sort(bucket.begin(), bucket.end(),
                   [&](size_t a, size_t b) { return tokens_[a].content.size() > tokens_[b].content.size(); });
}

const AddedToken* AddedVocabulary::find(std::string_view content) const {
  const auto it = by_content_.find(std::string(content));
  return it == by_content_.end() ? nullptr : &tokens_[it->second];
}

const AddedToken* AddedVocabulary::find(int32_t id) const {
  const auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &tokens_[it->second];
}

bool AddedVocabulary::has_normalized_tokens() const {
  return std::any_of(tokens_.begin(), tokens_.end(), [](const AddedToken& t) { return t.normalized; });
}

std::vector<AddedVocabulary::Segment> AddedVocabulary::split(std::string_view text, bool normalized) const {
  std::vector<Segment> segments;
  size_t text_start = 0;  // start of the pending plain-text span
  size_t pos = 0;
  while (pos < text.size()) {
    const AddedToken* match = nullptr;
    for (size_t index : by_first_byte_[static_cast<uint8_t>(text[pos])]) {
      const AddedToken& candidate = tokens_[index];
      if (candidate.normalized == normalized && text.substr(pos).starts_with(candidate.content)) {
        match = &candidate;  // buckets are sorted longest first
        break;
      }
    }
    if (!match) {
      ++pos;
      continue;
    }
    size_t start = pos, stop = pos + match->content.size();
    if (match->single_word && ((start > 0 && is_word_char(last_code_point(text.substr(0, start)))) ||
                               (stop < text.size() && is_word_char(first_code_point(text.substr(stop)))))) {
      pos = stop;  // a discarded match stays plain text; scanning resumes after it
      continue;
    }
    if (match->lstrip) {
      while (start > text_start) {
        const char32_t cp = last_code_point(text.substr(0, start));
        if (!unicode::is_whitespace(cp)) break;
        start -= utf8_length_of(cp);
      }
    }
    if (match->rstrip) {
      while (stop < text.size()) {
        const char32_t cp = first_code_point(text.substr(stop));
        if (!unicode::is_whitespace(cp)) break;
        stop += utf8_length_of(cp);
      }
    }
    if (start > text_start) segments.push_back({text.substr(text_start, start - text_start), -1});
    segments.push_back({text.substr(start, stop - start), match->id});
    text_start = pos = stop;
  }
  if (text_start < text.size()) segments.push_back({text.substr(text_start), -1});
  return segments;
}

namespace {

// A list of special tokens, each written as a string or as an AddedToken object.
std::vector<std::string> token_list(const nlohmann::json& json, const char* key) {
  std::vector<std::string> out;
  if (!json.contains(key) || !json[key].is_array()) return out;
  for (const auto& entry : json[key])
    out.push_back(entry.is_string() ? entry.get<std::string>() : entry.at("content").get<std::string>());
  return out;
}

}  // namespace

std::string clean_up_tokenization(std::string text) {
  static const std::pair<std::string_view, std::string_view> kRules[] = {
      {" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"},
      {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
  for (const auto& [from, to] : kRules) {
    std::string out;
    size_t pos = 0;
    for (size_t hit; (hit = text.find(from, pos)) != std::string::npos; pos = hit + from.size())
      out.append(text, pos, hit - pos).append(to);
    text = out.append(text, pos, std::string::npos);
  }
  return text;
}

TokenizerConfig read_tokenizer_config(const std::string& model_dir) {
  TokenizerConfig config;
  const std::string path = (std::filesystem::path(model_dir) / "tokenizer_config.json").string();
  // special_tokens_map.json (written next to it by save_pretrained) supplies the additional special
  // tokens when tokenizer_config.json does not list them.
  const std::string map_path = (std::filesystem::path(model_dir) / "special_tokens_map.json").string();
  if (std::ifstream map_file(map_path); map_file) {
    try {
      config.additional_special_tokens = token_list(nlohmann::json::parse(map_file), "additional_special_tokens");
    } catch (const nlohmann::json::exception& e) {
      throw Error(map_path + ": invalid special tokens map: " + e.what());
    }
  }
  std::ifstream file(path);
  if (!file) return config;
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(file);
    // Special tokens are written either as a string or as an AddedToken object.
    const auto token_text = [&](const char* key) -> std::string {
      if (!json.contains(key) || json[key].is_null()) return "";
      const auto& value = json[key];
      return value.is_string() ? value.get<std::string>() : value.at("content").get<std::string>();
    };
    config.bos_token = token_text("bos_token");
    config.eos_token = token_text("eos_token");
    config.unk_token = token_text("unk_token");
    config.pad_token = token_text("pad_token");
    if (json.contains("add_bos_token") && json["add_bos_token"].is_boolean())
      config.add_bos_token = json["add_bos_token"].get<bool>() ? 1 : 0;
    if (json.contains("clean_up_tokenization_spaces") && json["clean_up_tokenization_spaces"].is_boolean())
      config.clean_up_tokenization_spaces = json["clean_up_tokenization_spaces"].get<bool>() ? 1 : 0;
    if (json.contains("additional_special_tokens"))
      config.additional_special_tokens = token_list(json, "additional_special_tokens");
    if (json.contains("added_tokens_decoder")) {
      for (const auto& [id, entry] : json["added_tokens_decoder"].items()) {
        size_t used = 0;
        const long long parsed = std::stoll(id, &used);
        if (used != id.size() || parsed < 0 || parsed > kMaxTokenId)
          throw Error(path + ": added_tokens_decoder key " + id + " is not a token id from 0 to " +
                      std::to_string(kMaxTokenId));
        config.added_tokens_decoder.push_back(added_token_from_json(static_cast<int32_t>(parsed), entry));
      }
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error(path + ": invalid tokenizer config: " + e.what());
  } catch (const std::logic_error& e) {
    throw Error(path + ": invalid added token id: " + e.what());
  }
  return config;
}

std::unique_ptr<Tokenizer> Tokenizer::load(const std::string& model_dir) {
  namespace fs = std::filesystem;
  const fs::path dir(model_dir);
  check(fs::is_directory(dir), model_dir + ": model folder not found");
  const fs::path json = dir / "tokenizer.json", model = dir / "tokenizer.model";
  // A tokenizer.json that is not byte-level BPE (e.g. a converted SentencePiece) defers to tokenizer.model.
  if (fs::exists(json) && (!fs::exists(model) || BpeTokenizer::is_byte_level_bpe(json.string())))
    return std::make_unique<BpeTokenizer>(json.string());
  if (fs::exists(model)) return std::make_unique<SentencePieceTokenizer>(model_dir);
  throw Error(model_dir + ": no tokenizer.json or tokenizer.model in the model folder");
}

}  // namespace sa2va
