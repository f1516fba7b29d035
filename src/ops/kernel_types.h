// Types shared by the op fronts and every device's kernels (ops/device_kernels.inc).
#pragma once
#include <cstdint>

#include "ops/ops.h"

namespace sa2va::ops {

// One conv2d call as the front resolved it: input [cin, h, w], weight [cout, cin/groups, kh, kw]
// (GEMM layout, ConvWeight), output [cout, ho, wo].
struct ConvGeometry {
  int64_t cin, h, w, cout, kh, kw, ho, wo;
  Conv2dArgs a;
};

// ToTensor + Normalize of one 8-bit value of channel c: (v/255 − mean[c]) / stdev[c] in float32. The
// result depends only on (v, c), so every device looks it up in this table.
inline void rgb8_normalize_table(const float mean[3], const float stdev[3], float table[3][256]) {
  for (int c = 0; c < 3; ++c)
    for (int v = 0; v < 256; ++v) table[c][v] = (static_cast<float>(v) / 255.f - mean[c]) / stdev[c];
}

}  // namespace sa2va::ops
