// Weight matrices prepared once, at load, in the format their kernels consume.
//
// A checkpoint stores Linear weights as [N, K] (PyTorch's out × in) in bf16. The load policy
// (device, compute precision, weight format: io/weights.h) decides what the kernels get:
//   F32   [N, K] floats                 — the f32 conformance mode
//   BF16  [N, K] bfloat16                — the default fast mode (f32 accumulation)
//   Q8_0  blocks of 32 values along K: one f16 scale d and 32 bytes of 8-bit codes q (1..255);
//         value = d·(q − 128)
//   Q4_0  blocks of 32 values along K: one f16 scale d and 16 bytes of 4-bit codes q; value = d·(q − 8);
//         byte j of a block holds element j in its low nibble and element j + 16 in its high one
// Both keep unsigned codes with an offset, the operand the integer dot-product instructions
// (u8 × s8) take directly; the offset is subtracted once per block through the activations' sum.
// A row whose K is not a multiple of 32 ends in a zero-padded block. Quantized values and scales
// are kept apart (values [N, blocks·32] or [N, blocks·16] U8, scales [N, blocks] F16), so that a
// quantized model folder stores them as two plain tensors and kernels stream each with wide loads.
// Q4_0 has a second, CPU-only arrangement of the same bytes, rows interleaved by eight
// (interleaved_rows(); ops::kernel_layout picks it at load where the AVX2 / AVX-512 decode kernels read it):
//   values U8 [ceil(N/8), blocks·144], no separate scales; per group of 8 rows and per block, the 8
//   rows' f16 scales (16 bytes), then 4 chunks of 32 bytes, chunk j holding bytes 4j..4j+3 of each
//   row's 16 packed bytes, row after row. Rows past N in the last group are zero (scale 0).
// A group is one contiguous stream, and one 32-byte load gives the kernel 4 bytes of 8 rows, so
// their block sums land in the lanes of one vector and are scaled once per 8 rows, not per row.
// BF16 has a second, CPU-only arrangement too, the panels the bf16 GEMM multiplies (bf16_panels();
// ops::many_rows_layout picks it at load for matrices applied to whole images, where that GEMM runs
// on AVX-512 BF16 or AVX2):
//   values BF16 [ceil(N/32), pairs·64], pairs = ceil(K/2) rounded up to a multiple of 16; panel p
//   holds rows 32p..32p+31 as words of two values, word (kp, lane) at kp·32 + lane holding
//   (W[32p+lane][2kp], W[32p+lane][2kp+1]) with the lower column in the low half; zeros past N and K.
// A product reads each panel where it lies, instead of gathering it from the rows at every call.
// Conv weights (ConvWeight) are kept as F32 matrices in GEMM layout.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "core/weight_arena.h"
#include "sa2va/sa2va.h"

namespace sa2va {

// WeightFormat (F32, BF16, Q8_0, Q4_0) is the public enum of sa2va.h.

constexpr int64_t kQuantBlock = 32;  // values per scale in Q8_0 and Q4_0

const char* weight_format_name(WeightFormat format);  // "f32", "bf16", "q8_0", "q4_0"
// Throws Error naming the text when it is not one of the names above.
WeightFormat parse_weight_format(const std::string& text);
bool is_quantized(WeightFormat format);

class WeightMatrix {
 public:
  WeightMatrix() = default;

  // Converts w [N, K] (F32, BF16 or F16) to `format`. Unquantized formats that already match
  // are used in place (no copy: a checkpoint's memory map stays the storage). Undefined in,
  // undefined out (declaring mode).
  static WeightMatrix prepare(const Tensor& w, WeightFormat format);
  // Wraps parts already in `format` (a quantized model folder's values and scales, used in place):
  // F32 / BF16 values [rows, cols] and no scales; Q8_0 / Q4_0 U8 values [rows, blocks·32 or
  // blocks·16] and F16 scales [rows, blocks]. Throws Error naming the mismatch.
  static WeightMatrix from_parts(WeightFormat format, int64_t rows, int64_t cols, const Tensor& values,
                                 const Tensor& scales = Tensor());
  // Bytes of one row's packed values in a quantized format.
  static int64_t quantized_row_bytes(WeightFormat format, int64_t cols);

  // How the values are arranged (layouts above). An arrangement other than Rows is for the CPU
  // kernels: to() a GPU and stack_rows refuse it.
  enum class Arrangement { Rows, InterleavedRows, Bf16Panels };

