// CPU kernels for rotary position embeddings. Frequencies and angles are formed in float32 exactly
// as the reference models do (inv_freq in f32, angle = f32(position) · inv_freq); cos/sin of that
// angle.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/threadpool.h"
#include "ops/cpu/kernels.h"

namespace sa2va::ops::cpu {

void rope_rotate_half(float* x, int64_t tokens, int64_t heads, int64_t head_dim, int64_t stride,
                      const int64_t* positions, float theta) {
  const int64_t half = head_dim / 2;
  // Per-thread scratch kept between calls: a decode step allocates no buffers.
  thread_local std::vector<float> inv_freq;
  inv_freq.resize(static_cast<size_t>(half));
  for (int64_t k = 0; k < half; ++k)
    inv_freq[k] = 1.f / std::pow(theta, static_cast<float>(2 * k) / static_cast<float>(head_dim));
  const float* freq = inv_freq.data();
  parallel_for(tokens, [&](int64_t t0, int64_t t1) {
    thread_local std::vector<float> cos_v, sin_v;
    cos_v.resize(static_cast<size_t>(half));
    sin_v.resize(static_cast<size_t>(half));
    for (int64_t t = t0; t < t1; ++t) {
      const float pos = static_cast<float>(positions[t]);
      for (int64_t k = 0; k < half; ++k) {
        const float angle = pos * freq[k];
        cos_v[k] = std::cos(angle);
        sin_v[k] = std::sin(angle);
      }
      for (int64_t h = 0; h < heads; ++h) {
        float* v = x + t * stride + h * head_dim;
        for (int64_t k = 0; k < half; ++k) {
          const float a = v[k], b = v[k + half];
          v[k] = a * cos_v[k] - b * sin_v[k];
          v[k + half] = b * cos_v[k] + a * sin_v[k];
        }
      }
    }
  }, 16);
}

void rope_axial_2d(float* x, int64_t tokens, int64_t dim, int64_t grid_w, int64_t grid_h, float theta,
                   int64_t rope_tokens) {
  const int64_t quarter = dim / 4, cells = grid_w * grid_h;
  const int64_t n_rot = std::min(tokens, std::max<int64_t>(rope_tokens, 0));
  std::vector<float> freq(static_cast<size_t>(quarter));
  for (int64_t j = 0; j < quarter; ++j)
    freq[j] = 1.f / std::pow(theta, static_cast<float>(4 * j) / static_cast<float>(dim));
  // cos/sin per grid cell: pairs [0, quarter) use the column, [quarter, 2·quarter) the row.
  std::vector<float> cos_t(static_cast<size_t>(std::min(cells, n_rot) * 2 * quarter));
  std::vector<float> sin_t(cos_t.size());
  const int64_t table_cells = std::min(cells, n_rot);
  parallel_for(table_cells, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const float col = static_cast<float>(p % grid_w), row = static_cast<float>(p / grid_w);
      for (int64_t j = 0; j < quarter; ++j) {
        const float ax = col * freq[j], ay = row * freq[j];
        cos_t[p * 2 * quarter + j] = std::cos(ax);
        sin_t[p * 2 * quarter + j] = std::sin(ax);
        cos_t[p * 2 * quarter + quarter + j] = std::cos(ay);
        sin_t[p * 2 * quarter + quarter + j] = std::sin(ay);
      }
    }
  }, 64);
  parallel_for(n_rot, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      const int64_t p = n % cells;
      const float* c = cos_t.data() + p * 2 * quarter;
      const float* s = sin_t.data() + p * 2 * quarter;
      float* v = x + n * dim;
      for (int64_t j = 0; j < 2 * quarter; ++j) {
        const float re = v[2 * j], im = v[2 * j + 1];
        v[2 * j] = re * c[j] - im * s[j];
        v[2 * j + 1] = re * s[j] + im * c[j];
      }
    }
  }, 64);
}

}  // namespace sa2va::ops::cpu
