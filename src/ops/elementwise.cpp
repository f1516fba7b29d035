// Element-wise fronts (activations, broadcasts, scaling, row copies): check sizes and buffers,
// pick the kernel for the calling thread's device (ops/cpu/, ops/cuda/).
#include <string>

#include "core/error.h"
#include "ops/cpu/kernels.h"
#include "ops/device_check.h"
#include "ops/ops.h"

namespace sa2va::ops {
namespace {

// False when there is nothing to do; throws on a negative count or a missing buffer. The messages
// are built only on failure: these fronts run for every op of every decoded token.
bool ready(int64_t n, bool buffers, const char* op) {
  if (n < 0) throw Error(std::string(op) + ": negative element count " + std::to_string(n));
  if (n == 0) return false;
  if (!buffers) throw Error(std::string(op) + ": null buffer");
  return true;
}

// The same for [rows, dim] operands.
bool ready_rows(int64_t rows, int64_t dim, bool buffers, const char* op) {
  if (rows < 0 || dim < 0)
    throw Error(std::string(op) + ": negative size (rows " + std::to_string(rows) + ", dim " + std::to_string(dim) +
                ")");
  if (rows == 0 || dim == 0) return false;
  if (!buffers) throw Error(std::string(op) + ": null buffer");
  return true;
}

}  // namespace

void gelu_erf(float* x, int64_t n) {
  if (ready(n, x != nullptr, "gelu_erf")) SA2VA_KERNEL(gelu_erf, x, n);
}

void gelu_tanh(float* x, int64_t n) {
  if (ready(n, x != nullptr, "gelu_tanh")) SA2VA_KERNEL(gelu_tanh, x, n);
}

void silu(float* x, int64_t n) {
  if (ready(n, x != nullptr, "silu")) SA2VA_KERNEL(silu, x, n);
}

void relu(float* x, int64_t n) {
  if (ready(n, x != nullptr, "relu")) SA2VA_KERNEL(relu, x, n);
}

void activate(Activation activation, float* x, int64_t n) {
  switch (activation) {
    case Activation::None: return;
    case Activation::Relu: return relu(x, n);
    case Activation::GeluErf: return gelu_erf(x, n);
  }
}

void sigmoid(float* x, int64_t n) {
  if (ready(n, x != nullptr, "sigmoid")) SA2VA_KERNEL(sigmoid, x, n);
}

void softmax_rows(float* x, int64_t rows, int64_t n) {
  if (ready_rows(rows, n, x != nullptr, "softmax_rows")) SA2VA_KERNEL(softmax_rows, x, rows, n);
}

void add(const float* a, const float* b, float* y, int64_t n) {
  if (ready(n, a && b && y, "add")) SA2VA_KERNEL(add, a, b, y, n);
}

void add_rows(float* x, const float* row, int64_t rows, int64_t dim) {
  if (ready_rows(rows, dim, x && row, "add_rows")) SA2VA_KERNEL(add_rows, x, row, rows, dim);
}

void mul_rows(float* x, const float* row, int64_t rows, int64_t dim) {
  if (ready_rows(rows, dim, x && row, "mul_rows")) SA2VA_KERNEL(mul_rows, x, row, rows, dim);
}

void add_scaled_rows(float* x, const float* y, const float* row, int64_t rows, int64_t dim) {
  if (ready_rows(rows, dim, x && y && row, "add_scaled_rows")) SA2VA_KERNEL(add_scaled_rows, x, y, row, rows, dim);
}

void add_per_row(float* x, const float* per_row, int64_t rows, int64_t dim) {
  if (ready_rows(rows, dim, x && per_row, "add_per_row")) SA2VA_KERNEL(add_per_row, x, per_row, rows, dim);
}

void scale(float* x, float s, int64_t n) {
  if (ready(n, x != nullptr, "scale")) SA2VA_KERNEL(scale, x, s, n);
}

void copy_rows(const float* src, int64_t src_stride, float* dst, int64_t dst_stride, int64_t rows, int64_t cols) {
  if (!ready_rows(rows, cols, src && dst, "copy_rows")) return;
  if (src_stride < cols || dst_stride < cols)
    throw Error("copy_rows: a row stride is smaller than the row (src_stride " + std::to_string(src_stride) +
                ", dst_stride " + std::to_string(dst_stride) + ", cols " + std::to_string(cols) + ")");
  SA2VA_KERNEL(copy_rows, src, src_stride, dst, dst_stride, rows, cols);
}

void silu_mul(float* gate, const float* up, int64_t n) {
  if (ready(n, gate && up, "silu_mul")) SA2VA_KERNEL(silu_mul, gate, up, n);
}

void scale_shift(float* x, float scale, float shift, int64_t n) {
  if (ready(n, x != nullptr, "scale_shift")) SA2VA_KERNEL(scale_shift, x, scale, shift, n);
}

void add_scaled(float* x, const float* y, float alpha, int64_t n) {
  if (ready(n, x && y, "add_scaled")) SA2VA_KERNEL(add_scaled, x, y, alpha, n);
}

void round_bf16(float* x, int64_t n) {
  if (ready(n, x != nullptr, "round_bf16")) SA2VA_KERNEL(round_bf16, x, n);
}

}  // namespace sa2va::ops
