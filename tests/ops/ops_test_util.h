// Helpers shared by the operator tests: random data, a max-error check, and a fixture that runs
// each test with 1 and 2 threads.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "core/tensor.h"
#include "core/threadpool.h"
#include "ops/cpu/simd.h"

namespace sa2va::ops_test {

inline std::vector<float> random_vector(int64_t n, uint32_t seed, float lo = -1.f, float hi = 1.f) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = dist(gen);
  return v;
}

inline Tensor random_tensor(const Shape& shape, uint32_t seed, float lo = -1.f, float hi = 1.f) {
  return Tensor::from_vector(random_vector(shape_numel(shape), seed, lo, hi), shape);
}

// Largest |a - b| over two equally sized arrays.
inline double max_abs_diff(const float* a, const std::vector<double>& b) {
  double m = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    const double d = std::fabs(static_cast<double>(a[i]) - b[i]);
    if (!(d <= m)) m = d;  // NaN propagates as failure
  }
  return m;
}
inline double max_abs_diff(const std::vector<float>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  return max_abs_diff(a.data(), b);
}

// The instruction sets the tests cap the CPU kernels at in turn: scalar, AVX2, AVX-512. With the
// kernels emulated (sa2va_wide_x86_tests) AVX-512 alone: that build exists for that level, and the
// others run natively in sa2va_tests (the same test objects, linked to the library's own kernels).
inline std::vector<ops::simd::Isa> isa_levels() {
  if (ops::simd::wide_x86_emulated()) return {ops::simd::Isa::Avx512};
  return {ops::simd::Isa::Scalar, ops::simd::Isa::Avx2, ops::simd::Isa::Avx512};
}

// Runs body(level) with the CPU kernels capped at each of isa_levels() this CPU has, each under a
// trace naming it, and restores the previous cap afterwards.
template <typename Body>
void for_each_isa(Body&& body) {
  const ops::simd::Isa saved = ops::simd::set_max_isa(ops::simd::Isa::Avx512);
  const ops::simd::Isa best = ops::simd::isa();
  for (ops::simd::Isa level : isa_levels()) {
    if (static_cast<int>(level) > static_cast<int>(best)) continue;
    ops::simd::set_max_isa(level);
    SCOPED_TRACE(ops::simd::isa_name(level));
    body(level);
  }
  ops::simd::set_max_isa(saved);
}

// Parameter = number of threads; restores the previous setting afterwards.
class ThreadedTest : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    saved_threads_ = num_threads();
    if (GetParam() != saved_threads_) set_num_threads(GetParam());
  }
  void TearDown() override {
    if (num_threads() != saved_threads_) set_num_threads(saved_threads_);
  }

 private:
  int saved_threads_ = 1;
};

}  // namespace sa2va::ops_test
