// Element-wise fronts added with the device split (the older element-wise ops are in
// ops/elementwise.cpp): check sizes, pick the kernel (ops/cpu/pointwise.cpp).
#include <string>

#include "core/error.h"
#include "ops/cpu/kernels.h"
#include "ops/ops.h"

namespace sa2va::ops {
namespace {

bool ready(int64_t n, bool buffers, const char* op) {
  check(n >= 0, std::string(op) + ": negative element count " + std::to_string(n));
  if (n == 0) return false;
  check(buffers, std::string(op) + ": null buffer");
  return true;
}

}  // namespace

void scale_shift(float* x, float scale, float shift, int64_t n) {
  if (ready(n, x != nullptr, "scale_shift")) cpu::scale_shift(x, scale, shift, n);
}

void add_scaled(float* x, const float* y, float alpha, int64_t n) {
  if (ready(n, x && y, "add_scaled")) cpu::add_scaled(x, y, alpha, n);
}

void round_bf16(float* x, int64_t n) {
  if (ready(n, x != nullptr, "round_bf16")) cpu::round_bf16(x, n);
}

}  // namespace sa2va::ops
