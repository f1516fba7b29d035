// Byte-level BPE tokenizer read from a Hugging Face tokenizer.json (Qwen2 / Qwen2.5: Sa2VA-1B, 4B).
// Pipeline: added tokens -> NFC -> Qwen2 split regex -> GPT-2 byte map -> BPE merges by rank.
#pragma once
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "text/tokenizer.h"

namespace sa2va {

class BpeTokenizer : public Tokenizer {
 public:
  // `json_path` is a tokenizer.json; tokenizer_config.json next to it is read when present.
  explicit BpeTokenizer(const std::string& json_path);
  // True when the file's model is BPE with a ByteLevel pre-tokenizer/decoder (what this class reads).
  static bool is_byte_level_bpe(const std::string& json_path);

  std::vector<int32_t> encode(std::string_view text) const override;
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const override;
  int32_t token_id(std::string_view token) const override;
  std::string token(int32_t id) const override;
  int32_t vocab_size() const override { return static_cast<int32_t>(token_bytes_.size()); }
  std::string_view kind() const override { return "bpe"; }

  // The Qwen2 pre-tokenizer: byte ranges of the pieces of (normalized) `text`.
  static std::vector<std::string_view> pre_tokenize(std::string_view text);

 private:
  struct Merge {
    int32_t rank;
    int32_t merged_id;
  };
  void encode_text(std::string_view text, std::vector<int32_t>& out) const;
  void encode_piece(std::string_view piece, std::vector<int32_t>& out) const;
  void apply_merges(std::vector<int32_t>& symbols) const;

  std::string path_;
  bool nfc_ = false;
  bool ignore_merges_ = false;
  std::unordered_map<std::string, int32_t> vocab_;         // byte-level token text -> id
  std::vector<std::string> id_to_token_;                   // "" for ids without a token
  std::vector<std::string> token_bytes_;                   // what decode emits for each id
  std::vector<bool> has_token_;
  bool clean_up_spaces_ = false;  // tokenizer_config.json clean_up_tokenization_spaces
  std::unordered_map<uint64_t, Merge> merges_;             // (left id << 32 | right id) -> merge
  std::array<int32_t, 256> byte_token_{};                  // id of each single-byte token
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;  // piece -> ids
};

}  // namespace sa2va
