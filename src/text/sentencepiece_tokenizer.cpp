#include "text/sentencepiece_tokenizer.h"

#include <sentencepiece_processor.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "text/unicode.h"

namespace sa2va {
namespace {

constexpr std::string_view kWordBoundary = "\xE2\x96\x81";  // U+2581, SentencePiece's space marker

}  // namespace

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
        token.id = id.get<int32_t>();
        check(token.id >= 0, added_path + ": negative id for " + content);
        token.special = true;  // Sa2VA/InternVL add theirs with special_tokens=True
        added_.add(std::move(token));
      }
    } catch (const nlohmann::json::exception& e) {
      throw Error(added_path + ": invalid JSON: " + e.what());
    }
  }
  // The special tokens of the config (bos/eos/unk/pad) are never split by SentencePiece.
  for (const std::string& content : {config.bos_token, config.eos_token, config.unk_token, config.pad_token}) {
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

  const auto id_of = [&](const std::string& content, int fallback) {
    const int32_t id = content.empty() ? -1 : token_id(content);
    return id >= 0 ? id : fallback;
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

bool SentencePieceTokenizer::is_literal(int32_t id) const {
  return added_.find(id) != nullptr || (id < piece_count_ && sp_->IsControl(id));
}

// InternLM2Tokenizer.convert_tokens_to_string: runs of pieces are decoded by SentencePiece, special
// tokens are inserted literally with a space before each run that precedes one; a leading space is
// added unless the first token is a piece without the word-boundary mark, then the first character
// is dropped.
std::string SentencePieceTokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::vector<int32_t> kept;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size_) continue;
    const AddedToken* added = added_.find(id);
    if (!added && id >= piece_count_) continue;  // no token has this id
    const bool special = added ? added->special : sp_->IsControl(id);
    if (skip_special && special) continue;
    kept.push_back(id);
  }
  std::string out;
  std::vector<int> run;
  bool previous_literal = false;
  const auto decode_run = [&] {
    std::string text;
    const auto status = sp_->Decode(run, &text);
    check(status.ok(), "tokenizer: SentencePiece decode failed: " + status.ToString());
    run.clear();
    return text;
  };
  for (int32_t id : kept) {
    if (is_literal(id)) {
      if (!previous_literal) out += ' ';
      out += decode_run();
      out += token(id);
      previous_literal = true;
    } else {
      run.push_back(id);
      previous_literal = false;
    }
  }
  out += decode_run();
  if (kept.empty()) return "";
  const int32_t first = kept.front();
  const bool first_without_boundary = first < piece_count_ && !sp_->IdToPiece(first).starts_with(kWordBoundary);
  if (!first_without_boundary) out.insert(out.begin(), ' ');
  return unicode::utf8_lossy(out.empty() ? out : out.substr(1));
}

}  // namespace sa2va
