// sa2va train-step: the one training step a training fixture folder describes, written as safetensors.
#include <cstdio>
#include <memory>
#include <string>

#include "cli/command.h"
#include "cli/request_options.h"
#include "io/safetensors.h"
#include "train/train_step.h"

namespace sa2va::cli {
namespace {

struct TrainStepArgs {
  std::string model, fixture, out;
};

SA2VA_COMMAND("train-step", "Run the training step a fixture folder describes; write losses, gradients and "
              "the stepped tensors", [](CLI::App& app) {
  auto args = std::make_shared<TrainStepArgs>();
  app.add_option("--model", args->model, "Model folder (Hugging Face layout)")->required();
  app.add_option("--fixture", args->fixture, "Training fixture folder (inputs.safetensors, meta.json, images)")
      ->required();
  app.add_option("--out", args->out, "Output .safetensors file")->required();
  return [args]() -> int {
    check_output_file(args->out);  // before the step's work
    const auto tensors = train::run_fixture_step(args->model, args->fixture);
    write_safetensors(args->out, tensors);
    for (const auto& [name, t] : tensors)
      if (name.rfind("loss.", 0) == 0 && t.numel() == 1) std::fprintf(stderr, "%s = %.7g\n", name.c_str(), t.f32()[0]);
    std::fprintf(stderr, "%s: %zu tensors\n", args->out.c_str(), tensors.size());
    return 0;
  };
});

}  // namespace
}  // namespace sa2va::cli
