// The source taps of PyTorch's F.interpolate along one axis, computed once per call on the host and
// used by every device's resampling kernels, so that CPU and GPU read the same indices with the same
// float32 weights (index and weight formulas as PyTorch's CPU kernels).
#pragma once
#include <cstdint>
#include <vector>

namespace sa2va::ops {

// Output o reads index[o·taps + k] with weight weight[o·taps + k], k < taps.
struct AxisTaps {
  int taps = 0;
  std::vector<int64_t> index;
  std::vector<float> weight;
};

AxisTaps linear_taps(int64_t in, int64_t out, bool align_corners);  // 2 taps (bilinear)
AxisTaps cubic_taps(int64_t in, int64_t out);                       // 4 taps, A = −0.75, align_corners false
// Legacy 'nearest': identity, exact 2× by shift, otherwise floor(o · (in/out as float)).
std::vector<int64_t> nearest_index(int64_t in, int64_t out);

}  // namespace sa2va::ops
