// CPU kernels for rotary position embeddings. Frequencies and angles are formed in float32 exactly
// as the reference models do (inv_freq in f32, angle = f32(position) · inv_freq); cos/sin of that
// angle.
#include <algorithm>
#include <cmath>
#include <memory>
#include <mutex>
#include <vector>

#include "core/threadpool.h"
#include "ops/cpu/kernels.h"
#include "ops/cpu/simd.h"

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

namespace {

// cos and signed sin of every grid cell's angles in the layout simd::rotate_pairs reads: pair j of
// cell p at [p·dim + 2j, p·dim + 2j + 1]; pairs [0, dim/4) turn by the column, the rest by the row.
struct AxialTable {
  int64_t dim = 0, grid_w = 0, grid_h = 0;
  float theta = 0.f;
  std::vector<float> cos_pairs, sin_pairs;
};

AxialTable make_axial_table(int64_t dim, int64_t grid_w, int64_t grid_h, float theta) {
  const int64_t quarter = dim / 4, cells = grid_w * grid_h;
  AxialTable t{dim, grid_w, grid_h, theta, {}, {}};
  std::vector<float> freq(static_cast<size_t>(quarter));
  for (int64_t j = 0; j < quarter; ++j)
    freq[j] = 1.f / std::pow(theta, static_cast<float>(4 * j) / static_cast<float>(dim));
  t.cos_pairs.resize(static_cast<size_t>(cells * dim));
  t.sin_pairs.resize(t.cos_pairs.size());
  parallel_for(cells, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const float col = static_cast<float>(p % grid_w), row = static_cast<float>(p / grid_w);
      for (int64_t j = 0; j < 2 * quarter; ++j) {
        const float angle = (j < quarter ? col : row) * freq[j % quarter];
        const float c = std::cos(angle), s = std::sin(angle);
        const size_t at = static_cast<size_t>(p * dim + 2 * j);
        t.cos_pairs[at] = t.cos_pairs[at + 1] = c;
        t.sin_pairs[at] = -s;
        t.sin_pairs[at + 1] = s;
      }
    }
  }, 64);
  return t;
}

// The table of a geometry, built once: memory attention rotates every memory frame's keys by the same
// grid, 4 layers x 2 attentions per video frame (sin and cos were a fifth of its time when rebuilt per
// call). A few geometries are kept; a model uses one.
std::shared_ptr<const AxialTable> axial_table(int64_t dim, int64_t grid_w, int64_t grid_h, float theta) {
  static std::mutex mutex;
  static std::vector<std::shared_ptr<const AxialTable>> tables;  // most recently used last
  constexpr size_t kKept = 4;
  auto find = [&]() -> std::shared_ptr<const AxialTable> {
    for (auto it = tables.begin(); it != tables.end(); ++it) {
      const AxialTable& t = **it;
      if (t.dim == dim && t.grid_w == grid_w && t.grid_h == grid_h && t.theta == theta) {
        std::rotate(it, it + 1, tables.end());
        return tables.back();
      }
    }
    return nullptr;
  };
  {
    const std::lock_guard<std::mutex> lock(mutex);
    if (auto found = find()) return found;
  }
  // Built outside the lock (the build runs on the thread pool); a concurrent builder's table wins.
  auto built = std::make_shared<const AxialTable>(make_axial_table(dim, grid_w, grid_h, theta));
  const std::lock_guard<std::mutex> lock(mutex);
  if (auto found = find()) return found;
  if (tables.size() == kKept) tables.erase(tables.begin());
  tables.push_back(std::move(built));
  return tables.back();
}

}  // namespace

void rope_axial_2d(float* x, int64_t tokens, int64_t dim, int64_t grid_w, int64_t grid_h, float theta,
                   int64_t rope_tokens) {
  const int64_t cells = grid_w * grid_h;
  const int64_t n_rot = std::min(tokens, std::max<int64_t>(rope_tokens, 0));
  if (n_rot == 0) return;
  const std::shared_ptr<const AxialTable> table = axial_table(dim, grid_w, grid_h, theta);
  const float* cos_pairs = table->cos_pairs.data();
  const float* sin_pairs = table->sin_pairs.data();
  parallel_for(n_rot, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      const int64_t p = n % cells;
      simd::rotate_pairs(x + n * dim, cos_pairs + p * dim, sin_pairs + p * dim, dim);
    }
  }, 64);
}

}  // namespace sa2va::ops::cpu
