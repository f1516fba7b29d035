// CPU kernels for LayerNorm, RMSNorm and SAM2's channel-wise LayerNorm2d. Statistics take two
// passes in f32 (mean first, then the centred variance), which stays accurate for rows with a
// large mean.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/threadpool.h"
#include "ops/cpu/kernels.h"
#include "ops/cpu/simd.h"

namespace sa2va::ops::cpu {
namespace {
int64_t row_grain(int64_t dim) { return std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(dim, 1)); }
}  // namespace

void layer_norm(const float* x, const float* w, const float* b, float* y, int64_t rows, int64_t dim, float eps) {
  parallel_for(rows, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) simd::layer_norm_row(x + r * dim, dim, w, b, eps, y + r * dim);
  }, row_grain(dim));
}

void rms_norm(const float* x, const float* w, float* y, int64_t rows, int64_t dim, float eps) {
  parallel_for(rows, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = x + r * dim;
      float* yr = y + r * dim;
      float sq = 0.f;
      for (int64_t i = 0; i < dim; ++i) sq += xr[i] * xr[i];
      const float inv = 1.f / std::sqrt(sq / static_cast<float>(dim) + eps);
      for (int64_t i = 0; i < dim; ++i) yr[i] = w ? (xr[i] * inv) * w[i] : xr[i] * inv;
    }
  }, row_grain(dim));
}

void layer_norm_2d(const float* x, const float* w, const float* b, float* y, int64_t channels, int64_t pixels,
                   float eps) {
  // Statistics run along the strided channel axis; chunks of pixels keep the inner loops contiguous.
  constexpr int64_t kBlock = 256;
  const int64_t blocks = (pixels + kBlock - 1) / kBlock;
  parallel_for(blocks, [&](int64_t b0, int64_t b1) {
    std::vector<float> mean(kBlock), inv(kBlock);
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t p0 = blk * kBlock, np = std::min(kBlock, pixels - p0);
      std::fill(mean.begin(), mean.end(), 0.f);
      std::fill(inv.begin(), inv.end(), 0.f);
      for (int64_t c = 0; c < channels; ++c) {
        const float* xc = x + c * pixels + p0;
        for (int64_t p = 0; p < np; ++p) mean[p] += xc[p];
      }
      for (int64_t p = 0; p < np; ++p) mean[p] /= static_cast<float>(channels);
      for (int64_t c = 0; c < channels; ++c) {
        const float* xc = x + c * pixels + p0;
        for (int64_t p = 0; p < np; ++p) {
          const float d = xc[p] - mean[p];
          inv[p] += d * d;
        }
      }
      for (int64_t p = 0; p < np; ++p) inv[p] = 1.f / std::sqrt(inv[p] / static_cast<float>(channels) + eps);
      for (int64_t c = 0; c < channels; ++c) {
        const float* xc = x + c * pixels + p0;
        float* yc = y + c * pixels + p0;
        const float wc = w ? w[c] : 1.f, bc = b ? b[c] : 0.f;
        for (int64_t p = 0; p < np; ++p) yc[p] = (xc[p] - mean[p]) * inv[p] * wc + bc;
      }
    }
  });
}

}  // namespace sa2va::ops::cpu
