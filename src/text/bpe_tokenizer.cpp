#include "text/bpe_tokenizer.h"

#include <limits>

#include "io/json_number.h"

#include <filesystem>
#include <fstream>
#include <queue>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "text/unicode.h"

namespace sa2va {
namespace {

using nlohmann::json;

// The only split pattern this tokenizer implements (by hand, in match_piece below).
constexpr std::string_view kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

constexpr size_t kCacheLimit = 1 << 16;

// A merge key's slot: every bit of (left id, right id) reaches the low bits the table's mask keeps
// (splitmix64's finalizer).
size_t mix_bits(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  return static_cast<size_t>(x ^ (x >> 31));
}

// GPT-2 byte <-> unicode map: printable Latin-1 bytes map to themselves, the other 68 bytes to
// U+0100.. in increasing byte order.
const std::array<char32_t, 256>& byte_to_unicode() {
  static const std::array<char32_t, 256> table = [] {
    std::array<char32_t, 256> t{};
    char32_t next = 0x100;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      t[b] = printable ? char32_t(b) : next++;
    }
    return t;
  }();
  return table;
}

// Inverse of the byte map as the ByteLevel decoder applies it: a token whose every character is in
// the map becomes those bytes; any other token is emitted as its own UTF-8.
std::string token_to_bytes(std::string_view token) {
  static const std::unordered_map<char32_t, uint8_t> inverse = [] {
    std::unordered_map<char32_t, uint8_t> m;
    for (int b = 0; b < 256; ++b) m[byte_to_unicode()[b]] = static_cast<uint8_t>(b);
    return m;
  }();
  std::vector<char32_t> cps;
  if (!unicode::decode_utf8(token, cps)) return std::string(token);
  std::string bytes;
  for (char32_t cp : cps) {
    const auto it = inverse.find(cp);
    if (it == inverse.end()) return std::string(token);
    bytes.push_back(static_cast<char>(it->second));
  }
  return bytes;
}

json read_json(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  check(bool(file), path + ": cannot open tokenizer file");
  try {
    return json::parse(file);
  } catch (const json::exception& e) {
    throw Error(path + ": invalid JSON: " + e.what());
  }
}

bool is_byte_level(const json& j) {
  return j.is_object() && j.contains("type") && j["type"].is_string() && j["type"].get<std::string>() == "ByteLevel";
}

// Checks that the pre-tokenizer is Split(Qwen2 regex, Isolated) followed by ByteLevel(no regex).
void check_pre_tokenizer(const json& pre, const std::string& path) {
  const std::string message = path + ": unsupported pre_tokenizer (expected the Qwen2 split regex + ByteLevel)";
  try {  // a field of another JSON type than expected is the same unsupported pre_tokenizer
    check(pre.is_object() && pre.value("type", "") == "Sequence" && pre.contains("pretokenizers"), message);
    const auto& steps = pre["pretokenizers"];
    check(steps.is_array() && steps.size() == 2 && steps[0].is_object() && steps[1].is_object(), message);
    const auto& split = steps[0];
    check(split.value("type", "") == "Split" && split.value("behavior", "") == "Isolated" &&
              !split.value("invert", false) && split.contains("pattern") && split["pattern"].is_object() &&
              split["pattern"].contains("Regex") && split["pattern"]["Regex"].is_string() &&
              split["pattern"]["Regex"].get<std::string>() == kQwen2Pattern,
          message);
    check(is_byte_level(steps[1]) && !steps[1].value("use_regex", true) && !steps[1].value("add_prefix_space", false),
          message);
  } catch (const json::exception&) {
    throw Error(message);
  }
}

bool is_newline(char32_t c) { return c == U'\r' || c == U'\n'; }
bool is_other(char32_t c) { return !unicode::is_whitespace(c) && !unicode::is_letter(c) && !unicode::is_number(c); }

// Case-insensitive ASCII letter as the regex's (?i:...) sees it (U+017F LONG S folds to 's').
char32_t fold(char32_t c) {
  if (c >= U'A' && c <= U'Z') return c + 32;
  if (c == 0x17F) return U's';
  return c;
}

// End index of the regex match that starts at c[i] (the pattern always matches one or more characters).
size_t match_piece(const std::vector<char32_t>& c, size_t i) {
  const size_t n = c.size();
  // (?i:'s|'t|'re|'ve|'m|'ll|'d)
  if (c[i] == U'\'' && i + 1 < n) {
    const char32_t a = fold(c[i + 1]);
    if (a == U's' || a == U't' || a == U'm' || a == U'd') return i + 2;
    if (i + 2 < n) {
      const char32_t b = fold(c[i + 2]);
      if ((a == U'r' && b == U'e') || (a == U'v' && b == U'e') || (a == U'l' && b == U'l')) return i + 3;
    }
  }
  // [^\r\n\p{L}\p{N}]?\p{L}+
  size_t letters = n;
  if (unicode::is_letter(c[i])) letters = i;
  else if (!is_newline(c[i]) && !unicode::is_number(c[i]) && i + 1 < n && unicode::is_letter(c[i + 1])) letters = i + 1;
  if (letters < n) {
    size_t j = letters;
    while (j < n && unicode::is_letter(c[j])) ++j;
    return j;
  }
  // \p{N}
  if (unicode::is_number(c[i])) return i + 1;
  // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
  size_t j = i;
  if (c[j] == U' ' && j + 1 < n && is_other(c[j + 1])) ++j;
  if (is_other(c[j])) {
    while (j < n && is_other(c[j])) ++j;
    while (j < n && is_newline(c[j])) ++j;
    return j;
  }
  // c[i] is whitespace from here on.
  size_t end = i;
  while (end < n && unicode::is_whitespace(c[end])) ++end;
  // \s*[\r\n]+ : up to the last newline of the whitespace run
  for (size_t p = end; p > i; --p)
    if (is_newline(c[p - 1])) return p;
  // \s+(?!\S) : the run, minus its last character when a non-space follows
  if (end == n) return end;
  if (end - i >= 2) return end - 1;
  // \s+
  return end;
}

}  // namespace

