// CUDA kernels for 2-D convolution, 2×2 transposed convolution and max pooling on one channel-first
// image, as the CPU kernels: depthwise convolutions directly (one thread per output), the rest as
// im2col + an f32 product per group; the transposed convolution as one product into per-tap planes,
// then a scatter with the bias.
#include "ops/cuda/common.cuh"
#include "ops/cuda/kernels.h"

namespace sa2va::ops::cuda {
namespace {

__global__ void depthwise_kernel(const float* x, const float* wt, const float* bias, float* y, ConvGeometry g) {
  const Conv2dArgs& a = g.a;
  SA2VA_GRID_LOOP(o, g.cout * g.ho * g.wo) {
    const int64_t ox = o % g.wo, oy = (o / g.wo) % g.ho, c = o / (g.wo * g.ho);
    float acc = bias ? bias[c] : 0.f;
    for (int64_t ky = 0; ky < g.kh; ++ky) {
      const int64_t iy = oy * a.stride_h - a.pad_h + ky * a.dilation_h;
      if (iy < 0 || iy >= g.h) continue;
      for (int64_t kx = 0; kx < g.kw; ++kx) {
        const int64_t ix = ox * a.stride_w - a.pad_w + kx * a.dilation_w;
        if (ix >= 0 && ix < g.w) acc += wt[(c * g.kh + ky) * g.kw + kx] * x[(c * g.h + iy) * g.w + ix];
      }
    }
    y[o] = acc;
  }
}

// col[(ci, ky, kx), (oy, ox)] for the input channels of one group.
__global__ void im2col_kernel(const float* xg, float* col, ConvGeometry g, int64_t cin_g) {
  const Conv2dArgs& a = g.a;
  const int64_t pixels = g.ho * g.wo;
  SA2VA_GRID_LOOP(i, cin_g * g.kh * g.kw * pixels) {
    const int64_t p = i % pixels, r = i / pixels;
    const int64_t ci = r / (g.kh * g.kw), ky = (r / g.kw) % g.kh, kx = r % g.kw;
    const int64_t oy = p / g.wo, ox = p % g.wo;
    const int64_t iy = oy * a.stride_h - a.pad_h + ky * a.dilation_h;
    const int64_t ix = ox * a.stride_w - a.pad_w + kx * a.dilation_w;
    col[i] = (iy >= 0 && iy < g.h && ix >= 0 && ix < g.w) ? xg[(ci * g.h + iy) * g.w + ix] : 0.f;
  }
}

__global__ void scatter_taps_kernel(const float* taps, int64_t cout, int64_t h, int64_t w, const float* bias,
                                    float* y) {
  const int64_t pixels = h * w;
  SA2VA_GRID_LOOP(o, cout * 4 * pixels) {  // o indexes y [cout, 2h, 2w]
    const int64_t x2 = o % (2 * w), y2 = (o / (2 * w)) % (2 * h), co = o / (4 * pixels);
    const int64_t tap = (y2 % 2) * 2 + x2 % 2;
    y[o] = taps[(co * 4 + tap) * pixels + (y2 / 2) * w + x2 / 2] + (bias ? bias[co] : 0.f);
  }
}

__global__ void max_pool_kernel(const float* x, int64_t channels, int64_t h, int64_t w, int64_t kernel,
                                int64_t stride, int64_t ho, int64_t wo, float* y) {
  SA2VA_GRID_LOOP(o, channels * ho * wo) {
    const int64_t ox = o % wo, oy = (o / wo) % ho, ch = o / (wo * ho);
    float m = -INFINITY;
    for (int64_t ky = 0; ky < kernel; ++ky) {
      const float* row = x + (ch * h + oy * stride + ky) * w + ox * stride;
      for (int64_t kx = 0; kx < kernel; ++kx) m = (row[kx] > m || row[kx] != row[kx]) ? row[kx] : m;  // NaN wins
    }
    y[o] = m;
  }
}

}  // namespace

void conv2d(const float* x, const float* weight, const float* bias, float* y, const ConvGeometry& g) {
  const Conv2dArgs& a = g.a;
  if (a.groups == g.cin && g.cout == g.cin) {
    depthwise_kernel<<<grid_for(g.cout * g.ho * g.wo), kThreads, 0, stream()>>>(x, weight, bias, y, g);
    sa2va::cuda::check_launch("conv2d (depthwise)");
    return;
  }
  const int64_t cin_g = g.cin / a.groups, cout_g = g.cout / a.groups;
  const int64_t kdim = cin_g * g.kh * g.kw, pixels = g.ho * g.wo;
  const bool pointwise = g.kh == 1 && g.kw == 1 && a.stride_h == 1 && a.stride_w == 1 && a.pad_h == 0 && a.pad_w == 0;
  const Tensor col = Tensor::empty({pointwise ? 0 : kdim * pixels}, DType::F32, current_device());
  for (int64_t grp = 0; grp < a.groups; ++grp) {
    const float* xg = x + grp * cin_g * g.h * g.w;
    const float* b_mat = xg;  // a 1×1 stride-1 convolution multiplies the image directly
    if (!pointwise) {
      auto* c = static_cast<float*>(col.device_data());
      im2col_kernel<<<grid_for(kdim * pixels), kThreads, 0, stream()>>>(xg, c, g, cin_g);
      sa2va::cuda::check_launch("conv2d (im2col)");
      b_mat = c;
    }
    cuda::gemm(weight + grp * cout_g * kdim, kdim, b_mat, pixels, y + grp * cout_g * pixels, pixels, cout_g, pixels,
               kdim, /*transpose_b=*/false, 1.f, 0.f);
  }
  if (bias) add_per_row(y, bias, g.cout, pixels);
}

void conv_transpose_2x2(const float* x, int64_t cin, int64_t h, int64_t w, const float* weight, int64_t cout,
                        const float* bias, float* y) {
  const int64_t pixels = h * w;
  if (cout * pixels == 0) return;
  const Tensor taps = Tensor::empty({cout * 4 * pixels}, DType::F32, current_device());
  auto* t = static_cast<float*>(taps.device_data());
  cuda::gemm(weight, cin, x, pixels, t, pixels, cout * 4, pixels, cin, /*transpose_b=*/false, 1.f, 0.f);
  scatter_taps_kernel<<<grid_for(cout * 4 * pixels), kThreads, 0, stream()>>>(t, cout, h, w, bias, y);
  sa2va::cuda::check_launch("conv_transpose_2x2");
}

void max_pool2d(const float* x, int64_t channels, int64_t h, int64_t w, int64_t kernel, int64_t stride, float* y) {
  const int64_t ho = (h - kernel) / stride + 1, wo = (w - kernel) / stride + 1;
  if (channels * ho * wo <= 0) return;
  max_pool_kernel<<<grid_for(channels * ho * wo), kThreads, 0, stream()>>>(x, channels, h, w, kernel, stride, ho, wo,
                                                                           y);
  sa2va::cuda::check_launch("max_pool2d");
}

}  // namespace sa2va::ops::cuda
