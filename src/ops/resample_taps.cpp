#include "ops/resample_taps.h"

#include <algorithm>
#include <cmath>

namespace sa2va::ops {
namespace {

// PyTorch area_pixel_compute_scale for an explicit output size.
float pixel_scale(int64_t in, int64_t out, bool align_corners) {
  if (align_corners) return out > 1 ? static_cast<float>(in - 1) / static_cast<float>(out - 1) : 0.f;
  return static_cast<float>(in) / static_cast<float>(out);
}

}  // namespace

AxisTaps linear_taps(int64_t in, int64_t out, bool align_corners) {
  AxisTaps t;
  t.taps = 2;
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

AxisTaps cubic_taps(int64_t in, int64_t out) {
  constexpr float A = -0.75f;
  auto near = [](float d) { return ((A + 2.f) * d - (A + 3.f)) * d * d + 1.f; };     // |d| <= 1
  auto far = [](float d) { return ((A * d - 5.f * A) * d + 8.f * A) * d - 4.f * A; };  // 1 < |d| < 2
  AxisTaps t;
  t.taps = 4;
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

}  // namespace sa2va::ops
