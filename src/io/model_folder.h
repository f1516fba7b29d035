// Writing a model folder derived from another (quantized or fine-tuned weights): one
// model.safetensors with the new tensors, every other file of the source folder (config,
// tokenizer, generation settings) copied unchanged.
#pragma once
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace sa2va {

// Writes `out_dir` (absent or empty, not `model_dir` itself) as `model_dir` with its tensors replaced by
// `entries`; tensor_at(i) gives the i-th entry's tensor, asked in order. The tensors are written
// under a temporary name and renamed last, so that a failure (disk full, interruption) never leaves
// a folder that looks complete; a folder this call created is removed on failure. Throws Error
// naming the folder or file.
void write_model_folder(const std::string& model_dir, const std::string& out_dir,
                        const std::vector<SafetensorsWriter::Entry>& entries,
                        const std::function<Tensor(size_t)>& tensor_at,
                        const std::map<std::string, std::string>& metadata);

}  // namespace sa2va
