// CPU kernels for 8-bit images: Pillow's fixed-point resampling passes and ToTensor/Normalize.
#include <algorithm>
#include <vector>

#include "core/threadpool.h"
#include "ops/cpu/kernels.h"

namespace sa2va::ops::cpu {
namespace {

inline uint8_t clip8(int32_t acc, int bits) {
  if (acc <= 0) return 0;
  if (acc >= (255 << bits)) return 255;
  return static_cast<uint8_t>(acc >> bits);
}

}  // namespace

void resample_rgb8_horizontal(const uint8_t* in, int64_t in_w, int64_t rows, const FixedPointTaps& axis,
                              uint8_t* out) {
  const int bits = axis.precision_bits;
  const int32_t bias = 1 << (bits - 1);
  const int64_t out_w = axis.size();
  parallel_for(
      rows,
      [&](int64_t begin, int64_t end) {
        for (int64_t y = begin; y < end; ++y) {
          const uint8_t* src = in + y * in_w * 3;
          uint8_t* dst = out + y * out_w * 3;
          for (int64_t x = 0; x < out_w; ++x) {
            const int32_t* k = axis.taps(x);
            const uint8_t* s = src + 3 * axis.first[x];
            int32_t r = bias, g = bias, b = bias;
            for (int t = 0; t < axis.count[x]; ++t, s += 3) {
              r += s[0] * k[t];
              g += s[1] * k[t];
              b += s[2] * k[t];
            }
            dst[3 * x] = clip8(r, bits), dst[3 * x + 1] = clip8(g, bits), dst[3 * x + 2] = clip8(b, bits);
          }
        }
      },
      8);
}

void resample_u8_vertical(const uint8_t* in, int64_t row_len, int64_t row0, const FixedPointTaps& axis,
                          uint8_t* out) {
  const int bits = axis.precision_bits;
  const int32_t bias = 1 << (bits - 1);
  parallel_for(
      axis.size(),
      [&](int64_t begin, int64_t end) {
        std::vector<int32_t> acc(static_cast<size_t>(row_len));
        for (int64_t y = begin; y < end; ++y) {
          const int32_t* k = axis.taps(y);
          std::fill(acc.begin(), acc.end(), bias);
          for (int t = 0; t < axis.count[y]; ++t) {
            const uint8_t* src = in + (axis.first[y] - row0 + t) * row_len;
            const int32_t weight = k[t];
            for (int64_t i = 0; i < row_len; ++i) acc[i] += src[i] * weight;
          }
          uint8_t* dst = out + y * row_len;
          for (int64_t i = 0; i < row_len; ++i) dst[i] = clip8(acc[i], bits);
        }
      },
      4);
}

void normalize_rgb8_chw(const uint8_t* src, int64_t h, int64_t w, const float mean[3], const float stdev[3],
                        float* out) {
  float table[3][256];
  rgb8_normalize_table(mean, stdev, table);
  const int64_t plane = w * h;
  parallel_for(
      h,
      [&](int64_t begin, int64_t end) {
        for (int64_t y = begin; y < end; ++y) {
          const uint8_t* row = src + y * w * 3;
          float* r = out + y * w;
          float* g = r + plane;
          float* b = g + plane;
          for (int64_t x = 0; x < w; ++x) {
            r[x] = table[0][row[3 * x]];
            g[x] = table[1][row[3 * x + 1]];
            b[x] = table[2][row[3 * x + 2]];
          }
        }
      },
      16);
}

}  // namespace sa2va::ops::cpu
