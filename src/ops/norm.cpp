// Normalisation fronts (LayerNorm, RMSNorm, SAM2's LayerNorm2d): check sizes and buffers, pick
// the kernel for the calling thread's device. Weights and biases are optional (null).
#include <string>

#include "core/error.h"
#include "ops/cpu/kernels.h"
#include "ops/device_check.h"
#include "ops/ops.h"

namespace sa2va::ops {
namespace {

// False when there is nothing to do; throws on negative sizes or missing buffers (messages built
// only on failure: the norms run several times per decoded token).
bool ready(int64_t rows, int64_t dim, bool buffers, const char* op, const char* row_name, const char* dim_name) {
  if (rows < 0 || dim < 0)
    throw Error(std::string(op) + ": negative size (" + row_name + " " + std::to_string(rows) + ", " + dim_name + " " +
                std::to_string(dim) + ")");
  if (rows == 0 || dim == 0) return false;
  if (!buffers) throw Error(std::string(op) + ": null buffer");
  return true;
}

}  // namespace

void layer_norm(const float* x, const float* w, const float* b, float* y, int64_t rows, int64_t dim, float eps) {
  if (ready(rows, dim, x && y, "layer_norm", "rows", "dim")) SA2VA_KERNEL(layer_norm, x, w, b, y, rows, dim, eps);
}

void rms_norm(const float* x, const float* w, float* y, int64_t rows, int64_t dim, float eps) {
  if (ready(rows, dim, x && y, "rms_norm", "rows", "dim")) SA2VA_KERNEL(rms_norm, x, w, y, rows, dim, eps);
}

void layer_norm_2d(const float* x, const float* w, const float* b, float* y, int64_t channels, int64_t pixels,
                   float eps) {
  if (ready(channels, pixels, x && y, "layer_norm_2d", "channels", "pixels"))
    SA2VA_KERNEL(layer_norm_2d, x, w, b, y, channels, pixels, eps);
}

}  // namespace sa2va::ops
