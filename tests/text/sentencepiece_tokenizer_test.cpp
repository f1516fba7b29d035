// InternLM2-style SentencePiece tokenizer: a BPE model trained here on a generated corpus, with
// added tokens from tokenizer_config.json and added_tokens.json, checked against the
// SentencePiece library run directly on the spans between added tokens.
#include "text/sentencepiece_tokenizer.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <fstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "test_util.h"

namespace sa2va {
namespace {

using nlohmann::json;

// Trains once per test run (well under a second) and writes an InternLM2-like model folder.
const std::string& model_dir() {
  static const std::string dir = [] {
    const std::string d = test::temp_dir("spm");
    {
      std::ofstream corpus(d + "/corpus.txt");
      const char* subjects[] = {"the cat", "a dog", "the red ball", "two birds", "my friend", "the old man"};
      const char* verbs[] = {"sits on", "looks at", "runs past", "jumps over", "holds", "segments"};
      const char* objects[] = {"the mat", "a tree", "the blue box", "the window", "an umbrella", "the road"};
      for (const char* s : subjects)
        for (const char* v : verbs)
          for (const char* o : objects) corpus << s << " " << v << " " << o << ".\n";
    }
    const auto status = sentencepiece::SentencePieceTrainer::Train(
        "--input=" + d + "/corpus.txt --model_prefix=" + d +
        "/tokenizer --vocab_size=120 --model_type=bpe --character_coverage=1.0 "
        "--unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1 --user_defined_symbols=<|im_end|>,<|im_start|> "
        "--minloglevel=2");
    if (!status.ok()) throw std::runtime_error("spm training failed: " + status.ToString());
    sentencepiece::SentencePieceProcessor sp;
    if (!sp.Load(d + "/tokenizer.model").ok()) throw std::runtime_error("trained model does not load");
    const int n = sp.GetPieceSize();
    json decoder = json::object();
    const auto add = [&](int id, const std::string& content) {
      decoder[std::to_string(id)] = {{"content", content}, {"special", true}, {"normalized", false},
                                     {"lstrip", false}, {"rstrip", false}, {"single_word", false}};
    };
    add(0, "<unk>");
    add(1, "<s>");
    add(2, "</s>");
    add(sp.PieceToId("<|im_end|>"), "<|im_end|>");
    add(sp.PieceToId("<|im_start|>"), "<|im_start|>");
    add(n, "<img>");
    add(n + 1, "</img>");
    add(n + 2, "<IMG_CONTEXT>");
    json config = {{"add_bos_token", true}, {"bos_token", "<s>"}, {"eos_token", "</s>"},
                   {"unk_token", "<unk>"}, {"added_tokens_decoder", decoder},
                   {"additional_special_tokens",
                    {"<|im_end|>", "<|im_start|>", "<img>", "</img>", "<IMG_CONTEXT>", "[SEG]", "<p>", "</p>"}}};
    std::ofstream(d + "/tokenizer_config.json") << config.dump(2);
    // Sa2VA's own tokens arrive through added_tokens.json only.
    std::ofstream(d + "/added_tokens.json") << json{{"[SEG]", n + 3}, {"<p>", n + 4}, {"</p>", n + 5}}.dump();
    return d;
  }();
  return dir;
}

std::vector<int32_t> sp_encode(const std::string& text) {
  sentencepiece::SentencePieceProcessor sp;
  EXPECT_TRUE(sp.Load(model_dir() + "/tokenizer.model").ok());
  std::vector<int> ids;
  EXPECT_TRUE(sp.Encode(text, &ids).ok());
  return {ids.begin(), ids.end()};
}

std::vector<int32_t> concat(std::initializer_list<std::vector<int32_t>> parts) {
  std::vector<int32_t> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

TEST(SentencePieceTokenizer, LoadsFolderWithAddedTokens) {
  const auto t = Tokenizer::load(model_dir());
  EXPECT_EQ(t->kind(), "sentencepiece");
  EXPECT_TRUE(t->adds_bos());
  EXPECT_EQ(t->bos_id(), 1);
  EXPECT_EQ(t->eos_id(), 2);
  sentencepiece::SentencePieceProcessor sp;
  ASSERT_TRUE(sp.Load(model_dir() + "/tokenizer.model").ok());
  const int n = sp.GetPieceSize();
  EXPECT_EQ(t->token_id("<img>"), n);
  EXPECT_EQ(t->token_id("[SEG]"), n + 3);
  EXPECT_EQ(t->token_id("<|im_start|>"), sp.PieceToId("<|im_start|>"));
  EXPECT_EQ(t->token_id("no such token"), -1);
  EXPECT_EQ(t->vocab_size(), n + 6);
  EXPECT_EQ(t->token(n + 5), "</p>");
}

TEST(SentencePieceTokenizer, EncodePrependsBosAndSplitsAddedTokens) {
  const auto t = Tokenizer::load(model_dir());
  const int32_t img = t->token_id("<img>"), end_img = t->token_id("</img>"), ctx = t->token_id("<IMG_CONTEXT>");
  const int32_t start = t->token_id("<|im_start|>"), end = t->token_id("<|im_end|>"), seg = t->token_id("[SEG]");
  const std::string prompt = "<|im_start|>user\n<img><IMG_CONTEXT><IMG_CONTEXT></img>the cat sits on the mat.<|im_end|>";
  const auto expected = concat({{1, start}, sp_encode("user\n"), {img, ctx, ctx, end_img},
                                sp_encode("the cat sits on the mat."), {end}});
  EXPECT_EQ(t->encode(prompt), expected);
  EXPECT_EQ(t->encode("a dog[SEG] holds"), concat({{1}, sp_encode("a dog"), {seg}, sp_encode(" holds")}));
  EXPECT_EQ(t->encode(""), (std::vector<int32_t>{1}));
  EXPECT_THROW(t->encode("bad \xFF"), Error);
}

TEST(SentencePieceTokenizer, DecodeFollowsInternLM2Rules) {
  const auto t = Tokenizer::load(model_dir());
  const auto ids = t->encode("the cat sits on the mat.");
  // A special token inside a run is preceded by a space unless the token before it was special.
  EXPECT_EQ(t->decode(ids), " <s>the cat sits on the mat.");
  EXPECT_EQ(t->decode(ids, /*skip_special=*/true), "the cat sits on the mat.");
  const int32_t seg = t->token_id("[SEG]"), end = t->token_id("<|im_end|>");
  // [SEG] lies outside the SentencePiece model: a chunk of its own, joined to the others with
  // spaces; "." was encoded on its own with a prefix space, which the clean-up removes before
  // <|im_end|> (a piece of the model, so part of the run).
  const auto answer = concat({sp_encode("the cat"), {seg}, sp_encode("."), {end}});
  EXPECT_EQ(t->decode(answer), "the cat [SEG] .<|im_end|>");
  EXPECT_EQ(t->decode(answer, true), "the cat.");
  EXPECT_EQ(t->decode({}), "");
}

// ---- the sa2va-tiny-internlm2 fixture: upstream's slow InternLM2 tokenizer -----------------------

json fixture_meta(const std::string& dir) {
  json meta;
  std::ifstream(dir + "/meta.json") >> meta;
  return meta;
}

std::string strip(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t\n\r\f\v");
  return b == std::string::npos ? "" : s.substr(b, s.find_last_not_of(" \t\n\r\f\v") - b + 1);
}

TEST(InternLM2Tokenizer, SpecialTokensFromTheSavedFiles) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny-internlm2");
  const auto t = Tokenizer::load(dir);
  EXPECT_EQ(t->kind(), "sentencepiece");
  EXPECT_EQ(t->bos_id(), 1);
  EXPECT_EQ(t->eos_id(), 2);
  EXPECT_TRUE(t->adds_bos());
  EXPECT_EQ(t->vocab_size(), 1038);
  // tokenizer_config.json renames the last six SentencePiece pieces.
  const auto meta = fixture_meta(dir);  // the loop below iterates into it: it must outlive the loop
  for (const auto& [token, id] : meta["tokens"].items()) {
    EXPECT_EQ(t->token_id(token), id.get<int32_t>()) << token;
    EXPECT_EQ(t->token(id.get<int32_t>()), token) << token;
  }
}

TEST(InternLM2Tokenizer, EncodeAndDecodeAsUpstream) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny-internlm2");
  const auto t = Tokenizer::load(dir);
  const json meta = fixture_meta(dir);
  ASSERT_FALSE(meta["tokenizer_examples"].empty());
  for (const json& e : meta["tokenizer_examples"]) {
    const std::string text = e["text"];
    const auto ids = e["ids_with_bos"].get<std::vector<int32_t>>();
    EXPECT_EQ(t->encode(text), ids) << text;
    // Spacing around special and added tokens, clean-up of spaces, a first piece without the
    // word-start mark: byte for byte.
    EXPECT_EQ(t->decode(ids), e["decode"].get<std::string>()) << text;
    const std::string without_bos = t->decode(std::vector<int32_t>(ids.begin() + 1, ids.end()));
    EXPECT_EQ(without_bos, e["decode_without_bos"].get<std::string>()) << text;
    EXPECT_EQ(strip(without_bos), e["decode_strip"].get<std::string>()) << text;
  }
  // Every answer of the fixture's cases: generated ids decode to upstream's text; forced answers
  // encode to upstream's ids.
  for (const auto& [name, c] : meta["cases"].items()) {
    if (c.contains("generated_ids")) {
      EXPECT_EQ(t->decode(c["generated_ids"].get<std::vector<int32_t>>()), c["decoded_raw"].get<std::string>()) << name;
    }
    if (c.contains("answer_ids")) {
      std::vector<int32_t> ids = t->encode(c["answer_text"].get<std::string>());
      ids.erase(ids.begin());  // BOS
      EXPECT_EQ(ids, c["answer_ids"].get<std::vector<int32_t>>()) << name;
    }
  }
}

TEST(InternLM2Tokenizer, CleanUpOfSpaces) {
  EXPECT_EQ(clean_up_tokenization("a . b ? c ! d , e ' f do n't I 'm it 's we 've they 're"),
            "a. b? c! d, e'f don't I'm it's we've they're");
  EXPECT_EQ(clean_up_tokenization("  ..  "), " ..  ");
}

TEST(SentencePieceTokenizer, MissingOrCorruptModelIsAnError) {
  const std::string dir = test::temp_dir("spm-bad");
  std::ofstream(dir + "/tokenizer.model") << "not a model";
  EXPECT_THROW(Tokenizer::load(dir), Error);
  const std::string dir2 = test::temp_dir("spm-bad-config");
  std::ifstream model(model_dir() + "/tokenizer.model", std::ios::binary);
  std::ofstream(dir2 + "/tokenizer.model", std::ios::binary) << model.rdbuf();
  std::ofstream(dir2 + "/tokenizer_config.json") << "{\"added_tokens_decoder\": {\"x\": {\"content\": \"a\"}}}";
  EXPECT_THROW(Tokenizer::load(dir2), Error);
  // A token id key far beyond any vocabulary (or with trailing text) is refused, naming the file.
  for (const char* key : {"2000000000", "12abc"}) {
    std::ofstream(dir2 + "/tokenizer_config.json")
        << "{\"added_tokens_decoder\": {\"" << key << "\": {\"content\": \"<X>\"}}}";
    try {
      Tokenizer::load(dir2);
      ADD_FAILURE() << key << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("tokenizer_config.json"), std::string::npos) << e.what();
    }
  }
  // An added token's id that is a float, or larger than any token id (found by fuzzing).
  for (const char* ids : {"{\"[SEG]\": 9.2e62}", "{\"[SEG]\": 92544.5}", "{\"[SEG]\": 4294967296}",
                          "{\"[SEG]\": 2000000000}"}) {
    const std::string dir3 = test::temp_dir("spm-bad-added");
    std::ifstream again(model_dir() + "/tokenizer.model", std::ios::binary);
    std::ofstream(dir3 + "/tokenizer.model", std::ios::binary) << again.rdbuf();
    std::ofstream(dir3 + "/added_tokens.json") << ids;
    try {
      Tokenizer::load(dir3);
      ADD_FAILURE() << ids << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("is not a token id"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace sa2va
