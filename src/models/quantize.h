// Quantized model folders: `sa2va quantize` converts a checkpoint's language-model matrices to
// Q8_0 or Q4_0 once, so that loading needs no conversion (the packed values and scales are used
// in place from the memory map).
//
// The output folder is the input folder with one model.safetensors in which every language-model
// Linear weight W [N, K] becomes W (U8 packed values) + W.scales (F16), as io/weights.h describes;
// a tied output head is written quantized under the head's name (decode's largest matrix), and
// every other tensor is copied as stored. The metadata names the format. Other files (config,
// tokenizer) are copied unchanged.
#pragma once
#include <cstdint>
#include <string>

#include "sa2va/sa2va.h"

namespace sa2va {

struct QuantizeOptions {
  std::string model_dir;
  std::string out_dir;  // must not exist yet, or be empty
  WeightFormat format = WeightFormat::Q8_0;  // Q8_0 or Q4_0
};

struct QuantizeReport {
  size_t tensors_written = 0;
  size_t matrices_quantized = 0;
  uint64_t bytes_in = 0;   // the input checkpoint's tensor bytes
  uint64_t bytes_out = 0;  // the output checkpoint's tensor bytes
};

// Throws Error naming the folder or tensor on any problem (unknown config, missing or mis-shaped
// tensors, a folder that is already quantized, an output folder in use).
QuantizeReport quantize_model(const QuantizeOptions& options);

}  // namespace sa2va
