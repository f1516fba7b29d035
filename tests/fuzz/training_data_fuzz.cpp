// The training data format (JSONL): any file is either read into samples whose every mask decodes
// (or is refused naming the file, line and problem) or refused as a whole with sa2va::Error.
#include "fuzz_util.h"
#include "io/json_number.h"
#include "sa2va/sa2va.h"
#include "train/dataset.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sa2va;
  fuzz::clear_scratch();
  const auto path = fuzz::scratch_dir() / "data.jsonl";
  fuzz::write_file(path, {reinterpret_cast<const char*>(data), size});
  try {
    for (const train::TrainingSample& sample : train::read_training_data(path.string())) {
      if (sample.turns.empty() || sample.images.empty() || static_cast<int>(sample.masks.size()) != sample.seg_count)
        std::abort();
      for (const auto& per_frame : sample.masks) {
        if (per_frame.size() != (sample.video ? sample.images.size() : 1)) std::abort();
        for (const std::string& text : per_frame) {
          const nlohmann::json mask = nlohmann::json::parse(text);  // written by the reader: always valid
          // Decoded at the size it states when that is small (else a fixed one), as prepare() would.
          int h = 7, w = 9;
          if (mask.is_object() && mask.contains("size") && mask["size"].is_array() && mask["size"].size() == 2) {
            const auto mh = json_integer(mask["size"][0], 1, 64), mw = json_integer(mask["size"][1], 1, 64);
            if (mh && mw) h = static_cast<int>(*mh), w = static_cast<int>(*mw);
          }
          try {
            const std::vector<uint8_t> m = train::decode_training_mask(mask, h, w, "mask");
            if (m.size() != static_cast<size_t>(h) * w) std::abort();
            for (uint8_t v : m)
              if (v > 1) std::abort();
          } catch (const Error&) {
          }
        }
      }
    }
  } catch (const Error&) {
  }
  return 0;
}
