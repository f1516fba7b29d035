#include "text/unicode.h"

#include <algorithm>
#include <array>
#include <mutex>
#include <unordered_map>

namespace sa2va::unicode {
namespace {

struct CategoryRange {
  char32_t first, last;
  uint8_t flags;
};
struct CombiningClassRange {
  char32_t first, last;
  uint8_t ccc;
};
struct Decomposition {
  char32_t cp;
  uint32_t offset, length;
};
struct Composition {
  char32_t first, second, composite;
};

#include "text/unicode_tables.inc"

constexpr uint8_t kLetter = 1, kNumber = 2, kWhitespace = 4;
constexpr char32_t kMaxCodePoint = 0x10FFFF;

// One byte of flags per code point (1.1 MB), built once: the pre-tokenizer asks for every character.
const std::vector<uint8_t>& category_table() {
  static const std::vector<uint8_t> table = [] {
    std::vector<uint8_t> t(kMaxCodePoint + 1, 0);
    for (const auto& r : kCategoryRanges)
      for (char32_t cp = r.first; cp <= r.last; ++cp) t[cp] = r.flags;
    return t;
  }();
  return table;
}

uint8_t flags_of(char32_t cp) { return cp <= kMaxCodePoint ? category_table()[cp] : 0; }

// Hangul syllables compose and decompose algorithmically (Unicode 3.12).
constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr char32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount,
                   kSCount = kLCount * kNCount;

void decompose(char32_t cp, std::vector<char32_t>& out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    const char32_t s = cp - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount != 0) out.push_back(kTBase + s % kTCount);
    return;
  }
  const auto it = std::lower_bound(std::begin(kDecompositions), std::end(kDecompositions), cp,
                                   [](const Decomposition& d, char32_t c) { return d.cp < c; });
  if (it != std::end(kDecompositions) && it->cp == cp) {
    out.insert(out.end(), kDecompositionPool + it->offset, kDecompositionPool + it->offset + it->length);
  } else {
    out.push_back(cp);
  }
}

const std::unordered_map<uint64_t, char32_t>& composition_map() {
  static const std::unordered_map<uint64_t, char32_t> map = [] {
    std::unordered_map<uint64_t, char32_t> m;
    for (const auto& c : kCompositions) m.emplace((uint64_t(c.first) << 32) | c.second, c.composite);
    return m;
  }();
  return map;
}

// Primary composite of (first, second), or 0 when they do not compose.
char32_t compose_pair(char32_t first, char32_t second) {
  if (first >= kLBase && first < kLBase + kLCount && second >= kVBase && second < kVBase + kVCount)
    return kSBase + ((first - kLBase) * kVCount + (second - kVBase)) * kTCount;
  if (first >= kSBase && first < kSBase + kSCount && (first - kSBase) % kTCount == 0 && second > kTBase &&
      second < kTBase + kTCount)
    return first + (second - kTBase);
  const auto& map = composition_map();
  const auto it = map.find((uint64_t(first) << 32) | second);
  return it == map.end() ? 0 : it->second;
}

// The UTF-8 sequence led by bytes[i]: its expected length (0 when bytes[i] cannot lead one, 1 for
// ASCII) and how many of its bytes, from the lead on, are well formed (Unicode Table 3-7).
struct SequencePrefix {
  size_t expected, well_formed;
};
SequencePrefix sequence_prefix(std::string_view bytes, size_t i) {
  const uint8_t lead = static_cast<uint8_t>(bytes[i]);
  if (lead < 0x80) return {1, 1};
  size_t length;
  uint8_t low = 0x80, high = 0xBF;  // allowed range of the second byte
  if (lead >= 0xC2 && lead <= 0xDF) length = 2;
  else if (lead == 0xE0) length = 3, low = 0xA0;
  else if (lead == 0xED) length = 3, high = 0x9F;
  else if (lead >= 0xE1 && lead <= 0xEF) length = 3;
  else if (lead == 0xF0) length = 4, low = 0x90;
  else if (lead == 0xF4) length = 4, high = 0x8F;
  else if (lead >= 0xF1 && lead <= 0xF3) length = 4;
  else return {0, 0};
  size_t k = 1;
  for (; k < length && i + k < bytes.size(); ++k) {
    const uint8_t lo = k == 1 ? low : 0x80, hi = k == 1 ? high : 0xBF;
    const uint8_t c = static_cast<uint8_t>(bytes[i + k]);
    if (c < lo || c > hi) break;
  }
  return {length, k};
}

// Length of the UTF-8 sequence at bytes[i] if valid (1..4), else 0.
size_t valid_sequence_length(std::string_view bytes, size_t i) {
  const SequencePrefix p = sequence_prefix(bytes, i);
  return p.expected != 0 && p.well_formed == p.expected ? p.expected : 0;
}

