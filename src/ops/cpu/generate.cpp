// CPU kernels for generated tables: SAM2's sine and random-Fourier position encodings and the
// seeded normal fill of synthetic weights.
#include <algorithm>
#include <cmath>
#include <numbers>
#include <vector>

#include "core/dtype.h"
#include "core/random.h"
#include "core/threadpool.h"
#include "ops/cpu/kernels.h"

namespace sa2va::ops::cpu {

void position_embedding_sine(int64_t channels, int64_t h, int64_t w, float* p) {
  const int64_t half = channels / 2;
  // Float32 throughout, as upstream computes it.
  std::vector<float> dim_t(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i)
    dim_t[i] = powf(10000.f, (2.f * static_cast<float>(i / 2)) / static_cast<float>(half));
  const float scale = static_cast<float>(2 * std::numbers::pi);
  const float y_den = static_cast<float>(h) + 1e-6f, x_den = static_cast<float>(w) + 1e-6f;
  parallel_for(half, [&](int64_t c0, int64_t c1) {
    for (int64_t i = c0; i < c1; ++i) {
      const bool use_sin = i % 2 == 0;
      float* y_plane = p + i * h * w;
      float* x_plane = p + (half + i) * h * w;
      for (int64_t r = 0; r < h; ++r) {
        const float v = static_cast<float>(r + 1) / y_den * scale / dim_t[i];
        const float e = use_sin ? sinf(v) : cosf(v);
        std::fill(y_plane + r * w, y_plane + (r + 1) * w, e);
      }
      for (int64_t c = 0; c < w; ++c) {
        const float v = static_cast<float>(c + 1) / x_den * scale / dim_t[i];
        x_plane[c] = use_sin ? sinf(v) : cosf(v);
      }
      for (int64_t r = 1; r < h; ++r) std::copy(x_plane, x_plane + w, x_plane + r * w);
    }
  });
}

void position_embedding_random(const float* g, int64_t half, int64_t n, float* o) {
  const float two_pi = static_cast<float>(2 * std::numbers::pi);
  parallel_for(n, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float v = 2.f * ((static_cast<float>(r) + 0.5f) / static_cast<float>(n)) - 1.f;
      for (int64_t c = 0; c < n; ++c) {
        const float u = 2.f * ((static_cast<float>(c) + 0.5f) / static_cast<float>(n)) - 1.f;
        for (int64_t k = 0; k < half; ++k) {
          const float p = two_pi * (u * g[k] + v * g[half + k]);
          o[(k * n + r) * n + c] = sinf(p);
          o[((half + k) * n + r) * n + c] = cosf(p);
        }
      }
    }
  });
}

void fill_random_normal(uint16_t* out_bf16, float* out_f32, int64_t n, float mean, float stddev, uint64_t seed) {
  constexpr int64_t kChunk = 1 << 16;
  parallel_for((n + kChunk - 1) / kChunk, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      SplitMix64 rng{seed + static_cast<uint64_t>(c) * 0x632be59bd9b4e019ull};
      const int64_t end = std::min(n, (c + 1) * kChunk);
      if (out_bf16) {
        for (int64_t i = c * kChunk; i < end; ++i) out_bf16[i] = f32_to_bf16(mean + stddev * rng.normal());
      } else {
        for (int64_t i = c * kChunk; i < end; ++i) out_f32[i] = mean + stddev * rng.normal();
      }
    }
  });
}

}  // namespace sa2va::ops::cpu
