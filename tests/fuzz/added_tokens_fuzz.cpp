// The files that add tokens to a SentencePiece vocabulary (added_tokens.json,
// tokenizer_config.json, special_tokens_map.json, as Sa2VA-8B ships them) beside a fixed
// tokenizer.model: either a tokenizer that encodes and decodes a text, or sa2va::Error.
// Input: the three files, then the text, separated by kPartSeparator.
#include <fstream>
#include <iterator>

#include "fuzz_util.h"
#include "sa2va/sa2va.h"
#include "text/tokenizer.h"

namespace {
std::string sentencepiece_model;  // the tokenizer.model of the seed folder
}

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  std::ifstream in(SA2VA_FUZZ_SENTENCEPIECE_MODEL, std::ios::binary);
  sentencepiece_model.assign(std::istreambuf_iterator<char>(in), {});
  if (sentencepiece_model.empty()) std::abort();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sa2va;
  const auto parts = fuzz::split_parts(data, size, 4);
  fuzz::clear_scratch();
  const auto dir = fuzz::scratch_dir();
  fuzz::write_file(dir / "tokenizer.model", sentencepiece_model);
  const char* names[] = {"added_tokens.json", "tokenizer_config.json", "special_tokens_map.json"};
  for (size_t i = 0; i < 3 && i < parts.size(); ++i)
    if (!parts[i].empty()) fuzz::write_file(dir / names[i], parts[i]);
  std::unique_ptr<Tokenizer> tokenizer;
  try {
    (void)read_tokenizer_config(dir.string());
    tokenizer = Tokenizer::load(dir.string());
  } catch (const Error&) {
    return 0;
  }
  const std::string text = parts.size() > 3 ? parts[3] : "<image>\nPlease segment the cat. [SEG]</s>";
  try {
    const std::vector<int32_t> ids = tokenizer->encode(text);
    (void)tokenizer->decode(ids);
    (void)tokenizer->decode(ids, /*skip_special=*/true);
  } catch (const Error&) {
  }
  for (const AddedToken& token : tokenizer->added_tokens().tokens()) {
    if (tokenizer->token_id(token.content) < 0) std::abort();  // every added token is found
    (void)tokenizer->decode({token.id});
  }
  return 0;
}
