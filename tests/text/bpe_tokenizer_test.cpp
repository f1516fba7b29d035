// Qwen2 byte-level BPE against the reference ids of tests/data/tokenizer/golden.jsonl, plus the
// added-token flags, bad input and the pre-tokenizer split on its own.
#include "text/bpe_tokenizer.h"

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "test_util.h"
#include "text/unicode.h"

namespace sa2va {
namespace {

using nlohmann::json;

const BpeTokenizer& qwen_tokenizer() {
  static const BpeTokenizer tokenizer(test::project_data("qwen2-sa2va-tokenizer.json"));
  return tokenizer;
}

std::vector<json> read_jsonl(const std::string& path) {
  std::ifstream file(path);
  std::vector<json> lines;
  for (std::string line; std::getline(file, line);)
    if (!line.empty()) lines.push_back(json::parse(line));
  return lines;
}

std::string ids_string(const std::vector<int32_t>& ids) { return json(ids).dump(); }

TEST(BpeTokenizer, ReproducesEveryGoldenLine) {
  const auto golden = read_jsonl(test::test_data("tokenizer/golden.jsonl"));
  const auto corpus = read_jsonl(test::test_data("tokenizer/corpus.jsonl"));
  ASSERT_GT(golden.size(), 900u);
  ASSERT_EQ(golden.size(), corpus.size());
  int id_mismatches = 0, text_mismatches = 0;
  for (size_t i = 0; i < golden.size(); ++i) {
    const std::string text = golden[i]["text"];
    ASSERT_EQ(text, corpus[i]["text"].get<std::string>()) << "line " << i + 1;
    const auto expected = golden[i]["ids"].get<std::vector<int32_t>>();
    const auto ids = qwen_tokenizer().encode(text);
    if (ids != expected && ++id_mismatches <= 10)
      ADD_FAILURE() << "line " << i + 1 << " " << json(text).dump() << "\n  got      " << ids_string(ids)
                    << "\n  expected " << ids_string(expected);
    const std::string decoded = qwen_tokenizer().decode(expected);
    if (decoded != golden[i]["decoded"].get<std::string>() && ++text_mismatches <= 10)
      ADD_FAILURE() << "line " << i + 1 << " decoded " << json(decoded).dump();
  }
  EXPECT_EQ(id_mismatches, 0);
  EXPECT_EQ(text_mismatches, 0);
}

TEST(BpeTokenizer, SpecialTokenIdsComeFromTheFile) {
  const auto& t = qwen_tokenizer();
  EXPECT_EQ(t.token_id("<|endoftext|>"), 151643);
  EXPECT_EQ(t.token_id("<|im_start|>"), 151644);
  EXPECT_EQ(t.token_id("<|im_end|>"), 151645);
  EXPECT_EQ(t.token_id("<IMG_CONTEXT>"), 151667);
  EXPECT_EQ(t.token_id("[SEG]"), 151674);
  EXPECT_EQ(t.token_id("not a token"), -1);
  EXPECT_EQ(t.eos_id(), 151645);
  EXPECT_FALSE(t.adds_bos());
  EXPECT_EQ(t.vocab_size(), 151679);
  EXPECT_EQ(t.token(151674), "[SEG]");
  EXPECT_EQ(t.token(9707), "Hello");
}

TEST(BpeTokenizer, DecodeSkipsSpecialTokensOnRequest) {
  const auto& t = qwen_tokenizer();
  const auto ids = t.encode("<|im_start|>Sure, [SEG].<|im_end|>");
  ASSERT_EQ(ids.front(), 151644);
  EXPECT_EQ(t.decode(ids), "<|im_start|>Sure, [SEG].<|im_end|>");
  EXPECT_EQ(t.decode(ids, /*skip_special=*/true), "Sure, .");
  // Ids without a token (the LLM vocabulary is padded past the tokenizer) are ignored.
  EXPECT_EQ(t.decode({9707, 151800, -3}), "Hello");
}

TEST(BpeTokenizer, InvalidUtf8DecodesToReplacementCharacters) {
  const auto& t = qwen_tokenizer();
  // "€" is E2 82 AC; its first two bytes alone are one maximal invalid subpart.
  const auto euro = t.encode("\xE2\x82\xAC");
  ASSERT_EQ(t.decode(euro), "\xE2\x82\xAC");
  const int32_t e2 = t.token_id("\xC3\xA2"), a = t.token_id("a");  // byte E2 maps to U+00E2
  ASSERT_GE(e2, 0);
  EXPECT_EQ(t.decode({e2, a}), "\xEF\xBF\xBD" "a");
  EXPECT_EQ(unicode::utf8_lossy("\xE2\x82" "a\xFF\xF0\x80"), "\xEF\xBF\xBD" "a\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST(BpeTokenizer, RejectsInvalidUtf8Text) {
  EXPECT_THROW(qwen_tokenizer().encode("ok \xC3\x28"), Error);
  EXPECT_THROW(qwen_tokenizer().encode("\xED\xA0\x80"), Error);  // surrogate
  EXPECT_THROW(qwen_tokenizer().encode("\xC0\xAF"), Error);      // overlong
}

TEST(BpeTokenizer, PreTokenizerFollowsTheQwen2Regex) {
  const auto split = [](std::string_view text) {
    std::vector<std::string> pieces;
    for (auto p : BpeTokenizer::pre_tokenize(text)) pieces.emplace_back(p);
    return pieces;
  };
  using V = std::vector<std::string>;
  EXPECT_EQ(split("Hello world"), (V{"Hello", " world"}));
  EXPECT_EQ(split("I'M we'Ll it's"), (V{"I", "'M", " we", "'Ll", " it", "'s"}));
  EXPECT_EQ(split("x'\xC5\xBF"), (V{"x", "'\xC5\xBF"}));  // LONG S folds to s
  EXPECT_EQ(split("2024"), (V{"2", "0", "2", "4"}));
  EXPECT_EQ(split("a  b"), (V{"a", " ", " b"}));
  EXPECT_EQ(split("a \n\n  b  "), (V{"a", " \n\n", " ", " b", "  "}));
  EXPECT_EQ(split("!!?\n\nx"), (V{"!!?\n\n", "x"}));
  EXPECT_EQ(split(" ...\tx"), (V{" ...", "\tx"}));
}

// A small byte-level BPE tokenizer.json with added tokens carrying each flag.
std::string write_small_tokenizer(const std::string& dir, const json& added_tokens) {
  const std::string qwen_path = test::project_data("qwen2-sa2va-tokenizer.json");
  json vocab = json::object();
  // Take the 256 single-byte tokens from the real vocabulary so the byte map is exercised too.
  std::ifstream file(qwen_path);
  const json qwen = json::parse(file);
  int next_id = 0;
  for (const auto& [text, id] : qwen["model"]["vocab"].items()) {
    std::vector<char32_t> cps;
    if (unicode::decode_utf8(text, cps) && cps.size() == 1) vocab[text] = next_id++;
  }
  vocab["ab"] = next_id++;
  json tokenizer = qwen;
  tokenizer["model"]["vocab"] = vocab;
  tokenizer["model"]["merges"] = json::array({json::array({"a", "b"})});
  tokenizer["added_tokens"] = added_tokens;
  const std::string path = dir + "/tokenizer.json";
  std::ofstream(path) << tokenizer.dump();
  return path;
}

TEST(BpeTokenizer, AddedTokenFlags) {
  const std::string dir = test::temp_dir("bpe-flags");
  const auto token = [](int id, const std::string& content, bool lstrip, bool rstrip, bool single_word,
                        bool normalized) {
    return json{{"id", id}, {"content", content}, {"lstrip", lstrip}, {"rstrip", rstrip},
                {"single_word", single_word}, {"normalized", normalized}, {"special", true}};
  };
  const json added = json::array({token(1000, "<L>", true, false, false, false),
                                  token(1001, "<R>", false, true, false, false),
                                  token(1002, "<W>", false, false, true, false),
                                  token(1003, "\xC3\xA9t\xC3\xA9", false, false, false, true),  // "été", NFC
                                  token(1004, "<LL>", false, false, false, false)});
  const BpeTokenizer t(write_small_tokenizer(dir, added));
  const int32_t a = t.token_id("a"), b = t.token_id("b"), ab = t.token_id("ab"), space = t.token_id("\xC4\xA0");
  ASSERT_GE(ab, 0);
  EXPECT_EQ(t.encode("ab"), (std::vector<int32_t>{ab}));
  EXPECT_EQ(t.encode("a  <L>b"), (std::vector<int32_t>{a, 1000, b}));      // lstrip eats the spaces
  EXPECT_EQ(t.encode("a<R>  b"), (std::vector<int32_t>{a, 1001, b}));      // rstrip eats the spaces
  EXPECT_EQ(t.encode("a <W> b"), (std::vector<int32_t>{a, space, 1002, space, b}));
  EXPECT_EQ(t.encode("a<W>").size(), 4u);                                   // inside a word: plain text
  EXPECT_EQ(t.encode("<LL>"), (std::vector<int32_t>{1004}));                // longest match wins over <L>
  // A normalized token matches the NFC form of decomposed input ("e" + U+0301 ...).
  EXPECT_EQ(t.encode("e\xCC\x81te\xCC\x81"), (std::vector<int32_t>{1003}));
}

TEST(BpeTokenizer, BadFilesGiveClearErrors) {
  const std::string dir = test::temp_dir("bpe-bad");
  const auto write = [&](const std::string& name, const std::string& content) {
    const std::string path = dir + "/" + name;
    std::ofstream(path) << content;
    return path;
  };
  const auto message = [](const std::string& path) -> std::string {
    try {
      BpeTokenizer t(path);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_NE(message(write("no_model.json", R"({"added_tokens": []})")).find("no \"model\""), std::string::npos);
  EXPECT_NE(message(write("wordpiece.json", R"({"model": {"type": "WordPiece", "vocab": {}}})"))
                .find("unknown tokenizer type"),
            std::string::npos);
  EXPECT_NE(message(write("broken.json", R"({"model": )")).find("invalid JSON"), std::string::npos);
  EXPECT_NE(message(dir + "/missing.json").find("cannot open"), std::string::npos);
  // Fields of an unexpected JSON type are refused with an Error, not an escaped JSON exception.
  const std::string model = R"("model": {"type": "BPE", "vocab": {"a": 0}, "merges": []})";
  const std::string byte_level = R"({"type": "ByteLevel", "use_regex": false})";
  EXPECT_NE(message(write("numeric_regex.json", "{" + model + R"(, "decoder": )" + byte_level +
                                                    R"(, "pre_tokenizer": {"type": "Sequence", "pretokenizers": [)" +
                                                    R"({"type": "Split", "behavior": "Isolated", "pattern": {"Regex": 5}}, )" +
                                                    byte_level + "]}}"))
                .find("unsupported pre_tokenizer"),
            std::string::npos);
  EXPECT_NE(message(write("numeric_type.json", R"({"model": {"type": 7, "vocab": {}, "merges": []}})"))
                .find("numeric_type.json"),
            std::string::npos);
  EXPECT_NE(message(write("numeric_decoder.json", "{" + model + R"(, "decoder": {"type": 3}})")).find("decoder"),
            std::string::npos);
  EXPECT_FALSE(BpeTokenizer::is_byte_level_bpe(write("numeric_type_2.json", R"({"model": {"type": 7}, "decoder": 1})")));
  // An id far beyond any vocabulary is refused before the per-id tables are sized by it.
  const json huge_id = json::array({json{{"id", 2000000000}, {"content", "<X>"}, {"special", true}}});
  const std::string huge = message(write_small_tokenizer(test::temp_dir("bpe-huge-id"), huge_id));
  EXPECT_NE(huge.find("tokenizer.json: an added token's id is not a token id"), std::string::npos) << huge;
  json small = json::parse(std::ifstream(write_small_tokenizer(test::temp_dir("bpe-huge-vocab-id"), json::array())));
  small["model"]["vocab"]["ab"] = 20000000;
  const std::string huge_vocab = message(write("huge_vocab_id.json", small.dump()));
  EXPECT_NE(huge_vocab.find("huge_vocab_id.json: the id of ab is not a token id"), std::string::npos) << huge_vocab;
  EXPECT_THROW(Tokenizer::load(dir + "/no-such-folder"), Error);
  EXPECT_THROW(Tokenizer::load(test::temp_dir("bpe-empty")), Error);
}

TEST(BpeTokenizer, LoadsFromAModelFolder) {
  const std::string dir = test::temp_dir("bpe-folder");
  std::filesystem::create_symlink(test::project_data("qwen2-sa2va-tokenizer.json"), dir + "/tokenizer.json");
  const auto t = Tokenizer::load(dir);
  EXPECT_EQ(t->kind(), "bpe");
  EXPECT_EQ(t->encode("Hello, world!"), (std::vector<int32_t>{9707, 11, 1879, 0}));
}

TEST(Unicode, NfcComposesReordersAndRespectsExclusions) {
  EXPECT_EQ(unicode::nfc("e\xCC\x81"), "\xC3\xA9");                          // e + acute -> é
  EXPECT_EQ(unicode::nfc("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8"), "\xEA\xB0\x81");  // Hangul L V T -> 각
  EXPECT_EQ(unicode::nfc("\xE1\xB8\x8B\xCC\xA3"), "\xE1\xB8\x8D\xCC\x87");    // ḋ + dot below -> ḍ + dot above
  EXPECT_EQ(unicode::nfc("\xE0\xA5\x98"), "\xE0\xA4\x95\xE0\xA4\xBC");        // excluded: QA stays decomposed
  EXPECT_EQ(unicode::nfc("\xE2\x84\xAB"), "\xC3\x85");                        // singleton: Angstrom -> Å
  EXPECT_EQ(unicode::nfc("a\xCC\x8A\xCC\x81"), "\xC7\xBB");                   // a + ring + acute -> ǻ
  EXPECT_EQ(unicode::nfc("plain ascii"), "plain ascii");
}

TEST(Unicode, CharacterClasses) {
  EXPECT_TRUE(unicode::is_letter(U'a'));
  EXPECT_TRUE(unicode::is_letter(0x4E2D));   // 中
  EXPECT_FALSE(unicode::is_letter(U'1'));
  EXPECT_TRUE(unicode::is_number(0x0663));   // Arabic-Indic three
  EXPECT_TRUE(unicode::is_number(0x2167));   // Roman numeral eight (Nl)
  EXPECT_TRUE(unicode::is_whitespace(0x85));
  EXPECT_TRUE(unicode::is_whitespace(0x3000));
  EXPECT_FALSE(unicode::is_whitespace(0xFEFF));
  EXPECT_FALSE(unicode::is_whitespace(0x1C));
  EXPECT_EQ(unicode::combining_class(0x301), 230);
  EXPECT_EQ(unicode::combining_class(U'a'), 0);
}

}  // namespace
}  // namespace sa2va
