// config.json: any file is either a configuration whose derived sizes can be computed, or refused
// with sa2va::Error naming the field.
#include <nlohmann/json.hpp>

#include "fuzz_util.h"
#include "io/config.h"
#include "sa2va/sa2va.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sa2va;
  fuzz::clear_scratch();
  fuzz::write_file(fuzz::scratch_dir() / "config.json", {reinterpret_cast<const char*>(data), size});
  try {
    const ModelConfig config = load_config(fuzz::scratch_dir().string());
    (void)config.num_image_tokens();
    const ModelConfig again = parse_config(config_to_json(config), "written config");
    if (again.llm.hidden_size != config.llm.hidden_size || again.template_name != config.template_name) std::abort();
  } catch (const Error&) {
  }
  return 0;
}