  // Q4_0 rows interleaved by eight (layout above), from the plain layout in host memory.
  static constexpr int64_t kInterleavedRows = 8;
  static constexpr int64_t kInterleavedBlockBytes = kInterleavedRows * (2 + kQuantBlock / 2);
  // `consumed(first_row, rows)` is called after each slice of rows has been copied, in order, so that
  // a loader can drop the pages of the stored rows as it goes (no second copy of a large matrix).
  // The copy goes into `arena` when one is given (else the block pool).
  WeightMatrix interleaved_rows(const std::function<void(int64_t first_row, int64_t rows)>& consumed = {},
                                WeightArena* arena = nullptr) const;
  // The same matrix (not interleaved, in host memory) copied into `arena`, slice by slice with
  // `consumed` as above.
  WeightMatrix copied_into(WeightArena& arena,
                           const std::function<void(int64_t first_row, int64_t rows)>& consumed = {}) const;
  // BF16 panels (layout above) from the plain layout in host memory, in `arena` when one is given.
  static constexpr int64_t kPanelCols = 32, kPanelPairMultiple = 16;
  WeightMatrix bf16_panels(WeightArena* arena = nullptr) const;
  int64_t panel_pairs() const;  // pairs per panel (BF16 panels)

  Arrangement arrangement() const { return arrangement_; }
  bool interleaved() const { return arrangement_ == Arrangement::InterleavedRows; }
  bool in_panels() const { return arrangement_ == Arrangement::Bf16Panels; }

  bool defined() const { return values_.defined(); }
  WeightFormat format() const { return format_; }
  int64_t rows() const { return rows_; }  // N: outputs
  int64_t cols() const { return cols_; }  // K: inputs
  Device device() const { return values_.device(); }
  int64_t blocks_per_row() const { return (cols_ + kQuantBlock - 1) / kQuantBlock; }
  // F32 / BF16: the [N, K] matrix (in panels: the panels); quantized: the packed values (layout
  // above; interleaved: the groups).
  const Tensor& values() const { return values_; }
  // Quantized formats: F16 [N, blocks_per_row]; undefined otherwise and when interleaved.
  const Tensor& scales() const { return scales_; }
  size_t nbytes() const { return values_.nbytes() + (scales_.defined() ? scales_.nbytes() : 0); }
  // The same matrix in the memory of `device` (values and scales copied as they are).
  WeightMatrix to(Device device) const;

  // The packed values and the scales in host memory, for the CPU kernels: a matrix on the CPU, or on
  // a test's host-memory stand-in device; a matrix in GPU memory is an Error.
  template <typename T> const T* host_values() const { return static_cast<const T*>(host_memory(values_)); }
  const uint16_t* host_scales() const { return static_cast<const uint16_t*>(host_memory(scales_)); }

  // Rows [first, first + count) as f32 into out [count, K] (the exact values the kernels use).
  void dequantize_rows(int64_t first, int64_t count, float* out) const;
  // Rows [row0, row0 + rows) × columns [col0, col0 + cols) into out (row stride ldo); for the
  // quantized formats col0 is a multiple of kQuantBlock.
  void dequantize_block(int64_t row0, int64_t rows, int64_t col0, int64_t cols, float* out, int64_t ldo) const;
  Tensor dequantize() const;  // F32 [N, K]

 private:
  static const void* host_memory(const Tensor& t);

  WeightFormat format_ = WeightFormat::F32;
  Arrangement arrangement_ = Arrangement::Rows;
  int64_t rows_ = 0, cols_ = 0;
  Tensor values_, scales_;
};

// Rows [first, first + count) of a stored matrix [N, K].
struct RowBlock {
  Tensor matrix;
  int64_t first = 0, count = 0;
};
// A new [Σ count, K] matrix of the blocks' rows in order, in their (common) dtype: fuses
// projections (q, k, v) or reorders packed ones at load. Undefined when any block is undefined
// (declaring mode, or a weight already reported missing).
Tensor stack_rows(const std::vector<RowBlock>& blocks);

// The same for prepared matrices of one format and width (quantized rows move with their scales).
struct MatrixRowBlock {
  WeightMatrix matrix;
  int64_t first = 0, count = 0;
};
WeightMatrix stack_rows(const std::vector<MatrixRowBlock>& blocks);

// A convolution weight in GEMM layout, prepared at load:
//  conv2d           PyTorch [Cout, Cin/groups, kh, kw] -> F32 matrix [Cout, Cin/groups·kh·kw]
//  conv_transpose   PyTorch [Cin, Cout, 2, 2]          -> F32 matrix [Cout·4, Cin] (taps as rows)
struct ConvWeight {
  WeightMatrix matrix;
  int64_t out_channels = 0, in_channels = 0;  // in_channels: per group for conv2d
  int64_t kernel_h = 0, kernel_w = 0;

  bool defined() const { return matrix.defined(); }
  static ConvWeight prepare(const Tensor& w);
  static ConvWeight prepare_transposed_2x2(const Tensor& w);
};

}  // namespace sa2va
