// Shared helpers of the training tests: seeded random tensors, central finite differences against
// an analytic gradient, and the relative L2 error the training fixture's tolerances are stated in.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace sa2va::test {

inline Tensor random_normal(const Shape& shape, uint32_t seed, float stddev = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, stddev);
  Tensor t = Tensor::empty(shape);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = dist(rng);
  return t;
}

// Compares `grad` with the central difference of `loss` in every element of `param`, within
// tol·max(1, |numeric|).
inline void expect_gradient(Tensor& param, const Tensor& grad, const std::function<double()>& loss,
                            const std::string& what, float h = 1e-2f, double tol = 2e-3) {
  ASSERT_EQ(param.numel(), grad.numel()) << what;
  for (int64_t i = 0; i < param.numel(); ++i) {
    const float keep = param.f32()[i];
    param.f32()[i] = keep + h;
    const double plus = loss();
    param.f32()[i] = keep - h;
    const double minus = loss();
    param.f32()[i] = keep;
    const double numeric = (plus - minus) / (2 * h);
    EXPECT_NEAR(grad.f32()[i], numeric, tol * std::max(1.0, std::fabs(numeric))) << what << " element " << i;
  }
}

// ||a − e|| / ||e|| (||a − e|| when e is zero).
inline double rel_l2(const std::vector<float>& a, const std::vector<float>& e) {
  EXPECT_EQ(a.size(), e.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size() && i < e.size(); ++i) {
    num += (static_cast<double>(a[i]) - e[i]) * (static_cast<double>(a[i]) - e[i]);
    den += static_cast<double>(e[i]) * e[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}
inline double rel_l2(const Tensor& a, const Tensor& e) { return rel_l2(a.to_vector(), e.to_vector()); }

}  // namespace sa2va::test
