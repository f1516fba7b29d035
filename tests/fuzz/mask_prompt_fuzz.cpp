// Visual prompts as a request carries them (sa2va serve's "mask_prompts": boxes, COCO RLE with
// counts as a list or pycocotools' compressed string, PNG data URIs), then sampled to the
// model's region grid at any size: every input is either masks of the declared size or
// sa2va::Error. Input: the JSON list, then two bytes for the image width and height.
#include "fuzz_util.h"
#include "models/preprocess.h"
#include "server/api.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sa2va;
  const auto parts = fuzz::split_parts(data, size, 2);
  const std::string dims = parts.size() > 1 ? parts[1] : "";
  const int width = 1 + (dims.size() > 0 ? static_cast<uint8_t>(dims[0]) : 31);
  const int height = 1 + (dims.size() > 1 ? static_cast<uint8_t>(dims[1]) : 23);
  const server::json list = server::json::parse(parts[0], nullptr, /*allow_exceptions=*/false);
  if (list.is_discarded()) return 0;
  server::Limits limits;
  limits.max_pixels = 1'000'000;
  try {
    for (const Mask& m : server::mask_prompts_from_json(list, width, height, limits)) {
      if (m.width <= 0 || m.height <= 0 || m.data.size() != static_cast<size_t>(m.width) * m.height) std::abort();
      const Tensor grid = preprocess::mask_prompt_grid(m.data.data(), m.width, m.height);
      if (grid.numel() != int64_t{preprocess::kMaskPromptGrid} * preprocess::kMaskPromptGrid) std::abort();
    }
  } catch (const Error&) {
  }
  return 0;
}
