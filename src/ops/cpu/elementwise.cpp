// CPU kernels for the element-wise activations and broadcasts; the transcendental maps are
// vectorised in cpu/simd.cpp.
#include <algorithm>

#include "core/dtype.h"
#include "core/threadpool.h"
#include "ops/cpu/kernels.h"
#include "ops/cpu/simd.h"

namespace sa2va::ops::cpu {
namespace {

constexpr int64_t kElementGrain = 1 << 14;  // below this a thread hand-off costs more than the work

template <typename F>
void split_elements(int64_t n, F&& f) {
  parallel_for(n, [&](int64_t begin, int64_t end) { f(begin, end); }, kElementGrain);
}

// Rows are split so that each chunk holds about kElementGrain elements.
int64_t row_grain(int64_t dim) { return std::max<int64_t>(1, kElementGrain / std::max<int64_t>(dim, 1)); }

}  // namespace

void gelu_erf(float* x, int64_t n) {
  split_elements(n, [&](int64_t b, int64_t e) { simd::gelu_erf_inplace(x + b, e - b); });
}

void gelu_tanh(float* x, int64_t n) {
  split_elements(n, [&](int64_t b, int64_t e) { simd::gelu_tanh_inplace(x + b, e - b); });
}

void silu(float* x, int64_t n) {
  split_elements(n, [&](int64_t b, int64_t e) { simd::silu_inplace(x + b, e - b); });
}

void sigmoid(float* x, int64_t n) {
  split_elements(n, [&](int64_t b, int64_t e) { simd::sigmoid_inplace(x + b, e - b); });
}

void relu(float* x, int64_t n) {
  split_elements(n, [&](int64_t b, int64_t e) { simd::relu_inplace(x + b, e - b); });
}

void softmax_rows(float* x, int64_t rows, int64_t n) {
  parallel_for(rows, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      simd::softmax_inplace(x + r * n, n, n);
    }
  }, row_grain(n));
}

void add(const float* a, const float* b, float* y, int64_t n) {
  split_elements(n, [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) y[i] = a[i] + b[i];
  });
}

void add_rows(float* x, const float* row, int64_t rows, int64_t dim) {
  parallel_for(rows, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      simd::axpy(1.f, row, x + r * dim, dim);  // vectorised (x and row might alias for the compiler)
    }
  }, row_grain(dim));
}

void add_scaled_rows(float* x, const float* y, const float* row, int64_t rows, int64_t dim) {
  parallel_for(rows, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      float* xr = x + r * dim;
      const float* yr = y + r * dim;
      for (int64_t i = 0; i < dim; ++i) xr[i] += yr[i] * row[i];
    }
  }, row_grain(dim));
}

void mul_rows(float* x, const float* row, int64_t rows, int64_t dim) {
  parallel_for(rows, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      float* xr = x + r * dim;
      for (int64_t i = 0; i < dim; ++i) xr[i] *= row[i];
    }
  }, row_grain(dim));
}

void add_per_row(float* x, const float* per_row, int64_t rows, int64_t dim) {
  parallel_for(rows, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      float* xr = x + r * dim;
      const float v = per_row[r];
      for (int64_t i = 0; i < dim; ++i) xr[i] += v;
    }
  }, row_grain(dim));
}

void scale(float* x, float s, int64_t n) {
  split_elements(n, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) x[i] *= s;
  });
}

void silu_mul(float* gate, const float* up, int64_t n) {
  split_elements(n, [&](int64_t b, int64_t e) {
    constexpr int64_t kPiece = 4096;  // 16 KiB: the product reads the activations back from L1
    for (int64_t p = b; p < e; p += kPiece) {
      const int64_t q = std::min(e, p + kPiece);
      simd::silu_mul_inplace(gate + p, up + p, q - p);
    }
  });
}

void copy_rows(const float* src, int64_t src_stride, float* dst, int64_t dst_stride, int64_t rows, int64_t cols) {
  parallel_for(rows, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      std::copy(src + r * src_stride, src + r * src_stride + cols, dst + r * dst_stride);
  }, row_grain(cols));
}

void scale_shift(float* x, float scale, float shift, int64_t n) {
  split_elements(n, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) x[i] = x[i] * scale + shift;
  });
}

void add_scaled(float* x, const float* y, float alpha, int64_t n) {
  split_elements(n, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) x[i] += alpha * y[i];
  });
}

void round_bf16(float* x, int64_t n) {
  split_elements(n, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) x[i] = round_to_bf16(x[i]);
  });
}

}  // namespace sa2va::ops::cpu
