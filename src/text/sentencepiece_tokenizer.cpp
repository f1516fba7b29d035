#include "text/sentencepiece_tokenizer.h"

#include <limits>

#include "io/json_number.h"

#include <sentencepiece_processor.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "text/unicode.h"

namespace sa2va {

SentencePieceTokenizer::SentencePieceTokenizer(const std::string& model_dir)
    : sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {
  namespace fs = std::filesystem;
  const std::string model_path = (fs::path(model_dir) / "tokenizer.model").string();
  const auto status = sp_->Load(model_path);
  check(status.ok(), model_path + ": cannot load SentencePiece model: " + status.ToString());
  piece_count_ = sp_->GetPieceSize();
  vocab_size_ = piece_count_;

  // Added tokens: tokenizer_config.json's added_tokens_decoder carries the flags; added_tokens.json
  // (content -> id) lists the same or older additions without flags.
  const TokenizerConfig config = read_tokenizer_config(model_dir);
  for (const AddedToken& token : config.added_tokens_decoder) {
    check(token.id >= 0, model_dir + ": negative added token id for " + token.content);
    added_.add(token);
  }
  const std::string added_path = (fs::path(model_dir) / "added_tokens.json").string();
  if (std::ifstream file(added_path); file) {
    try {
      const auto json = nlohmann::json::parse(file);
      for (const auto& [content, id] : json.items()) {
        if (added_.find(content)) continue;
        AddedToken token;
        token.content = content;
        const auto parsed = json_integer(id, 0, kMaxTokenId);
        check(parsed.has_value(), added_path + ": the id of " + content + " is not a token id from 0 to " +
                                      std::to_string(kMaxTokenId) + " (" + id.dump() + ")");
        token.id = static_cast<int32_t>(*parsed);
        token.special = true;  // Sa2VA/InternVL add theirs with special_tokens=True
        added_.add(std::move(token));
      }
    } catch (const nlohmann::json::exception& e) {
      throw Error(added_path + ": invalid JSON: " + e.what());
    }
  }
  // The special tokens of the config (bos/eos/unk/pad and the additional ones) are never split by
  // SentencePiece: those that are pieces of the model become added tokens at their piece's id.
  std::vector<std::string> specials = {config.bos_token, config.eos_token, config.unk_token, config.pad_token};
  specials.insert(specials.end(), config.additional_special_tokens.begin(), config.additional_special_tokens.end());
  for (const std::string& content : specials) {
    if (content.empty() || added_.find(content)) continue;
    const int id = sp_->PieceToId(content);
    if (id == sp_->unk_id() && content != sp_->IdToPiece(id)) continue;
    AddedToken token;
    token.content = content;
    token.id = id;
    token.special = true;
    added_.add(std::move(token));
  }
  for (const AddedToken& token : added_.tokens()) vocab_size_ = std::max(vocab_size_, token.id + 1);

  for (const std::string& content : {config.bos_token, config.eos_token, config.unk_token, config.pad_token})
    if (!content.empty()) special_tokens_.insert(content);
  for (const std::string& content : config.additional_special_tokens) {
    special_tokens_.insert(content);
    additional_special_tokens_.insert(content);
  }
  clean_up_spaces_ = config.clean_up_tokenization_spaces == 1;  // InternLM2Tokenizer defaults to false

  // InternLM2Tokenizer takes bos and eos from the SentencePiece model itself, whatever the config says.
  const auto id_of = [&](const std::string& content, int model_id) {
    if (model_id >= 0) return static_cast<int32_t>(model_id);
    return content.empty() ? -1 : token_id(content);
  };
  bos_id_ = id_of(config.bos_token, sp_->bos_id());
  eos_id_ = id_of(config.eos_token, sp_->eos_id());
  adds_bos_ = config.add_bos_token != 0 && bos_id_ >= 0;  // InternLM2Tokenizer defaults to true
}

SentencePieceTokenizer::~SentencePieceTokenizer() = default;

int32_t SentencePieceTokenizer::token_id(std::string_view token) const {
  if (token.empty()) return -1;
  if (const AddedToken* added = added_.find(token)) return added->id;
  const std::string piece(token);
  const int id = sp_->PieceToId(piece);
  if (id == sp_->unk_id() && sp_->IdToPiece(id) != piece) return -1;
  return id;
}

std::string SentencePieceTokenizer::token(int32_t id) const {
  if (const AddedToken* added = added_.find(id)) return added->content;
  return id >= 0 && id < piece_count_ ? sp_->IdToPiece(id) : std::string();
}

std::vector<int32_t> SentencePieceTokenizer::encode(std::string_view text) const {
  const size_t bad = unicode::find_invalid_utf8(text);
  check(bad == std::string_view::npos,
        "tokenizer: input text is not valid UTF-8 (byte offset " + std::to_string(bad) + ")");
  std::vector<int32_t> ids;
  if (adds_bos_) ids.push_back(bos_id_);
  // Every span between added tokens is encoded on its own (SentencePiece adds its prefix space to each).
  for (const auto& segment : added_.split(text, false)) {
    if (segment.id >= 0) {
      ids.push_back(segment.id);
      continue;
    }
    std::vector<int> pieces;
    const auto status = sp_->Encode(segment.text, &pieces);
    check(status.ok(), "tokenizer: SentencePiece encode failed: " + status.ToString());
    ids.insert(ids.end(), pieces.begin(), pieces.end());
  }
  return ids;
}

bool SentencePieceTokenizer::is_special(int32_t id) const {
  const std::string t = token(id);
  return !t.empty() && special_tokens_.count(t) != 0;
}

// One run of tokens: special tokens are written literally, each preceded by a space unless the
// token before it was special too, followed by the pieces pending before it decoded by
// SentencePiece; the pieces after the last special token are decoded at the end; then the
// clean-up of spaces before punctuation. (Upstream then prepends a space and drops the first
// character again: its prefix-space test compares a token string with a set of ids, so it
// always adds the space.)
std::string SentencePieceTokenizer::decode_run(const std::vector<int32_t>& run) const {
  std::string out;
  std::vector<int> pieces;
  const auto flush = [&] {
    std::string text;
    const auto status = sp_->Decode(pieces, &text);
    check(status.ok(), "tokenizer: SentencePiece decode failed: " + status.ToString());
    pieces.clear();
    out += text;
  };
  bool previous_special = false;
  for (int32_t id : run) {
    if (is_special(id)) {
      if (!previous_special) out += ' ';
      flush();
      out += token(id);
      previous_special = true;
    } else {
      pieces.push_back(id);
      previous_special = false;
    }
  }
  flush();
  return clean_up_tokenization(std::move(out));
}

// The slow tokenizer's decode (transformers' PreTrainedTokenizer._decode over InternLM2Tokenizer):
// added tokens that are not special, and additional special tokens outside the SentencePiece
// model, are chunks of their own; every other run of tokens is decoded by decode_run; the chunks
// are joined with single spaces.
std::string SentencePieceTokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::vector<std::string> chunks;
  std::vector<int32_t> run;
  bool any = false;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size_) continue;
    const AddedToken* added = added_.find(id);
    if (!added && id >= piece_count_) continue;  // no token has this id
    if (skip_special && is_special(id)) continue;
    any = true;
    const bool own_chunk =
        added && (!special_tokens_.count(added->content) ||
                  (additional_special_tokens_.count(added->content) && id >= piece_count_));
    if (!own_chunk) {
      run.push_back(id);
      continue;
    }
    if (!run.empty()) {
      std::string text = decode_run(run);
      if (!text.empty()) chunks.push_back(std::move(text));
      run.clear();
    }
    chunks.push_back(added->content);
  }
  if (!run.empty()) chunks.push_back(decode_run(run));
  if (!any) return "";
  std::string out;
  for (size_t i = 0; i < chunks.size(); ++i) {
    if (i > 0) out += ' ';
    out += chunks[i];
  }
  if (clean_up_spaces_) out = clean_up_tokenization(std::move(out));
  return unicode::utf8_lossy(out);
}

}  // namespace sa2va
