// CUDA kernels for 8-bit images: Pillow's fixed-point resampling passes (the taps are made on the
// host and copied; integer arithmetic, so the result is the CPU's to the bit) and ToTensor +
// Normalize through the same 3 × 256 float32 table the CPU builds.
#include "ops/cuda/common.cuh"
#include "ops/cuda/kernels.h"

namespace sa2va::ops::cuda {
namespace {

struct NormalizeTable {
  float v[3][256];
};

struct Taps {
  const int* first;
  const int* count;
  const int32_t* weights;
  int ksize, bits;
};

__device__ __forceinline__ uint8_t clip8(int32_t acc, int bits) {
  if (acc <= 0) return 0;
  if (acc >= (255 << bits)) return 255;
  return static_cast<uint8_t>(acc >> bits);
}

__global__ void horizontal_kernel(const uint8_t* in, int64_t in_w, int64_t rows, Taps t, int64_t out_w, uint8_t* out) {
  SA2VA_GRID_LOOP(i, rows * out_w) {
    const int64_t x = i % out_w, y = i / out_w;
    const int32_t* k = t.weights + x * t.ksize;
    const uint8_t* s = in + y * in_w * 3 + 3 * int64_t(t.first[x]);
    const int32_t bias = 1 << (t.bits - 1);
    int32_t r = bias, g = bias, b = bias;
    for (int j = 0; j < t.count[x]; ++j, s += 3) {
      r += s[0] * k[j];
      g += s[1] * k[j];
      b += s[2] * k[j];
    }
    uint8_t* d = out + (y * out_w + x) * 3;
    d[0] = clip8(r, t.bits), d[1] = clip8(g, t.bits), d[2] = clip8(b, t.bits);
  }
}

__global__ void vertical_kernel(const uint8_t* in, int64_t row_len, int64_t row0, Taps t, int64_t out_rows,
                                uint8_t* out) {
  SA2VA_GRID_LOOP(i, out_rows * row_len) {
    const int64_t col = i % row_len, y = i / row_len;
    const int32_t* k = t.weights + y * t.ksize;
    int32_t acc = 1 << (t.bits - 1);
    for (int j = 0; j < t.count[y]; ++j) acc += in[(t.first[y] - row0 + j) * row_len + col] * k[j];
    out[i] = clip8(acc, t.bits);
  }
}

__global__ void normalize_kernel(const uint8_t* src, int64_t plane, NormalizeTable table, float* out) {
  SA2VA_GRID_LOOP(p, plane) {
    out[p] = table.v[0][src[3 * p]];
    out[plane + p] = table.v[1][src[3 * p + 1]];
    out[2 * plane + p] = table.v[2][src[3 * p + 2]];
  }
}

// The taps in GPU memory for one launch; the tensors must outlive the queueing.
struct GpuTaps {
  Tensor first, count, weights;
  Taps view;
  explicit GpuTaps(const FixedPointTaps& taps)
      : first(to_gpu(taps.first, DType::I32)), count(to_gpu(taps.count, DType::I32)),
        weights(to_gpu(taps.weights, DType::I32)) {
    view = {static_cast<const int*>(first.device_data()), static_cast<const int*>(count.device_data()),
            static_cast<const int32_t*>(weights.device_data()), taps.ksize, taps.precision_bits};
  }
};

}  // namespace

void resample_rgb8_horizontal(const uint8_t* src, int64_t in_w, int64_t rows, const FixedPointTaps& taps,
                              uint8_t* dst) {
  const GpuTaps t(taps);
  horizontal_kernel<<<grid_for(rows * taps.size()), kThreads, 0, stream()>>>(src, in_w, rows, t.view, taps.size(), dst);
  sa2va::cuda::check_launch("resample_rgb8_horizontal");
}

void resample_u8_vertical(const uint8_t* src, int64_t row_len, int64_t row0, const FixedPointTaps& taps,
                          uint8_t* dst) {
  const GpuTaps t(taps);
  vertical_kernel<<<grid_for(taps.size() * row_len), kThreads, 0, stream()>>>(src, row_len, row0, t.view, taps.size(),
                                                                              dst);
  sa2va::cuda::check_launch("resample_u8_vertical");
}

void normalize_rgb8_chw(const uint8_t* src, int64_t h, int64_t w, const float mean[3], const float stdev[3],
                        float* dst) {
  NormalizeTable table;
  rgb8_normalize_table(mean, stdev, table.v);
  normalize_kernel<<<grid_for(h * w), kThreads, 0, stream()>>>(src, h * w, table, dst);
  sa2va::cuda::check_launch("normalize_rgb8_chw");
}

}  // namespace sa2va::ops::cuda
