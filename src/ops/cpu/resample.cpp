// CPU kernels for resampling that reproduce PyTorch's F.interpolate CPU kernels (taps from
// ops/resample_taps.h, applied separably: width inside, height outside), and InternVL's pixel shuffle.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/threadpool.h"
#include "ops/cpu/kernels.h"
#include "ops/resample_taps.h"

namespace sa2va::ops::cpu {
namespace {

// out[c, oy, ox] = Σ_a wy[a] · (Σ_b wx[b] · x[c, iy[a], ix[b]])
template <int Taps>
void separable(const float* xp, int64_t c, int64_t h, int64_t w, const AxisTaps& ty, const AxisTaps& tx,
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
