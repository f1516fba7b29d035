// CPU kernels for 2-D convolution (im2col + sgemm, direct loops for depthwise), 2×2 transposed
// convolution and max pooling, on one channel-first image [C, H, W].
#include <algorithm>
#include <limits>

#include "core/threadpool.h"
#include "ops/cpu/kernels.h"
#include "ops/cpu/simd.h"

namespace sa2va::ops::cpu {
namespace {

// Depthwise (one input channel per output channel): direct accumulation, output row by row.
void conv2d_depthwise(const float* x, const float* wt, const float* bias, float* y, const ConvGeometry& g) {
  const Conv2dArgs& a = g.a;
  parallel_for(g.cout, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const float* xc = x + c * g.h * g.w;
      const float* wc = wt + c * g.kh * g.kw;
      for (int64_t oy = 0; oy < g.ho; ++oy) {
        float* yr = y + (c * g.ho + oy) * g.wo;
        std::fill(yr, yr + g.wo, bias ? bias[c] : 0.f);
        for (int64_t ky = 0; ky < g.kh; ++ky) {
          const int64_t iy = oy * a.stride_h - a.pad_h + ky * a.dilation_h;
          if (iy < 0 || iy >= g.h) continue;
          const float* xr = xc + iy * g.w;
          for (int64_t kx = 0; kx < g.kw; ++kx) {
            const float wv = wc[ky * g.kw + kx];
            // Output columns whose input column ox·stride − pad + kx·dil lies inside [0, W).
            const int64_t off = kx * a.dilation_w - a.pad_w;
            int64_t ox0 = off >= 0 ? 0 : (-off + a.stride_w - 1) / a.stride_w;
            int64_t ox1 = g.w - 1 - off < 0 ? 0 : (g.w - 1 - off) / a.stride_w + 1;
            ox1 = std::min(ox1, g.wo);
            if (ox0 >= ox1) continue;
            if (a.stride_w == 1) {
              simd::axpy(wv, xr + ox0 + off, yr + ox0, ox1 - ox0);
            } else {
              for (int64_t ox = ox0; ox < ox1; ++ox) yr[ox] += wv * xr[ox * a.stride_w + off];
            }
          }
        }
      }
    }
  });
}

// General case: per group, col[(ci, ky, kx), (oy, ox)] then y_g = W_g · col.
void conv2d_im2col(const float* x, const float* wt, const float* bias, float* y, const ConvGeometry& g) {
  const Conv2dArgs& a = g.a;
  const int64_t cin_g = g.cin / a.groups, cout_g = g.cout / a.groups;
  const int64_t kdim = cin_g * g.kh * g.kw, pixels = g.ho * g.wo;
  const bool pointwise = g.kh == 1 && g.kw == 1 && a.stride_h == 1 && a.stride_w == 1 && a.pad_h == 0 && a.pad_w == 0;
  // Every element is written below; a tensor buffer (pooled, not zero-filled) of up to tens of MB per frame.
  const Tensor col = Tensor::empty({pointwise ? 0 : kdim * pixels});
  for (int64_t grp = 0; grp < a.groups; ++grp) {
    const float* xg = x + grp * cin_g * g.h * g.w;
    const float* b_mat = xg;  // a 1×1 stride-1 convolution multiplies the image directly
    if (!pointwise) {
      parallel_for(kdim, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          const int64_t ci = r / (g.kh * g.kw), ky = (r / g.kw) % g.kh, kx = r % g.kw;
          const float* xc = xg + ci * g.h * g.w;
          float* dst = col.f32() + r * pixels;
          for (int64_t oy = 0; oy < g.ho; ++oy) {
            const int64_t iy = oy * a.stride_h - a.pad_h + ky * a.dilation_h;
            float* d = dst + oy * g.wo;
            if (iy < 0 || iy >= g.h) {
              std::fill(d, d + g.wo, 0.f);
              continue;
            }
            const float* xr = xc + iy * g.w;
            for (int64_t ox = 0; ox < g.wo; ++ox) {
              const int64_t ix = ox * a.stride_w - a.pad_w + kx * a.dilation_w;
              d[ox] = (ix >= 0 && ix < g.w) ? xr[ix] : 0.f;
            }
          }
        }
      }, 4);
      b_mat = col.f32();
    }
    gemm(wt + grp * cout_g * kdim, kdim, b_mat, pixels, y + grp * cout_g * pixels, pixels, cout_g, pixels, kdim,
         /*transpose_b=*/false, 1.f, 0.f);
  }
  if (bias) add_per_row(y, bias, g.cout, pixels);
}

}  // namespace

void conv2d(const float* x, const float* weight, const float* bias, float* y, const ConvGeometry& g) {
  if (g.a.groups == g.cin && g.cout == g.cin) {
    conv2d_depthwise(x, weight, bias, y, g);
  } else {
    conv2d_im2col(x, weight, bias, y, g);
  }
}

void conv_transpose_2x2(const float* x, int64_t cin, int64_t h, int64_t w, const float* weight, int64_t cout,
                        const float* bias, float* y) {
  const int64_t pixels = h * w;
  // taps[(co, a, b), pixel] = Σ_ci W[(co, a, b), ci] · x[ci, pixel] (the matrix holds the taps as rows).
  const int64_t taps_rows = cout * 4;
  const Tensor taps_t = cin > 0 ? Tensor::empty({taps_rows * pixels}) : Tensor::zeros({taps_rows * pixels});
  const float* taps = taps_t.f32();
  if (cin > 0 && pixels > 0)
    gemm(weight, cin, x, pixels, taps_t.f32(), pixels, taps_rows, pixels, cin, /*transpose_b=*/false, 1.f, 0.f);
  parallel_for(cout * h, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t co = r / h, i = r % h;
      const float bv = bias ? bias[co] : 0.f;
      for (int64_t a = 0; a < 2; ++a) {
        float* dst = y + (co * 2 * h + 2 * i + a) * 2 * w;
        const float* t0 = taps + ((co * 4 + a * 2 + 0) * pixels) + i * w;
        const float* t1 = taps + ((co * 4 + a * 2 + 1) * pixels) + i * w;
        for (int64_t j = 0; j < w; ++j) {
          dst[2 * j] = t0[j] + bv;
          dst[2 * j + 1] = t1[j] + bv;
        }
      }
    }
  }, 16);
}

void max_pool2d(const float* x, int64_t channels, int64_t h, int64_t w, int64_t kernel, int64_t stride, float* y) {
  const int64_t ho = (h - kernel) / stride + 1, wo = (w - kernel) / stride + 1;
  parallel_for(channels * ho, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t ch = r / ho, oy = r % ho;
      for (int64_t ox = 0; ox < wo; ++ox) {
        float m = -std::numeric_limits<float>::infinity();
        for (int64_t ky = 0; ky < kernel; ++ky) {
          const float* row = x + (ch * h + oy * stride + ky) * w + ox * stride;
          for (int64_t kx = 0; kx < kernel; ++kx) m = (row[kx] > m || row[kx] != row[kx]) ? row[kx] : m;  // NaN wins
        }
        y[r * wo + ox] = m;
      }
    }
  }, 16);
}

}  // namespace sa2va::ops::cpu