bool BpeTokenizer::is_byte_level_bpe(const std::string& json_path) {
  const json j = read_json(json_path);
  if (!j.is_object() || !j.contains("model") || !j["model"].is_object() || !j.contains("decoder")) return false;
  const json& model = j["model"];
  const bool bpe = !model.contains("type") || (model["type"].is_string() && model["type"].get<std::string>() == "BPE");
  return bpe && is_byte_level(j["decoder"]);
}

BpeTokenizer::BpeTokenizer(const std::string& json_path) : path_(json_path) {
  const json j = read_json(json_path);
  try {  // a field of an unexpected JSON type is a malformed file, not a crash
    check(j.is_object() && j.contains("model") && j["model"].is_object(), path_ + ": no \"model\" in tokenizer.json");
    const json& model = j["model"];
    const std::string type = model.value("type", "BPE");  // older files omit the type
    check(type == "BPE", path_ + ": unknown tokenizer type \"" + type + "\" (only byte-level BPE is supported)");
    check(model.contains("vocab") && model["vocab"].is_object(), path_ + ": model has no vocab");
    check(model.contains("merges") && model["merges"].is_array(), path_ + ": model has no merges");
    check(model.value("continuing_subword_prefix", json()).is_null() ||
              model.value("continuing_subword_prefix", "") == "",
          path_ + ": continuing_subword_prefix is not supported");
    check(model.value("end_of_word_suffix", json()).is_null() || model.value("end_of_word_suffix", "") == "",
          path_ + ": end_of_word_suffix is not supported");
    check(!model.value("byte_fallback", false), path_ + ": byte_fallback BPE is not supported");
    ignore_merges_ = model.value("ignore_merges", false);

    const json normalizer = j.value("normalizer", json());
    if (normalizer.is_null()) nfc_ = false;
    else if (normalizer.value("type", "") == "NFC") nfc_ = true;
    else throw Error(path_ + ": unsupported normalizer " + normalizer.dump());
    check_pre_tokenizer(j.value("pre_tokenizer", json()), path_);
    check(is_byte_level(j.value("decoder", json())), path_ + ": unsupported decoder (expected ByteLevel)");

    const json& vocab = model["vocab"];
    int32_t max_id = -1;
    entries_.reserve(vocab.size());
    size_t slots = 1;
    while (slots < vocab.size() + vocab.size() / 2 + 1) slots *= 2;
    vocab_slots_.assign(slots, -1);
    for (const auto& [text, id] : vocab.items()) {
      const auto parsed = json_integer(id, 0, kMaxTokenId);
      check(parsed.has_value(), path_ + ": the id of " + text + " is not a token id from 0 to " +
                                    std::to_string(kMaxTokenId) + " (" + id.dump() + ")");
      add_vocab(text, static_cast<int32_t>(*parsed));
      max_id = std::max(max_id, static_cast<int32_t>(*parsed));
    }
    std::vector<AddedToken> added;
    if (j.contains("added_tokens") && j["added_tokens"].is_array()) {
      for (const auto& entry : j["added_tokens"]) {
        const auto id = json_integer(entry.at("id"), 0, kMaxTokenId);
        check(id.has_value(), path_ + ": an added token's id is not a token id from 0 to " +
                                  std::to_string(kMaxTokenId) + " (" + entry.at("id").dump() + ")");
        AddedToken token = added_token_from_json(static_cast<int32_t>(*id), entry);
        max_id = std::max(max_id, token.id);
        added.push_back(std::move(token));
      }
    }
    id_entry_.assign(size_t(max_id + 1), -1);
    for (size_t e = 0; e < entries_.size(); ++e) id_entry_[entries_[e].id] = static_cast<int32_t>(e);
    for (auto& token : added) {  // an added token's text wins for token(id); lookups check added_ first
      id_entry_[token.id] = static_cast<int32_t>(entries_.size());
      entries_.push_back({static_cast<uint32_t>(texts_.size()), static_cast<uint32_t>(token.content.size()), token.id});
      texts_ += token.content;
      added_.add(std::move(token));
    }
    decoded_start_.reserve(id_entry_.size() + 1);
    for (size_t id = 0; id < id_entry_.size(); ++id) {
      decoded_start_.push_back(static_cast<uint32_t>(decoded_.size()));
      if (id_entry_[id] >= 0) decoded_ += token_to_bytes(entry_text(id_entry_[id]));
    }
    decoded_start_.push_back(static_cast<uint32_t>(decoded_.size()));
    check(texts_.size() < std::numeric_limits<uint32_t>::max() && decoded_.size() < std::numeric_limits<uint32_t>::max(),
          path_ + ": vocabulary too large");
    texts_.shrink_to_fit();
    decoded_.shrink_to_fit();

    for (int b = 0; b < 256; ++b) {
      std::string text;
      unicode::append_utf8(text, byte_to_unicode()[b]);
      byte_token_[b] = find_vocab(text);
    }

    const auto& merges = model["merges"];
    slots = 1;
    while (slots < merges.size() + merges.size() / 2 + 1) slots *= 2;
    merge_slots_.assign(slots, MergeSlot{kNoMerge, {}});
    int32_t rank = 0;
    std::string left, right;
    for (const auto& entry : merges) {
      if (entry.is_string()) {  // old format: "left right"
        const std::string& s = entry.get_ref<const std::string&>();
        const size_t space = s.find(' ', 1);
        check(space != std::string::npos, path_ + ": malformed merge \"" + s + "\"");
        left = s.substr(0, space);
        right = s.substr(space + 1);
      } else {
        check(entry.is_array() && entry.size() == 2, path_ + ": malformed merge " + entry.dump());
        left = entry[0].get<std::string>();
        right = entry[1].get<std::string>();
      }
      const int32_t l = find_vocab(left), r = find_vocab(right), m = find_vocab(left + right);
      check(l >= 0 && r >= 0 && m >= 0,
            path_ + ": merge \"" + left + " " + right + "\" uses a token missing from the vocab");
      const uint64_t key = (uint64_t(uint32_t(l)) << 32) | uint32_t(r);
      size_t slot = mix_bits(key) & (merge_slots_.size() - 1);
      while (merge_slots_[slot].key != kNoMerge && merge_slots_[slot].key != key) slot = (slot + 1) & (merge_slots_.size() - 1);
      if (merge_slots_[slot].key == kNoMerge) merge_slots_[slot] = {key, Merge{rank, m}};  // the first rank wins
      ++rank;
    }
  } catch (const json::exception& e) {
    throw Error(path_ + ": malformed tokenizer.json: " + e.what());
  }

  const TokenizerConfig config = read_tokenizer_config(std::filesystem::path(json_path).parent_path().string());
  eos_id_ = token_id(config.eos_token);
  if (eos_id_ < 0) eos_id_ = token_id("<|im_end|>");
  if (eos_id_ < 0) eos_id_ = token_id("<|endoftext|>");
  bos_id_ = token_id(config.bos_token);
  adds_bos_ = false;  // the ByteLevel post-processor adds no special tokens
  clean_up_spaces_ = config.clean_up_tokenization_spaces == 1;
}

