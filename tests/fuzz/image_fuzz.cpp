// PNG and JPEG decoding: any bytes are either an RGB image of the size they declare, or refused
// with sa2va::Error.
#include "fuzz_util.h"
#include "io/image.h"
#include "sa2va/sa2va.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sa2va;
  try {
    const Image image = decode_image(data, size, "fuzzed image", /*max_pixels=*/4'000'000);
    if (image.width <= 0 || image.height <= 0 ||
        image.rgb.size() != static_cast<size_t>(image.width) * static_cast<size_t>(image.height) * 3)
      std::abort();
  } catch (const Error&) {
  }
  return 0;
}
