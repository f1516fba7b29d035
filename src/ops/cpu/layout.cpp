// CPU kernels for layout and data movement: transposes, gathers, token max-pooling, window
// partitioning and the broadcast adds that go with re-layouts.
#include <algorithm>
#include <cstring>

#include "core/dtype.h"
#include "core/threadpool.h"
#include "ops/cpu/kernels.h"

namespace sa2va::ops::cpu {
namespace {

// Tasks of about this many elements: below it a thread hand-off costs more than the copy.
constexpr int64_t kElementGrain = 1 << 14;
int64_t row_grain(int64_t dim) { return std::max<int64_t>(1, kElementGrain / std::max<int64_t>(dim, 1)); }

}  // namespace

void transpose(const float* src, int64_t rows, int64_t cols, int64_t inner, float* dst) {
  if (inner == 1) {
    // Cache-sized tiles: a tile's rows are read and its columns written while both stay cached.
    constexpr int64_t kTile = 32;
    const int64_t row_tiles = (rows + kTile - 1) / kTile;
    parallel_for(row_tiles, [&](int64_t t0, int64_t t1) {
      for (int64_t rt = t0; rt < t1; ++rt) {
        const int64_t r0 = rt * kTile, r1 = std::min(rows, r0 + kTile);
        for (int64_t c0 = 0; c0 < cols; c0 += kTile) {
          const int64_t c1 = std::min(cols, c0 + kTile);
          for (int64_t r = r0; r < r1; ++r)
            for (int64_t c = c0; c < c1; ++c) dst[c * rows + r] = src[r * cols + c];
        }
      }
    });
    return;
  }
  const size_t bytes = static_cast<size_t>(inner) * sizeof(float);
  parallel_for(rows, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t c = 0; c < cols; ++c) std::memcpy(dst + (c * rows + r) * inner, src + (r * cols + c) * inner, bytes);
  }, std::max<int64_t>(1, row_grain(cols * inner)));
}

void gather_rows_f32(const float* src, int64_t dim, const int64_t* rows, int64_t n, float* dst) {
  const size_t bytes = static_cast<size_t>(dim) * sizeof(float);
  parallel_for(n, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) std::memcpy(dst + i * dim, src + rows[i] * dim, bytes);
  }, row_grain(dim));
}

void gather_rows_bf16(const uint16_t* src, int64_t dim, const int64_t* rows, int64_t n, float* dst) {
  parallel_for(n, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) convert_bf16_to_f32(src + rows[i] * dim, dst + i * dim, static_cast<size_t>(dim));
  }, row_grain(dim));
}

void max_pool_tokens(const float* x, int64_t x_stride, int64_t maps, int64_t h, int64_t w, int64_t c, int64_t s,
                     float* y) {
  const int64_t ho = h / s, wo = w / s;
  parallel_for(maps * ho, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t m = r / ho, oy = r % ho;
      for (int64_t ox = 0; ox < wo; ++ox) {
        float* out = y + ((m * ho + oy) * wo + ox) * c;
        const float* first = x + (m * h * w + oy * s * w + ox * s) * x_stride;
        std::memcpy(out, first, static_cast<size_t>(c) * sizeof(float));
        for (int64_t dy = 0; dy < s; ++dy)
          for (int64_t dx = 0; dx < s; ++dx) {
            const float* in = x + (m * h * w + (oy * s + dy) * w + ox * s + dx) * x_stride;
            for (int64_t k = 0; k < c; ++k) out[k] = std::max(out[k], in[k]);
          }
      }
    }
  }, 4);
}

void window_partition(const float* x, int64_t h, int64_t w, int64_t c, int64_t win_h, int64_t win_w, float* y) {
  const int64_t n_rows = (h + win_h - 1) / win_h, n_cols = (w + win_w - 1) / win_w;
  const size_t row_bytes = static_cast<size_t>(c) * sizeof(float);
  parallel_for(n_rows * win_h, [&](int64_t r0, int64_t r1) {
    for (int64_t py = r0; py < r1; ++py) {  // padded row
      const int64_t wr = py / win_h, iy = py % win_h;
      for (int64_t px = 0; px < n_cols * win_w; ++px) {
        const int64_t wc = px / win_w, ix = px % win_w;
        float* dst = y + (((wr * n_cols + wc) * win_h + iy) * win_w + ix) * c;
        if (py < h && px < w) std::memcpy(dst, x + (py * w + px) * c, row_bytes);
        else std::memset(dst, 0, row_bytes);
      }
    }
  }, 4);
}

void window_unpartition(const float* windows, int64_t win_h, int64_t win_w, int64_t h, int64_t w, int64_t c,
                        float* y, const float* residual) {
  const int64_t n_cols = (w + win_w - 1) / win_w, win_tokens = win_h * win_w;
  parallel_for(h, [&](int64_t r0, int64_t r1) {
    for (int64_t oy = r0; oy < r1; ++oy) {
      for (int64_t ox = 0; ox < w; ++ox) {
        const int64_t wi = (oy / win_h) * n_cols + ox / win_w;
        const float* src = windows + (wi * win_tokens + (oy % win_h) * win_w + ox % win_w) * c;
        const int64_t t = oy * w + ox;
        float* dst = y + t * c;
        if (residual) {
          const float* res = residual + t * c;
          for (int64_t k = 0; k < c; ++k) dst[k] = res[k] + src[k];
        } else {
          std::memcpy(dst, src, static_cast<size_t>(c) * sizeof(float));
        }
      }
    }
  }, 4);
}

void add_upsampled_nearest_2x(float* x, int64_t h, int64_t w, int64_t c, const float* src) {
  const int64_t src_w = w / 2;
  parallel_for(h, [&](int64_t r0, int64_t r1) {
    for (int64_t y = r0; y < r1; ++y)
      for (int64_t x2 = 0; x2 < w; ++x2) {
        float* dst = x + (y * w + x2) * c;
        const float* s = src + ((y / 2) * src_w + x2 / 2) * c;
        for (int64_t k = 0; k < c; ++k) dst[k] = dst[k] + s[k];
      }
  }, 4);
}

void add_tiled(float* x, int64_t channels, int64_t h, int64_t w, const float* tile, int64_t th, int64_t tw) {
  parallel_for(channels * h, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t ch = r / h, y = r % h;
      const float* tile_row = tile + (ch * th + y % th) * tw;
      for (int64_t i = 0; i < w; ++i) x[r * w + i] += tile_row[i % tw];
    }
  }, 16);
}

}  // namespace sa2va::ops::cpu
