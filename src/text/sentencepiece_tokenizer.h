// InternLM2 tokenizer (Sa2VA-8B): a SentencePiece model (tokenizer.model) plus the added tokens of
// tokenizer_config.json (added_tokens_decoder) and added_tokens.json, as the slow
// `InternLM2Tokenizer` uses them.
#pragma once
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "text/tokenizer.h"

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace sa2va {

class SentencePieceTokenizer : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const std::string& model_dir);
  ~SentencePieceTokenizer() override;

  std::vector<int32_t> encode(std::string_view text) const override;
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const override;
  int32_t token_id(std::string_view token) const override;
  std::string token(int32_t id) const override;
  int32_t vocab_size() const override { return vocab_size_; }
  std::string_view kind() const override { return "sentencepiece"; }

 private:
  // InternLM2Tokenizer.convert_tokens_to_string over a run of ids (docs/tokenizer-template.md §3).
  std::string decode_run(const std::vector<int32_t>& run) const;
  bool is_special(int32_t id) const;  // its token is one of the tokenizer's special tokens

  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  int32_t piece_count_ = 0;
  int32_t vocab_size_ = 0;
  // bos, eos, unk, pad and the additional special tokens (Hugging Face's all_special_tokens).
  std::set<std::string, std::less<>> special_tokens_;
  std::set<std::string, std::less<>> additional_special_tokens_;
  bool clean_up_spaces_ = false;  // clean_up_tokenization_spaces: applied to the joined text
};

}  // namespace sa2va