std::string_view BpeTokenizer::entry_text(int32_t entry) const {
  const VocabEntry& e = entries_[static_cast<size_t>(entry)];
  return std::string_view(texts_).substr(e.start, e.length);
}

int32_t BpeTokenizer::find_vocab(std::string_view text) const {
  const size_t mask = vocab_slots_.size() - 1;
  for (size_t slot = std::hash<std::string_view>{}(text) & mask;; slot = (slot + 1) & mask) {
    const int32_t entry = vocab_slots_[slot];
    if (entry < 0) return -1;
    if (entry_text(entry) == text) return entries_[static_cast<size_t>(entry)].id;
  }
}

// A text already present keeps its id (the parsed JSON object holds each text once anyway).
void BpeTokenizer::add_vocab(std::string_view text, int32_t id) {
  const size_t mask = vocab_slots_.size() - 1;
  size_t slot = std::hash<std::string_view>{}(text) & mask;
  for (; vocab_slots_[slot] >= 0; slot = (slot + 1) & mask)
    if (entry_text(vocab_slots_[slot]) == text) return;
  vocab_slots_[slot] = static_cast<int32_t>(entries_.size());
  entries_.push_back({static_cast<uint32_t>(texts_.size()), static_cast<uint32_t>(text.size()), id});
  texts_ += text;
}

