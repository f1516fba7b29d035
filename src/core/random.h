// A small deterministic random generator (splitmix64) for synthetic weights and test data:
// fast, well mixed, and the same on every platform, so generated checkpoints are reproducible.
#pragma once
#include <cstdint>

namespace sa2va {

struct SplitMix64 {
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  float uniform() { return static_cast<float>((next() >> 40) * (1.0 / 16777216.0)); }  // [0, 1)
  // Approximately standard normal (Irwin-Hall of 4 uniforms, rescaled): cheap and bounded.
  float normal() {
    const float s = uniform() + uniform() + uniform() + uniform();
    return (s - 2.f) * 1.7320508f;
  }
};

}  // namespace sa2va
