// CUDA resampling, as the CPU kernels: the taps of each axis come from ops/resample_taps.h (computed
// on the host, copied to the GPU), and each output sums them in the CPU's order (width inside,
// height outside) with every product and sum rounded on its own (__fmul_rn / __fadd_rn: nvcc would
// otherwise fuse them into FMAs, which the CPU build does not), so both devices give the same float32
// results.
#include "ops/cuda/common.cuh"
#include "ops/cuda/kernels.h"
#include "ops/resample_taps.h"

namespace sa2va::ops::cuda {
namespace {

template <int Taps>
__global__ void separable_kernel(const float* x, int64_t c, int64_t h, int64_t w, const int64_t* iy, const float* wy,
                                 const int64_t* ix, const float* wx, int64_t out_h, int64_t out_w, float* y) {
  SA2VA_GRID_LOOP(o, c * out_h * out_w) {
    const int64_t ox = o % out_w, oy = (o / out_w) % out_h, ch = o / (out_w * out_h);
    const float* plane = x + ch * h * w;
    float acc = 0.f;
    for (int a = 0; a < Taps; ++a) {
      const float* row = plane + iy[oy * Taps + a] * w;
      float t = 0.f;
      for (int b = 0; b < Taps; ++b) {
        const float v = __fmul_rn(row[ix[ox * Taps + b]], wx[ox * Taps + b]);
        t = b == 0 ? v : __fadd_rn(t, v);
      }
      const float v = __fmul_rn(t, wy[oy * Taps + a]);
      acc = a == 0 ? v : __fadd_rn(acc, v);
    }
    y[o] = acc;
  }
}

__global__ void nearest_kernel(const float* x, int64_t c, int64_t h, int64_t w, const int64_t* iy, const int64_t* ix,
                               int64_t out_h, int64_t out_w, float* y) {
  SA2VA_GRID_LOOP(o, c * out_h * out_w) {
    const int64_t ox = o % out_w, oy = (o / out_w) % out_h, ch = o / (out_w * out_h);
    y[o] = x[(ch * h + iy[oy]) * w + ix[ox]];
  }
}

template <int Taps>
void separable(const float* x, int64_t c, int64_t h, int64_t w, const AxisTaps& ty, const AxisTaps& tx, int64_t out_h,
               int64_t out_w, float* y, const char* name) {
  const Tensor iy = to_gpu(ty.index, DType::I64), wy = to_gpu(ty.weight, DType::F32);
  const Tensor ix = to_gpu(tx.index, DType::I64), wx = to_gpu(tx.weight, DType::F32);
  separable_kernel<Taps><<<grid_for(c * out_h * out_w), kThreads, 0, stream()>>>(
      x, c, h, w, static_cast<const int64_t*>(iy.device_data()), static_cast<const float*>(wy.device_data()),
      static_cast<const int64_t*>(ix.device_data()), static_cast<const float*>(wx.device_data()), out_h, out_w, y);
  sa2va::cuda::check_launch(name);
}

}  // namespace

void interpolate_bilinear(const float* x, int64_t c, int64_t h, int64_t w, int64_t out_h, int64_t out_w,
                          bool align_corners, float* y) {
  separable<2>(x, c, h, w, linear_taps(h, out_h, align_corners), linear_taps(w, out_w, align_corners), out_h, out_w, y,
               "interpolate_bilinear");
}

void interpolate_bicubic(const float* x, int64_t c, int64_t h, int64_t w, int64_t out_h, int64_t out_w, float* y) {
  separable<4>(x, c, h, w, cubic_taps(h, out_h), cubic_taps(w, out_w), out_h, out_w, y, "interpolate_bicubic");
}

void interpolate_nearest(const float* x, int64_t c, int64_t h, int64_t w, int64_t out_h, int64_t out_w, float* y) {
  const Tensor iy = to_gpu(nearest_index(h, out_h), DType::I64), ix = to_gpu(nearest_index(w, out_w), DType::I64);
  nearest_kernel<<<grid_for(c * out_h * out_w), kThreads, 0, stream()>>>(
      x, c, h, w, static_cast<const int64_t*>(iy.device_data()), static_cast<const int64_t*>(ix.device_data()), out_h,
      out_w, y);
  sa2va::cuda::check_launch("interpolate_nearest");
}

}  // namespace sa2va::ops::cuda
