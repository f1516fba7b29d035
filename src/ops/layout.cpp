// Layout and data movement fronts: check shapes, pick the kernel for the device the data lives on
// (ops/cpu/layout.cpp; ops/cuda/layout.cu for the transposes, gathers and Hiera's windows).
#include <initializer_list>
#include <string>

#include "core/error.h"
#include "ops/device_check.h"
#include "ops/ops.h"

namespace sa2va::ops {
namespace {

std::string dims(std::initializer_list<int64_t> values) { return shape_str(Shape(values)); }

void check_f32(const Tensor& x, int64_t rank, const char* op, const char* name, const char* layout) {
  check(x.defined() && x.dtype() == DType::F32 && x.dim() == rank,
        std::string(op) + ": " + name + " must be an F32 tensor " + layout + ", got " +
            (x.defined() ? std::string(dtype_name(x.dtype())) + " " + shape_str(x.shape()) : std::string("none")));
}

void check_buffers(bool ok, const char* op) { check(ok, std::string(op) + ": null buffer"); }


}  // namespace

void transpose_2d(const float* src, int64_t rows, int64_t cols, float* dst) {
  check(rows >= 0 && cols >= 0, "transpose_2d: negative size " + dims({rows, cols}));
  if (rows * cols == 0) return;
  check_buffers(src && dst, "transpose_2d");
  SA2VA_KERNEL(transpose, src, rows, cols, 1, dst);
}

Tensor transpose_2d(const Tensor& x) {
  check_f32(x, 2, "transpose_2d", "input", "[R, C]");
  const Tensor xc = kernel_input(x, "transpose_2d");
  Tensor y = Tensor::empty({x.size(1), x.size(0)}, DType::F32, x.device());
  if (y.numel() > 0) SA2VA_KERNEL(transpose, float_data(xc), x.size(0), x.size(1), 1, float_data(y));
  return y;
}

Tensor transpose_01(const Tensor& x) {
  check_f32(x, 3, "transpose_01", "input", "[A, B, D]");
  const Tensor xc = kernel_input(x, "transpose_01");
  Tensor y = Tensor::empty({x.size(1), x.size(0), x.size(2)}, DType::F32, x.device());
  if (y.numel() > 0) SA2VA_KERNEL(transpose, float_data(xc), x.size(0), x.size(1), x.size(2), float_data(y));
  return y;
}

Tensor gather_rows(const Tensor& src, const std::vector<int64_t>& rows) {
  check(src.defined() && src.dim() == 2 && (src.dtype() == DType::F32 || src.dtype() == DType::BF16),
        "gather_rows: source must be an F32 or BF16 tensor [R, D], got " +
            (src.defined() ? std::string(dtype_name(src.dtype())) + " " + shape_str(src.shape()) : std::string("none")));
  const int64_t R = src.size(0), D = src.size(1), n = static_cast<int64_t>(rows.size());
  for (int64_t i = 0; i < n; ++i)
    check(rows[i] >= 0 && rows[i] < R, "gather_rows: row index " + std::to_string(rows[i]) + " (entry " +
                                           std::to_string(i) + ") is outside [0, " + std::to_string(R) + ")");
  Tensor out = Tensor::empty({n, D}, DType::F32, src.device());
  if (out.numel() == 0) return out;
  const Tensor s = kernel_input(src, "gather_rows");
  const int64_t* row_data = rows.data();
  Tensor device_rows;
  if (!src.device().is_cpu()) {  // the indices go where the kernel reads them
    device_rows = Tensor::borrow(const_cast<int64_t*>(rows.data()), {n}, DType::I64, nullptr).to(src.device());
    row_data = static_cast<const int64_t*>(device_rows.device_data());
  }
  if (s.dtype() == DType::F32) SA2VA_KERNEL(gather_rows_f32, float_data(s), D, row_data, n, float_data(out));
  else SA2VA_KERNEL(gather_rows_bf16, static_cast<const uint16_t*>(s.device_data()), D, row_data, n, float_data(out));
  return out;
}

void gather_rows(const Tensor& src, const int64_t* rows, int64_t n, float* out) {
  check(src.defined() && src.dim() == 2 && (src.dtype() == DType::F32 || src.dtype() == DType::BF16),
        "gather_rows: source must be an F32 or BF16 tensor [R, D]");
  check(n >= 0, "gather_rows: negative row count");
  if (n == 0 || src.size(1) == 0) return;
  check_buffers(rows && out, "gather_rows");
  const Tensor s = kernel_input(src, "gather_rows");
  if (s.dtype() == DType::F32) SA2VA_KERNEL(gather_rows_f32, float_data(s), s.size(1), rows, n, out);
  else SA2VA_KERNEL(gather_rows_bf16, static_cast<const uint16_t*>(s.device_data()), s.size(1), rows, n, out);
}

void max_pool_tokens(const float* x, int64_t x_stride, int64_t maps, int64_t h, int64_t w, int64_t c, int64_t s,
                     float* y) {
  check(maps >= 0 && h >= 0 && w >= 0 && c >= 1 && s >= 1 && x_stride >= c,
        "max_pool_tokens: invalid sizes (maps " + std::to_string(maps) + ", map " + dims({h, w, c}) + ", stride " +
            std::to_string(s) + ", token stride " + std::to_string(x_stride) + ")");
  if (maps * (h / s) * (w / s) == 0) return;
  check_buffers(x && y, "max_pool_tokens");
  SA2VA_KERNEL(max_pool_tokens, x, x_stride, maps, h, w, c, s, y);
}

void window_partition(const float* x, int64_t h, int64_t w, int64_t c, int64_t win_h, int64_t win_w, float* y) {
  check(h >= 0 && w >= 0 && c >= 0 && win_h >= 1 && win_w >= 1,
        "window_partition: invalid map " + dims({h, w, c}) + " or window " + dims({win_h, win_w}));
  if (h * w * c == 0) return;
  check_buffers(x && y, "window_partition");
  SA2VA_KERNEL(window_partition, x, h, w, c, win_h, win_w, y);
}

void window_unpartition(const float* windows, int64_t win_h, int64_t win_w, int64_t h, int64_t w, int64_t c,
                        float* y, const float* residual) {
  check(h >= 0 && w >= 0 && c >= 0 && win_h >= 1 && win_w >= 1,
        "window_unpartition: invalid map " + dims({h, w, c}) + " or window " + dims({win_h, win_w}));
  if (h * w * c == 0) return;
  check_buffers(windows && y, "window_unpartition");
  SA2VA_KERNEL(window_unpartition, windows, win_h, win_w, h, w, c, y, residual);
}

void add_upsampled_nearest_2x(const Tensor& x, const Tensor& src) {
  check_f32(x, 3, "add_upsampled_nearest_2x", "x", "[H, W, C]");
  check_f32(src, 3, "add_upsampled_nearest_2x", "src", "[H/2, W/2, C]");
  check(x.is_contiguous() && src.is_contiguous(), "add_upsampled_nearest_2x: x and src must be contiguous");
  check_kernel_device("add_upsampled_nearest_2x", "x", x.device());
  check_same_device("add_upsampled_nearest_2x", "src", src.device(), "x", x.device());
  const int64_t H = x.size(0), W = x.size(1), C = x.size(2);
  check(src.size(0) * 2 == H && src.size(1) * 2 == W && src.size(2) == C,
        "add_upsampled_nearest_2x: src " + shape_str(src.shape()) + " is not half of x " + shape_str(x.shape()));
  if (x.numel() == 0) return;
  SA2VA_KERNEL(add_upsampled_nearest_2x, float_data(x), H, W, C, float_data(src));
}

void add_tiled(const Tensor& x, const Tensor& tile) {
  check_f32(x, 3, "add_tiled", "x", "[C, H, W]");
  check_f32(tile, 3, "add_tiled", "tile", "[C, th, tw]");
  check(x.is_contiguous(), "add_tiled: x must be contiguous");
  check_kernel_device("add_tiled", "x", x.device());
  check_same_device("add_tiled", "tile", tile.device(), "x", x.device());
  check(tile.size(0) == x.size(0) && tile.size(1) > 0 && tile.size(2) > 0,
        "add_tiled: tile " + shape_str(tile.shape()) + " does not fit x " + shape_str(x.shape()));
  if (x.numel() == 0) return;
  const Tensor t = kernel_input(tile, "add_tiled", "tile");
  SA2VA_KERNEL(add_tiled, float_data(x), x.size(0), x.size(1), x.size(2), float_data(t), tile.size(1), tile.size(2));
}

}  // namespace sa2va::ops
