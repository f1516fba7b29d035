// CPU kernels for resampling that reproduce PyTorch's F.interpolate CPU kernels (index and weight
// formulas in float32, separable taps: width inside, height outside), and InternVL's pixel shuffle.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/threadpool.h"
#include "ops/cpu/kernels.h"

namespace sa2va::ops::cpu {
namespace {

// PyTorch area_pixel_compute_scale for an explicit output size.
float pixel_scale(int64_t in, int64_t out, bool align_corners) {
  if (align_corners) return out > 1 ? static_cast<float>(in - 1) / static_cast<float>(out - 1) : 0.f;
  return static_cast<float>(in) / static_cast<float>(out);
}

// Per output index along one axis: source taps and their weights.
template <int Taps>
struct AxisTaps {
  std::vector<int64_t> index;  // [out][Taps]
  std::vector<float> weight;   // [out][Taps]
};

AxisTaps<2> linear_taps(int64_t in, int64_t out, bool align_corners) {
  AxisTaps<2> t;
  t.index.resize(static_cast<size_t>(out * 2));
  t.weight.resize(static_cast<size_t>(out * 2));
  const float scale = pixel_scale(in, out, align_corners);
  for (int64_t o = 0; o < out; ++o) {
    float src = align_corners ? scale * static_cast<float>(o) : scale * (static_cast<float>(o) + 0.5f) - 0.5f;
    if (src < 0.f) src = 0.f;
    const int64_t i0 = std::min<int64_t>(static_cast<int64_t>(std::floor(src)), in - 1);
    const float l1 = std::min(std::max(src - static_cast<float>(i0), 0.f), 1.f);
    t.index[o * 2] = i0;
    t.index[o * 2 + 1] = i0 + (i0 < in - 1 ? 1 : 0);
    t.weight[o * 2] = 1.f - l1;
    t.weight[o * 2 + 1] = l1;
  }
  return t;
}

AxisTaps<4> cubic_taps(int64_t in, int64_t out) {
  constexpr float A = -0.75f;
  auto near = [](float d) { return ((A + 2.f) * d - (A + 3.f)) * d * d + 1.f; };     // |d| <= 1
  auto far = [](float d) { return ((A * d - 5.f * A) * d + 8.f * A) * d - 4.f * A; };  // 1 < |d| < 2
  AxisTaps<4> t;
  t.index.resize(static_cast<size_t>(out * 4));
  t.weight.resize(static_cast<size_t>(out * 4));
  const float scale = pixel_scale(in, out, false);
  for (int64_t o = 0; o < out; ++o) {
    const float src = scale * (static_cast<float>(o) + 0.5f) - 0.5f;
    const float fl = std::floor(src);
    const int64_t i = static_cast<int64_t>(fl);
    const float d = src - fl;
    const float w[4] = {far(d + 1.f), near(d), near(1.f - d), far(2.f - d)};
    for (int k = 0; k < 4; ++k) {
      t.index[o * 4 + k] = std::min(std::max<int64_t>(i - 1 + k, 0), in - 1);
      t.weight[o * 4 + k] = w[k];
    }
  }
  return t;
}

// out[c, oy, ox] = Σ_a wy[a] · (Σ_b wx[b] · x[c, iy[a], ix[b]])
template <int Taps>
void separable(const float* xp, int64_t c, int64_t h, int64_t w, const AxisTaps<Taps>& ty, const AxisTaps<Taps>& tx,
               int64_t out_h, int64_t out_w, float* yp) {
  parallel_for(c * out_h, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t ch = r / out_h, oy = r % out_h;
      const float* plane = xp + ch * h * w;
      float* dst = yp + r * out_w;
      for (int64_t ox = 0; ox < out_w; ++ox) {
        float acc = 0.f;
        for (int a = 0; a < Taps; ++a) {
          const float* row = plane + ty.index[oy * Taps + a] * w;
          float t = 0.f;
          for (int b = 0; b < Taps; ++b) {
            const float v = row[tx.index[ox * Taps + b]] * tx.weight[ox * Taps + b];
            t = b == 0 ? v : t + v;
          }
          const float v = t * ty.weight[oy * Taps + a];
          acc = a == 0 ? v : acc + v;
        }
        dst[ox] = acc;
      }
    }
  }, 8);
}

// PyTorch legacy 'nearest': identity, exact 2× by shift, otherwise floor(dst · (in/out as float)).
std::vector<int64_t> nearest_index(int64_t in, int64_t out) {
  std::vector<int64_t> idx(static_cast<size_t>(out));
  const float scale = static_cast<float>(in) / static_cast<float>(out);
  for (int64_t o = 0; o < out; ++o) {
    if (out == in) idx[o] = o;
    else if (out == 2 * in) idx[o] = o >> 1;
    else idx[o] = std::min(static_cast<int64_t>(std::floor(static_cast<float>(o) * scale)), in - 1);
  }
  return idx;
}

}  // namespace

void interpolate_bilinear(const float* x, int64_t c, int64_t h, int64_t w, int64_t out_h, int64_t out_w,
                          bool align_corners, float* y) {
  separable<2>(x, c, h, w, linear_taps(h, out_h, align_corners), linear_taps(w, out_w, align_corners), out_h, out_w,
               y);
}

void interpolate_bicubic(const float* x, int64_t c, int64_t h, int64_t w, int64_t out_h, int64_t out_w, float* y) {
  separable<4>(x, c, h, w, cubic_taps(h, out_h), cubic_taps(w, out_w), out_h, out_w, y);
}

void interpolate_nearest(const float* xp, int64_t c, int64_t h, int64_t w, int64_t out_h, int64_t out_w, float* yp) {
  const std::vector<int64_t> iy = nearest_index(h, out_h), ix = nearest_index(w, out_w);
  parallel_for(c * out_h, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* row = xp + ((r / out_h) * h + iy[r % out_h]) * w;
      float* dst = yp + r * out_w;
      for (int64_t ox = 0; ox < out_w; ++ox) dst[ox] = row[ix[ox]];
    }
  }, 16);
}

void pixel_shuffle_v2(const float* xp, int64_t side, int64_t c, float* yp) {
  const int64_t half = side / 2;
  parallel_for(half * half, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t i = t / half, j = t % half;
      for (int64_t m = 0; m < 2; ++m)
        for (int64_t k = 0; k < 2; ++k)
          std::memcpy(yp + t * 4 * c + (m * 2 + k) * c, xp + ((2 * i + m) * side + 2 * j + k) * c,
                      sizeof(float) * static_cast<size_t>(c));
    }
  }, 16);
}

}  // namespace sa2va::ops::cpu
