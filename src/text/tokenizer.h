// Tokenizer interface shared by the Qwen2 byte-level BPE (Sa2VA-1B/4B) and the InternLM2
// SentencePiece tokenizer (Sa2VA-8B), plus the added-token splitter both use.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace sa2va {

// The largest token id a tokenizer file may use. Ids index dense per-id tables, so the bound sits
// well above any real vocabulary (Qwen2's ~152k, InternLM2's ~93k) and far below what a corrupt id
// would make those tables cost (an id near 2^31 would ask for gigabytes).
constexpr int64_t kMaxTokenId = (int64_t(1) << 24) - 1;

// A token added on top of the model vocabulary (HF `AddedToken`).
struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool special = false;
  bool normalized = false;   // matched after normalization instead of on the raw text
  bool lstrip = false;       // swallows the whitespace on its left
  bool rstrip = false;       // swallows the whitespace on its right
  bool single_word = false;  // only matches when not inside a word
};

// An added token from its JSON entry (tokenizer.json "added_tokens" or tokenizer_config.json
// "added_tokens_decoder"), with HF's defaults for absent flags.
AddedToken added_token_from_json(int32_t id, const nlohmann::json& entry);

// Finds added tokens in text: at each position the longest token wins, scanning left to right.
class AddedVocabulary {
 public:
  struct Segment {
    std::string_view text;  // the matched span (incl. stripped whitespace) or the text between matches
    int32_t id = -1;        // token id for a match, -1 for plain text
  };
  void add(AddedToken token);  // a later token with the same content replaces the earlier one
  bool empty() const { return tokens_.empty(); }
  // Splits `text` using only the tokens whose `normalized` flag equals `normalized`.
  std::vector<Segment> split(std::string_view text, bool normalized) const;
  const AddedToken* find(std::string_view content) const;
  const AddedToken* find(int32_t id) const;
  const std::vector<AddedToken>& tokens() const { return tokens_; }
  bool has_normalized_tokens() const;

 private:
  std::vector<AddedToken> tokens_;
  std::unordered_map<std::string, size_t> by_content_;
  std::unordered_map<int32_t, size_t> by_id_;
  std::array<std::vector<size_t>, 256> by_first_byte_;  // candidates, longest first
};

// The parts of tokenizer_config.json the tokenizers use (empty when the file is absent).
struct TokenizerConfig {
  std::string bos_token, eos_token, unk_token, pad_token;
  int add_bos_token = -1;                 // -1 unset, 0 false, 1 true
  int clean_up_tokenization_spaces = -1;  // -1 unset, 0 false, 1 true
  // "additional_special_tokens" of tokenizer_config.json, else of special_tokens_map.json.
  std::vector<std::string> additional_special_tokens;
  std::vector<AddedToken> added_tokens_decoder;
};
TokenizerConfig read_tokenizer_config(const std::string& model_dir);

// Hugging Face's clean_up_tokenization: " ." " ?" " !" " ," " ' " " n't" " 'm" " 's" " 've" " 're"
// lose their space, each replaced over the whole text in that order.
std::string clean_up_tokenization(std::string text);

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Loads from a model folder: tokenizer.json (byte-level BPE) or tokenizer.model (SentencePiece,
  // with added_tokens.json / tokenizer_config.json). Throws sa2va::Error naming the file and problem.
  static std::unique_ptr<Tokenizer> load(const std::string& model_dir);

  // Token ids of `text` as the reference `tokenizer.encode(text)` gives them (BOS only where the
  // tokenizer adds one). Added tokens in the text are always recognised. Throws on invalid UTF-8.
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  // Text of `ids`; ids without a token are ignored. Invalid UTF-8 becomes U+FFFD.
  virtual std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const = 0;

  // Id of an exact token string (added tokens first), or -1.
  virtual int32_t token_id(std::string_view token) const = 0;
  // Token string of an id (as stored in the vocabulary), or "" when there is none.
  virtual std::string token(int32_t id) const = 0;
  // One past the largest token id.
  virtual int32_t vocab_size() const = 0;
  virtual std::string_view kind() const = 0;  // "bpe" or "sentencepiece"
  const AddedVocabulary& added_tokens() const { return added_; }

  // eos/bos from tokenizer_config.json when present, else the tokenizer's own defaults; -1 if none.
  int32_t eos_id() const { return eos_id_; }
  int32_t bos_id() const { return bos_id_; }
  bool adds_bos() const { return adds_bos_; }

 protected:
  AddedVocabulary added_;
  int32_t eos_id_ = -1;
  int32_t bos_id_ = -1;
  bool adds_bos_ = false;
};

}  // namespace sa2va
