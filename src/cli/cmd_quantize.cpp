// sa2va quantize: a model folder whose language-model matrices are stored as Q8_0 or Q4_0.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "cli/command.h"
#include "models/quantize.h"
#include "ops/weight_matrix.h"

namespace sa2va::cli {
namespace {

const std::vector<std::string> kFormats{"q8_0", "q4_0"};

struct QuantizeArgs {
  QuantizeOptions options;
  std::string format = "q8_0";
};

SA2VA_COMMAND("quantize", "Write a model folder with the language model quantized (q8_0 or q4_0)", [](CLI::App& app) {
  auto args = std::make_shared<QuantizeArgs>();
  app.add_option("--model", args->options.model_dir, "Model folder (Hugging Face layout)")->required();
  app.add_option("--out", args->options.out_dir, "Output folder (new or empty)")->required();
  app.add_option("--weights", args->format, "q8_0 or q4_0")->check(CLI::IsMember(kFormats))->capture_default_str();
  return [args]() -> int {
    args->options.format = parse_weight_format(args->format);
    const QuantizeReport r = quantize_model(args->options);
    std::fprintf(stderr, "%s: %zu matrices quantized to %s, %zu tensors, %.1f MB -> %.1f MB\n",
                 args->options.out_dir.c_str(), r.matrices_quantized, args->format.c_str(), r.tensors_written,
                 static_cast<double>(r.bytes_in) / 1e6, static_cast<double>(r.bytes_out) / 1e6);
    return 0;
  };
});

}  // namespace
}  // namespace sa2va::cli