const BpeTokenizer::Merge* BpeTokenizer::find_merge(int32_t left, int32_t right) const {
  const uint64_t key = (uint64_t(uint32_t(left)) << 32) | uint32_t(right);
  const size_t mask = merge_slots_.size() - 1;
  for (size_t slot = mix_bits(key) & mask;; slot = (slot + 1) & mask) {
    if (merge_slots_[slot].key == key) return &merge_slots_[slot].merge;
    if (merge_slots_[slot].key == kNoMerge) return nullptr;
  }
}

int32_t BpeTokenizer::token_id(std::string_view token) const {
  if (token.empty()) return -1;
  if (const AddedToken* added = added_.find(token)) return added->id;
  return find_vocab(token);
}

std::string BpeTokenizer::token(int32_t id) const {
  return id >= 0 && size_t(id) < id_entry_.size() && id_entry_[id] >= 0 ? std::string(entry_text(id_entry_[id]))
                                                                         : std::string();
}

std::vector<std::string_view> BpeTokenizer::pre_tokenize(std::string_view text) {
  std::vector<char32_t> cps;
  cps.reserve(text.size());
  check(unicode::decode_utf8(text, cps), "tokenizer: text is not valid UTF-8");
  std::vector<std::string_view> pieces;
  size_t byte = 0;
  for (size_t i = 0; i < cps.size();) {
    const size_t end = match_piece(cps, i);
    size_t bytes = 0;
    for (size_t k = i; k < end; ++k) bytes += cps[k] < 0x80 ? 1 : cps[k] < 0x800 ? 2 : cps[k] < 0x10000 ? 3 : 4;
    pieces.push_back(text.substr(byte, bytes));
    byte += bytes;
    i = end;
  }
  return pieces;
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text) const {
  const size_t bad = unicode::find_invalid_utf8(text);
  check(bad == std::string_view::npos,
        "tokenizer: input text is not valid UTF-8 (byte offset " + std::to_string(bad) + ")");
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  const bool split_normalized = added_.has_normalized_tokens();
  for (const auto& segment : added_.split(text, /*normalized=*/false)) {
    if (segment.id >= 0) {
      ids.push_back(segment.id);
      continue;
    }
    const std::string normalized = nfc_ ? unicode::nfc(segment.text) : std::string(segment.text);
    if (!split_normalized) {
      encode_text(normalized, ids);
      continue;
    }
    for (const auto& inner : added_.split(normalized, /*normalized=*/true)) {
      if (inner.id >= 0) ids.push_back(inner.id);
      else encode_text(inner.text, ids);
    }
  }
  return ids;
}

