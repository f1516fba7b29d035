// sa2va make-model: a random-weight model folder in the exact Hugging Face layout.
#include <cstdio>

#include "cli/command.h"
#include "models/make_model.h"

namespace sa2va::cli {
namespace {

SA2VA_COMMAND("make-model", "Write a random-weight Sa2VA model folder (tiny, 1b, 4b, 8b, internvl3-*)", [](CLI::App& app) {
  auto options = std::make_shared<MakeModelOptions>();
  app.add_option("--preset", options->preset, "tiny, 1b, 4b, 8b, internvl3-2b, internvl3-8b or internvl3-14b")
      ->check(CLI::IsMember(preset_names()))
      ->capture_default_str();
  app.add_option("--out", options->out_dir, "Output folder")->required();
  app.add_option("--seed", options->seed, "Random seed")->capture_default_str();
  return [options]() -> int {
    const size_t n = make_model(*options);
    std::fprintf(stderr, "wrote %zu tensors (%s preset) to %s\n", n, options->preset.c_str(), options->out_dir.c_str());
    return 0;
  };
});

}  // namespace
}  // namespace sa2va::cli
