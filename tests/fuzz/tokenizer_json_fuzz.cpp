// tokenizer.json (byte-level BPE): any file is either a tokenizer that encodes and decodes a
// text, or refused with sa2va::Error. Input: tokenizer.json, then the text to encode.
#include "fuzz_util.h"
#include "sa2va/sa2va.h"
#include "text/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sa2va;
  const auto parts = fuzz::split_parts(data, size, 2);
  fuzz::clear_scratch();
  fuzz::write_file(fuzz::scratch_dir() / "tokenizer.json", parts[0]);
  std::unique_ptr<Tokenizer> tokenizer;
  try {
    tokenizer = Tokenizer::load(fuzz::scratch_dir().string());
  } catch (const Error&) {
    return 0;
  }
  const std::string text = parts.size() > 1 ? parts[1] : "Hello <image> world [SEG].";
  try {
    const std::vector<int32_t> ids = tokenizer->encode(text);
    (void)tokenizer->decode(ids);
    (void)tokenizer->decode(ids, /*skip_special=*/true);
  } catch (const Error&) {  // invalid UTF-8
  }
  for (int32_t id : {-1, 0, 1, tokenizer->vocab_size() - 1, tokenizer->vocab_size(), 1 << 30})
    (void)tokenizer->token(id);
  (void)tokenizer->decode({-5, 0, tokenizer->vocab_size(), tokenizer->eos_id(), tokenizer->bos_id()});
  return 0;
}