void BpeTokenizer::encode_text(std::string_view text, std::vector<int32_t>& out) const {
  for (std::string_view piece : pre_tokenize(text)) encode_piece(piece, out);
}

void BpeTokenizer::encode_piece(std::string_view piece, std::vector<int32_t>& out) const {
  const auto byte_id = [&](uint8_t b) {
    check(byte_token_[b] >= 0, path_ + ": vocab has no token for byte " + std::to_string(b));
    return byte_token_[b];
  };
  if (piece.size() == 1) {
    out.push_back(byte_id(static_cast<uint8_t>(piece[0])));
    return;
  }
  const std::string key(piece);
  {
    std::lock_guard lock(cache_mutex_);
    if (const auto it = cache_.find(key); it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> symbols;
  bool whole = false;
  if (ignore_merges_) {
    std::string mapped;
    for (char b : piece) unicode::append_utf8(mapped, byte_to_unicode()[static_cast<uint8_t>(b)]);
    if (const int32_t id = find_vocab(mapped); id >= 0) symbols.push_back(id), whole = true;
  }
  if (!whole) {
    symbols.reserve(piece.size());
    for (char b : piece) symbols.push_back(byte_id(static_cast<uint8_t>(b)));
    apply_merges(symbols);
  }
  out.insert(out.end(), symbols.begin(), symbols.end());
  std::lock_guard lock(cache_mutex_);
  if (cache_.size() >= kCacheLimit) cache_.clear();
  cache_.emplace(key, std::move(symbols));
}

// Repeatedly merges the adjacent pair with the lowest rank (leftmost on ties), as HF's BPE does.
void BpeTokenizer::apply_merges(std::vector<int32_t>& symbols) const {
  const size_t n = symbols.size();
  if (n < 2) return;
  std::vector<int32_t> prev(n), next(n);
  for (size_t i = 0; i < n; ++i) {
    prev[i] = int32_t(i) - 1;
    next[i] = i + 1 < n ? int32_t(i + 1) : -1;
  }
  struct Candidate {
    int32_t rank, pos, merged_id;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  const auto push_pair = [&](int32_t left) {
    if (left < 0 || next[left] < 0) return;
    if (const Merge* merge = find_merge(symbols[left], symbols[next[left]])) queue.push({merge->rank, left, merge->merged_id});
  };
  for (size_t i = 0; i + 1 < n; ++i) push_pair(int32_t(i));
  std::vector<bool> alive(n, true);
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    const int32_t left = top.pos, right = next[left];
    if (!alive[left] || right < 0) continue;
    // Stale entry: the pair at `left` changed since it was queued.
    const Merge* merge = find_merge(symbols[left], symbols[right]);
    if (!merge || merge->merged_id != top.merged_id) continue;
    symbols[left] = top.merged_id;
    alive[right] = false;
    next[left] = next[right];
    if (next[right] >= 0) prev[next[right]] = left;
    push_pair(prev[left]);
    push_pair(left);
  }
  size_t out = 0;
  for (int32_t i = 0; i >= 0; i = next[i]) symbols[out++] = symbols[i];
  symbols.resize(out);
}

std::string BpeTokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::string bytes;
  for (int32_t id : ids) {
    if (id < 0 || size_t(id) >= id_entry_.size() || id_entry_[id] < 0) continue;  // HF skips unknown ids
    if (skip_special) {
      const AddedToken* added = added_.find(id);
      if (added && added->special) continue;
    }
    bytes.append(decoded_, decoded_start_[id], decoded_start_[id + 1] - decoded_start_[id]);
  }
  return clean_up_spaces_ ? clean_up_tokenization(unicode::utf8_lossy(bytes)) : unicode::utf8_lossy(bytes);
}

}  // namespace sa2va
