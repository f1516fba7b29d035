// Byte-level BPE tokenizer read from a Hugging Face tokenizer.json (Qwen2 / Qwen2.5: Sa2VA-1B, 4B).
// Pipeline: added tokens -> NFC -> Qwen2 split regex -> GPT-2 byte map -> BPE merges by rank.
#pragma once
#include <array>
#include <cstdint>
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
  int32_t vocab_size() const override { return static_cast<int32_t>(id_entry_.size()); }
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

  // The vocabulary in a few flat arrays (a hash-map node and two strings per token would cost ~8x
  // the memory, ~25 MB for Qwen2's 151k tokens): texts in one buffer, found by an open-addressing
  // table of entry indices, and what decode emits per id in another buffer.
  struct VocabEntry {
    uint32_t start, length;  // in texts_
    int32_t id;
  };
  int32_t find_vocab(std::string_view text) const;  // -1 when absent
  void add_vocab(std::string_view text, int32_t id);
  std::string_view entry_text(int32_t entry) const;
  // Merges by (left id << 32 | right id), open addressing; kNoMerge marks an empty slot (no pair of
  // ids below 2^31 gives it).
  struct MergeSlot {
    uint64_t key;
    Merge merge;
  };
  static constexpr uint64_t kNoMerge = ~uint64_t{0};
  const Merge* find_merge(int32_t left, int32_t right) const;

  std::string path_;
  bool nfc_ = false;
  bool ignore_merges_ = false;
  std::string texts_;                     // byte-level token texts, back to back
  std::vector<VocabEntry> entries_;       // vocab entries, then added tokens' texts
  std::vector<int32_t> vocab_slots_;      // entry index of vocab texts by hash, -1 empty
  std::vector<int32_t> id_entry_;         // the entry token(id) returns, -1 for ids without a token
  std::string decoded_;                   // what decode emits for each id, back to back
  std::vector<uint32_t> decoded_start_;   // id's bytes: [decoded_start_[id], decoded_start_[id + 1])
  bool clean_up_spaces_ = false;  // tokenizer_config.json clean_up_tokenization_spaces
  std::vector<MergeSlot> merge_slots_;
  std::array<int32_t, 256> byte_token_{};                  // id of each single-byte token
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;  // piece -> ids
};

}  // namespace sa2va
