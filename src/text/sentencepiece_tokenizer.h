// InternLM2 tokenizer (Sa2VA-8B): a SentencePiece model (tokenizer.model) plus the added tokens of
// tokenizer_config.json (added_tokens_decoder) and added_tokens.json, as the slow
// `InternLM2Tokenizer` uses them.
#pragma once
#include <memory>
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
  bool is_literal(int32_t id) const;  // emitted as its literal text by decode
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  int32_t piece_count_ = 0;
  int32_t vocab_size_ = 0;
};

}  // namespace sa2va
