// Random-weight Sa2VA model folders in the exact Hugging Face layout, for tests and benchmarks:
// config.json with the real values of each released size, every tensor name and shape of the real
// checkpoint (enumerated by the components' own load() in declaring mode), bf16 values scaled so
// activations stay O(1), shards like the release when large, and the tokenizer files.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "io/config.h"
#include "io/weights.h"

namespace sa2va {

// "tiny" (the conformance-fixture geometry), "1b", "4b", "8b", "internvl3-2b", "internvl3-8b",
// "internvl3-14b". Throws Error for other names.
ModelConfig preset_config(const std::string& preset);
std::vector<std::string> preset_names();

// Every tensor of a Sa2VA checkpoint with this config, in checkpoint order.
std::vector<DeclaredTensor> declare_checkpoint(const ModelConfig& config);

struct MakeModelOptions {
  std::string preset = "tiny";
  std::string out_dir;
  uint64_t seed = 0;
  uint64_t max_shard_bytes = 5'000'000'000ull;  // transformers' default save_pretrained shard size
};

// Writes the folder; returns the number of tensors written.
size_t make_model(const MakeModelOptions& options);

// One tensor of random bf16 values scaled by its Init (deterministic per name and seed).
Tensor random_weight(const DeclaredTensor& tensor, uint64_t seed);
// A single-file checkpoint of random values for `tensors` (benchmarks of one component).
void write_random_checkpoint(const std::string& file, const std::vector<DeclaredTensor>& tensors, uint64_t seed);

// Where the project's data files (tokenizer.json for the Qwen presets) are found.
std::string data_file(const std::string& name);

}  // namespace sa2va
