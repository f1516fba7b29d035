// CPU kernels for the element-wise ops declared with the device split (the older ones are in
// ops/elementwise.cpp).
#include "core/dtype.h"
#include "core/threadpool.h"
#include "ops/cpu/kernels.h"

namespace sa2va::ops::cpu {
namespace {

constexpr int64_t kElementGrain = 1 << 14;  // below this a thread hand-off costs more than the work

template <typename F>
void split_elements(int64_t n, F&& f) {
  parallel_for(n, [&](int64_t begin, int64_t end) { f(begin, end); }, kElementGrain);
}

}  // namespace

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
