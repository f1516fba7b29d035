// The safetensors reader: any file is either read with every tensor inside it, or refused with
// sa2va::Error.
#include "fuzz_util.h"
#include "io/safetensors.h"
#include "sa2va/sa2va.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sa2va;
  fuzz::clear_scratch();
  const auto path = fuzz::scratch_dir() / "model.safetensors";
  fuzz::write_file(path, {reinterpret_cast<const char*>(data), size});
  try {
    const auto file = SafetensorsFile::open(path.string());
    volatile uint8_t sink = 0;
    for (const auto& [name, info] : file->tensors()) {
      const Tensor t = file->get(name);
      const auto* bytes = static_cast<const uint8_t*>(t.raw());
      for (size_t i = 0; i < info.end - info.begin; ++i) sink = sink ^ bytes[i];  // every byte readable
    }
  } catch (const Error&) {
  }
  return 0;
}
