// Shared pieces of the benchmarks: random weights through make-model's generator, random inputs.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/weights.h"
#include "models/make_model.h"

namespace sa2va::bench {

// Writes DIR/model.safetensors with random values for the declared tensors.
inline void write_random_model(const std::string& dir, const std::vector<DeclaredTensor>& declared) {
  write_random_checkpoint(dir + "/model.safetensors", declared, 0x9E3779B97F4A7C15ull);
}

// Fills t (F32) with U(-scale, scale) from a fixed xorshift64* stream.
inline Tensor fill_uniform(Tensor t, float scale) {
  uint64_t s = 12345;
  float* p = t.f32();
  for (int64_t i = 0; i < t.numel(); ++i) {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    p[i] = scale * (static_cast<float>((s * 0x2545F4914F6CDD1Dull) >> 40) * 0x1.0p-23f - 1.f);
  }
  return t;
}

}  // namespace sa2va::bench