// Number of bytes forming the maximal invalid subpart starting at bytes[i] (at least 1).
size_t invalid_subpart_length(std::string_view bytes, size_t i) {
  return std::max<size_t>(sequence_prefix(bytes, i).well_formed, 1);
}

char32_t decode_at(std::string_view bytes, size_t i, size_t length) {
  const auto b = [&](size_t k) { return char32_t(static_cast<uint8_t>(bytes[i + k])); };
  switch (length) {
    case 1: return b(0);
    case 2: return ((b(0) & 0x1F) << 6) | (b(1) & 0x3F);
    case 3: return ((b(0) & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F);
    default: return ((b(0) & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F);
  }
}

}  // namespace

bool decode_utf8(std::string_view text, std::vector<char32_t>& out) {
  for (size_t i = 0; i < text.size();) {
    const size_t length = valid_sequence_length(text, i);
    if (length == 0) return false;
    out.push_back(decode_at(text, i, length));
    i += length;
  }
  return true;
}

size_t find_invalid_utf8(std::string_view text) {
  for (size_t i = 0; i < text.size();) {
    const size_t length = valid_sequence_length(text, i);
    if (length == 0) return i;
    i += length;
  }
  return std::string_view::npos;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (size_t i = 0; i < bytes.size();) {
    const size_t length = valid_sequence_length(bytes, i);
    if (length > 0) {
      out.append(bytes.substr(i, length));
      i += length;
    } else {
      out.append("\xEF\xBF\xBD");
      i += invalid_subpart_length(bytes, i);
    }
  }
  return out;
}

bool is_letter(char32_t cp) { return flags_of(cp) & kLetter; }
bool is_number(char32_t cp) { return flags_of(cp) & kNumber; }
bool is_whitespace(char32_t cp) { return flags_of(cp) & kWhitespace; }

uint8_t combining_class(char32_t cp) {
  const auto it = std::upper_bound(std::begin(kCombiningClassRanges), std::end(kCombiningClassRanges), cp,
                                   [](char32_t c, const CombiningClassRange& r) { return c < r.first; });
  if (it == std::begin(kCombiningClassRanges)) return 0;
  const auto& r = *(it - 1);
  return cp <= r.last ? r.ccc : 0;
}

std::string nfc(std::string_view text) {
  // ASCII is always NFC and dominates real prompts.
  if (std::all_of(text.begin(), text.end(), [](char c) { return static_cast<uint8_t>(c) < 0x80; }))
    return std::string(text);
  std::vector<char32_t> input;
  decode_utf8(text, input);

  // 1. Full canonical decomposition.
  std::vector<char32_t> chars;
  chars.reserve(input.size() + 8);
  for (char32_t cp : input) decompose(cp, chars);

  // 2. Canonical ordering: stable sort of each run of non-starters by combining class.
  std::vector<uint8_t> ccc(chars.size());
  for (size_t i = 0; i < chars.size(); ++i) ccc[i] = combining_class(chars[i]);
  for (size_t i = 0; i < chars.size();) {
    if (ccc[i] == 0) { ++i; continue; }
    size_t end = i;
    while (end < chars.size() && ccc[end] != 0) ++end;
    for (size_t a = i + 1; a < end; ++a)  // insertion sort keeps equal classes in order
      for (size_t b = a; b > i && ccc[b - 1] > ccc[b]; --b) {
        std::swap(ccc[b - 1], ccc[b]);
        std::swap(chars[b - 1], chars[b]);
      }
    i = end;
  }

  // 3. Canonical composition: each character joins the last starter unless blocked.
  std::vector<char32_t> composed;
  composed.reserve(chars.size());
  std::vector<uint8_t> composed_ccc;
  composed_ccc.reserve(chars.size());
  std::ptrdiff_t starter = -1;
  for (size_t i = 0; i < chars.size(); ++i) {
    const char32_t cp = chars[i];
    const uint8_t cls = ccc[i];
    if (starter >= 0) {
      // cp is blocked when a character between it and the starter has class 0 or >= cls; after
      // canonical ordering only the last one needs checking.
      const bool adjacent = composed.size() - 1 == size_t(starter);
      if (adjacent || (composed_ccc.back() != 0 && composed_ccc.back() < cls)) {
        if (const char32_t c = compose_pair(composed[starter], cp)) {
          composed[starter] = c;
          continue;
        }
      }
    }
    if (cls == 0) starter = std::ptrdiff_t(composed.size());
    composed.push_back(cp);
    composed_ccc.push_back(cls);
  }
  std::string out;
  out.reserve(text.size());
  for (char32_t cp : composed) append_utf8(out, cp);
  return out;
}

}  // namespace sa2va::unicode
