// 8-bit image fronts: validate the taps against the buffers, pick the kernel for the calling thread's
// device (the taps and the mean/stdev stay host tables on every device).
#include <string>

#include "core/error.h"
#include "ops/cpu/kernels.h"
#include "ops/device_check.h"
#include "ops/ops.h"

namespace sa2va::ops {
namespace {

// Every output reads a source range inside [lo, hi).
void check_taps(const FixedPointTaps& taps, int64_t lo, int64_t hi, const char* op) {
  const int64_t n = taps.size();
  check(taps.ksize >= 1 && taps.precision_bits >= 1 && taps.precision_bits <= 22 &&
            static_cast<int64_t>(taps.count.size()) == n && static_cast<int64_t>(taps.weights.size()) == n * taps.ksize,
        std::string(op) + ": inconsistent taps (" + std::to_string(n) + " outputs, ksize " +
            std::to_string(taps.ksize) + ", " + std::to_string(taps.weights.size()) + " weights)");
  for (int64_t i = 0; i < n; ++i)
    check(taps.count[i] >= 0 && taps.count[i] <= taps.ksize && taps.first[i] >= lo &&
              taps.first[i] + taps.count[i] <= hi,
          std::string(op) + ": output " + std::to_string(i) + " reads source [" + std::to_string(taps.first[i]) +
              ", " + std::to_string(taps.first[i] + taps.count[i]) + ") outside [" + std::to_string(lo) + ", " +
              std::to_string(hi) + ")");
}

}  // namespace

void resample_rgb8_horizontal(const uint8_t* src, int64_t in_w, int64_t rows, const FixedPointTaps& taps,
                              uint8_t* dst) {
  check(in_w >= 1 && rows >= 0, "resample_rgb8_horizontal: invalid source " + std::to_string(rows) + " rows of " +
                                    std::to_string(in_w) + " pixels");
  check_taps(taps, 0, in_w, "resample_rgb8_horizontal");
  if (rows == 0 || taps.size() == 0) return;
  check(src && dst, "resample_rgb8_horizontal: null buffer");
  SA2VA_KERNEL(resample_rgb8_horizontal, src, in_w, rows, taps, dst);
}

void resample_u8_vertical(const uint8_t* src, int64_t in_rows, int64_t row_len, int64_t row0,
                          const FixedPointTaps& taps, uint8_t* dst) {
  check(in_rows >= 1 && row_len >= 0 && row0 >= 0, "resample_u8_vertical: invalid source " +
                                                       std::to_string(in_rows) + " rows of " +
                                                       std::to_string(row_len) + " bytes from row " +
                                                       std::to_string(row0));
  check_taps(taps, row0, row0 + in_rows, "resample_u8_vertical");
  if (row_len == 0 || taps.size() == 0) return;
  check(src && dst, "resample_u8_vertical: null buffer");
  SA2VA_KERNEL(resample_u8_vertical, src, row_len, row0, taps, dst);
}

void normalize_rgb8_chw(const uint8_t* src, int64_t h, int64_t w, const float mean[3], const float stdev[3],
                        float* dst) {
  check(h >= 0 && w >= 0, "normalize_rgb8_chw: negative image size " + shape_str({h, w}));
  check(mean && stdev, "normalize_rgb8_chw: null mean or stdev");
  if (h * w == 0) return;
  check(src && dst, "normalize_rgb8_chw: null buffer");
  SA2VA_KERNEL(normalize_rgb8_chw, src, h, w, mean, stdev, dst);
}

}  // namespace sa2va::ops
