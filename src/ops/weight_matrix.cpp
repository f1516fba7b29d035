#include "ops/weight_matrix.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/allocator.h"
#include "core/error.h"
#include "core/threadpool.h"
#include "ops/cpu/simd.h"

namespace sa2va {
namespace {

Tensor as_f32(const Tensor& t) { return t.dtype() == DType::F32 ? t.contiguous() : t.to(DType::F32); }

// One block of up to 32 values -> scale and codes. Round half away from zero, as roundf does.
float quantize_block_q8(const float* x, int64_t n, uint8_t* q) {
  float amax = 0.f;
  for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[i]));
  const uint16_t d16 = f32_to_f16(amax / 127.f);
  const float d = f16_to_f32(d16);
  const float inv = d != 0.f ? 1.f / d : 0.f;
  for (int64_t i = 0; i < kQuantBlock; ++i)
    q[i] = static_cast<uint8_t>((i < n ? std::clamp(std::lround(x[i] * inv), -127L, 127L) : 0L) + 128);
  return f16_to_f32(d16);
}

// The value of largest magnitude maps to -8 (so its sign picks the scale's), the rest round.
float quantize_block_q4(const float* x, int64_t n, uint8_t* packed) {
  float amax = 0.f, extreme = 0.f;
  for (int64_t i = 0; i < n; ++i)
    if (std::fabs(x[i]) > amax) { amax = std::fabs(x[i]); extreme = x[i]; }
  const uint16_t d16 = f32_to_f16(extreme / -8.f);
  const float d = f16_to_f32(d16);
  const float inv = d != 0.f ? 1.f / d : 0.f;
  uint8_t codes[kQuantBlock];
  for (int64_t i = 0; i < kQuantBlock; ++i)
    codes[i] = i < n ? static_cast<uint8_t>(std::clamp(std::lround(x[i] * inv) + 8, 0L, 15L)) : 8;
  for (int64_t j = 0; j < kQuantBlock / 2; ++j)
    packed[j] = static_cast<uint8_t>(codes[j] | (codes[j + kQuantBlock / 2] << 4));
  return d;
}

}  // namespace

const char* weight_format_name(WeightFormat format) {
  switch (format) {
    case WeightFormat::F32: return "f32";
    case WeightFormat::BF16: return "bf16";
    case WeightFormat::Q8_0: return "q8_0";
    case WeightFormat::Q4_0: return "q4_0";
  }
  return "?";
}

WeightFormat parse_weight_format(const std::string& text) {
  for (WeightFormat f : {WeightFormat::F32, WeightFormat::BF16, WeightFormat::Q8_0, WeightFormat::Q4_0})
    if (text == weight_format_name(f)) return f;
  throw Error("unknown weight format '" + text + "' (expected f32, bf16, q8_0 or q4_0)");
}

bool is_quantized(WeightFormat format) { return format == WeightFormat::Q8_0 || format == WeightFormat::Q4_0; }

WeightMatrix WeightMatrix::prepare(const Tensor& w, WeightFormat format) {
  WeightMatrix m;
  if (!w.defined()) return m;
  check(w.dim() == 2, "weight matrix: expected a 2-D tensor [N, K], got " + shape_str(w.shape()));
  check(w.dtype() == DType::F32 || w.dtype() == DType::BF16 || w.dtype() == DType::F16,
        std::string("weight matrix: unsupported dtype ") + dtype_name(w.dtype()));
  m.format_ = format;
  m.rows_ = w.size(0);
  m.cols_ = w.size(1);
  switch (format) {
    case WeightFormat::F32: m.values_ = as_f32(w); return m;
    case WeightFormat::BF16:
      m.values_ = w.dtype() == DType::BF16 ? w.contiguous()
                  : w.dtype() == DType::F32 ? w.to(DType::BF16) : w.to(DType::F32).to(DType::BF16);
      return m;
    case WeightFormat::Q8_0:
    case WeightFormat::Q4_0: break;
  }
  const int64_t N = m.rows_, K = m.cols_, nb = m.blocks_per_row();
  const bool q8 = format == WeightFormat::Q8_0;
  const int64_t row_bytes = nb * (q8 ? kQuantBlock : kQuantBlock / 2);
  m.values_ = Tensor::empty({N, row_bytes}, DType::U8);
  m.scales_ = Tensor::empty({N, nb}, DType::F16);
  const Tensor src = w.contiguous();
  uint8_t* values = m.values_.data<uint8_t>();
  uint16_t* scales = m.scales_.data<uint16_t>();
  parallel_for(N, [&](int64_t r0, int64_t r1) {
    std::vector<float> row(static_cast<size_t>(nb * kQuantBlock), 0.f);
    for (int64_t r = r0; r < r1; ++r) {
      if (src.dtype() == DType::F32) std::memcpy(row.data(), src.data<float>() + r * K, static_cast<size_t>(K) * 4);
      else if (src.dtype() == DType::BF16) convert_bf16_to_f32(src.data<uint16_t>() + r * K, row.data(), static_cast<size_t>(K));
      else convert_f16_to_f32(src.data<uint16_t>() + r * K, row.data(), static_cast<size_t>(K));
      for (int64_t b = 0; b < nb; ++b) {
        const int64_t n = std::min(kQuantBlock, K - b * kQuantBlock);
        const float* x = row.data() + b * kQuantBlock;
        const float d = q8 ? quantize_block_q8(x, n, values + r * row_bytes + b * kQuantBlock)
                           : quantize_block_q4(x, n, values + r * row_bytes + b * kQuantBlock / 2);
        scales[r * nb + b] = f32_to_f16(d);
      }
    }
  }, 16);
  return m;
}

int64_t WeightMatrix::quantized_row_bytes(WeightFormat format, int64_t cols) {
  check(is_quantized(format), "quantized_row_bytes: not a quantized format");
  const int64_t blocks = (cols + kQuantBlock - 1) / kQuantBlock;
  return blocks * (format == WeightFormat::Q8_0 ? kQuantBlock : kQuantBlock / 2);
}

WeightMatrix WeightMatrix::from_parts(WeightFormat format, int64_t rows, int64_t cols, const Tensor& values,
                                      const Tensor& scales) {
  const std::string what = std::string(weight_format_name(format)) + " matrix [" + std::to_string(rows) + ", " +
                           std::to_string(cols) + "]";
  check(rows >= 0 && cols >= 0 && values.defined(), what + ": no values");
  WeightMatrix m;
  m.format_ = format;
  m.rows_ = rows;
  m.cols_ = cols;
  if (!is_quantized(format)) {
    const DType want = format == WeightFormat::F32 ? DType::F32 : DType::BF16;
    check(values.dtype() == want && values.shape() == Shape{rows, cols} && !scales.defined(),
          what + ": values must be " + dtype_name(want) + " " + shape_str({rows, cols}) + " without scales, got " +
              dtype_name(values.dtype()) + " " + shape_str(values.shape()));
    m.values_ = values.contiguous();
    return m;
  }
  const Shape value_shape{rows, quantized_row_bytes(format, cols)}, scale_shape{rows, m.blocks_per_row()};
  check(values.dtype() == DType::U8 && values.shape() == value_shape,
        what + ": values must be U8 " + shape_str(value_shape) + ", got " + dtype_name(values.dtype()) + " " +
            shape_str(values.shape()));
  check(scales.defined() && scales.dtype() == DType::F16 && scales.shape() == scale_shape,
        what + ": scales must be F16 " + shape_str(scale_shape) +
            (scales.defined() ? ", got " + std::string(dtype_name(scales.dtype())) + " " + shape_str(scales.shape())
                              : ", got none"));
  m.values_ = values.contiguous();
  m.scales_ = scales.contiguous();
  // A damaged folder's NaN or infinite scale would make every product with its row garbage.
  if (m.scales_.device().is_cpu()) {
    const uint16_t* s = m.scales_.data<uint16_t>();
    const int64_t n = m.scales_.numel();
    for (int64_t i = 0; i < n; ++i)
      check((s[i] & 0x7C00) != 0x7C00, what + ": scale " + std::to_string(i % scale_shape[1]) + " of row " +
                                            std::to_string(i / scale_shape[1]) + " is not finite (a damaged file?)");
  }
  return m;
}

const void* WeightMatrix::host_memory(const Tensor& t) {
  if (!t.defined()) return nullptr;
  check(t.device().is_cpu() || allocator_for(t.device()).host_addressable(),
        "weight matrix: host access to a matrix that lives on " + t.device().name());
  return t.device_data();
}

WeightMatrix WeightMatrix::interleaved_rows(const std::function<void(int64_t, int64_t)>& consumed,
                                           WeightArena* arena) const {
  check(defined() && format_ == WeightFormat::Q4_0 && arrangement_ == Arrangement::Rows,
        "weight matrix: only a plain Q4_0 matrix can be interleaved by rows");
  const int64_t nb = blocks_per_row(), groups = (rows_ + kInterleavedRows - 1) / kInterleavedRows;
  const int64_t row_bytes = values_.size(1), group_bytes = nb * kInterleavedBlockBytes;
  const uint8_t* values = host_values<uint8_t>();
  const uint16_t* scales = host_scales();
  WeightMatrix m;
  m.format_ = format_;
  m.arrangement_ = Arrangement::InterleavedRows;
  m.rows_ = rows_;
  m.cols_ = cols_;
  // Every byte is written below (the padding rows of a last partial group as zeros): no memset pass.
  m.values_ = arena ? arena->empty({groups, group_bytes}, DType::U8)
                    : Tensor::empty({groups, group_bytes}, DType::U8, values_.device());  // host memory (checked above)
  uint8_t* out = static_cast<uint8_t*>(m.values_.device_data());
  auto copy_groups = [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t rows = std::min(kInterleavedRows, rows_ - g * kInterleavedRows);
      if (rows < kInterleavedRows) std::memset(out + g * group_bytes, 0, static_cast<size_t>(group_bytes));
      for (int64_t b = 0; b < nb; ++b) {
        uint8_t* block = out + g * group_bytes + b * kInterleavedBlockBytes;
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t row = g * kInterleavedRows + r;
          std::memcpy(block + 2 * r, scales + row * nb + b, 2);
          for (int64_t j = 0; j < 4; ++j)
            std::memcpy(block + 2 * kInterleavedRows + 32 * j + 4 * r, values + row * row_bytes + b * 16 + 4 * j, 4);
        }
      }
    }
  };
  constexpr int64_t kSliceGroups = 512;  // ~4 MB of a 896-wide matrix
  for (int64_t s0 = 0; s0 < groups; s0 += kSliceGroups) {
    const int64_t s1 = std::min(groups, s0 + kSliceGroups);
    parallel_for(s1 - s0, [&](int64_t g0, int64_t g1) { copy_groups(s0 + g0, s0 + g1); }, 16);
    if (consumed) {
      const int64_t first = s0 * kInterleavedRows;
      consumed(first, std::min(rows_, s1 * kInterleavedRows) - first);
    }
  }
  return m;
}

int64_t WeightMatrix::panel_pairs() const {
  const int64_t pairs = (cols_ + 1) / 2;
  return (pairs + kPanelPairMultiple - 1) / kPanelPairMultiple * kPanelPairMultiple;
}

WeightMatrix WeightMatrix::bf16_panels(WeightArena* arena) const {
  check(defined() && format_ == WeightFormat::BF16 && arrangement_ == Arrangement::Rows,
        "weight matrix: only a plain BF16 matrix can be arranged in panels");
  const int64_t K = cols_, pairs = panel_pairs();
  const int64_t panels = (rows_ + kPanelCols - 1) / kPanelCols, panel_words = pairs * kPanelCols;
  const uint16_t* w = host_values<uint16_t>();
  WeightMatrix m = *this;
  m.arrangement_ = Arrangement::Bf16Panels;
  m.values_ = arena ? arena->empty({panels, 2 * panel_words}, DType::BF16)
                    : Tensor::empty({panels, 2 * panel_words}, DType::BF16, values_.device());  // host memory (checked above)
  auto* out = static_cast<uint32_t*>(m.values_.device_data());
  parallel_for(panels, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p)
      ops::simd::pack_bf16_weight_panel(w, K, rows_, p * kPanelCols, pairs, out + p * panel_words);
  }, 4);
  return m;
}

WeightMatrix WeightMatrix::copied_into(WeightArena& arena, const std::function<void(int64_t, int64_t)>& consumed) const {
  check(defined() && arrangement_ == Arrangement::Rows && values_.is_contiguous() && (!scales_.defined() || scales_.is_contiguous()),
        "weight matrix: only a plain matrix in contiguous host memory can be copied into the weight arena");
  const auto* values = static_cast<const uint8_t*>(host_memory(values_));
  const auto* scales = scales_.defined() ? static_cast<const uint8_t*>(host_memory(scales_)) : nullptr;
  WeightMatrix m = *this;
  m.values_ = arena.empty(values_.shape(), values_.dtype());
  if (scales) m.scales_ = arena.empty(scales_.shape(), scales_.dtype());
  const size_t value_row = values_.nbytes() / static_cast<size_t>(std::max<int64_t>(rows_, 1));
  const size_t scale_row = scales ? scales_.nbytes() / static_cast<size_t>(std::max<int64_t>(rows_, 1)) : 0;
  auto* value_out = static_cast<uint8_t*>(m.values_.raw());
  auto* scale_out = scales ? static_cast<uint8_t*>(m.scales_.raw()) : nullptr;
  const int64_t slice_rows = std::max<int64_t>(1, static_cast<int64_t>((size_t{4} << 20) / std::max<size_t>(value_row, 1)));
  for (int64_t r0 = 0; r0 < rows_; r0 += slice_rows) {
    const int64_t r1 = std::min(rows_, r0 + slice_rows);
    parallel_for(r1 - r0, [&](int64_t a, int64_t b) {
      const size_t first = static_cast<size_t>(r0 + a), count = static_cast<size_t>(b - a);
      std::memcpy(value_out + first * value_row, values + first * value_row, count * value_row);
      if (scales) std::memcpy(scale_out + first * scale_row, scales + first * scale_row, count * scale_row);
    }, 64);
    if (consumed) consumed(r0, r1 - r0);
  }
  return m;
}

WeightMatrix WeightMatrix::to(Device device) const {
  check(arrangement_ == Arrangement::Rows || device.is_cpu() || allocator_for(device).host_addressable(),
        "weight matrix: a matrix arranged for the CPU kernels cannot move to " + device.name() +
            " (move the plain matrix)");
  WeightMatrix m = *this;
  if (values_.defined()) m.values_ = values_.to(device);
  if (scales_.defined()) m.scales_ = scales_.to(device);
  return m;
}

void WeightMatrix::dequantize_rows(int64_t first, int64_t count, float* out) const {
  dequantize_block(first, count, 0, cols_, out, cols_);
}

void WeightMatrix::dequantize_block(int64_t row0, int64_t rows, int64_t col0, int64_t cols, float* out,
                                    int64_t ldo) const {
  check(defined() && row0 >= 0 && rows >= 0 && row0 + rows <= rows_ && col0 >= 0 && cols >= 0 && col0 + cols <= cols_,
        "weight matrix: block out of range");
  const int64_t K = cols_;
  if (format_ == WeightFormat::F32) {
    for (int64_t r = 0; r < rows; ++r)
      std::memcpy(out + r * ldo, host_values<float>() + (row0 + r) * K + col0, static_cast<size_t>(cols) * sizeof(float));
    return;
  }
  if (format_ == WeightFormat::BF16 && in_panels()) {
    const uint16_t* values = host_values<uint16_t>();
    const int64_t panel_values = 2 * panel_pairs() * kPanelCols;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        const int64_t n = row0 + r, k = col0 + c;
        const uint16_t v = values[n / kPanelCols * panel_values + (k / 2 * kPanelCols + n % kPanelCols) * 2 + k % 2];
        out[r * ldo + c] = bf16_to_f32(v);
      }
    return;
  }
  if (format_ == WeightFormat::BF16) {
    for (int64_t r = 0; r < rows; ++r)
      convert_bf16_to_f32(host_values<uint16_t>() + (row0 + r) * K + col0, out + r * ldo, static_cast<size_t>(cols));
    return;
  }
  check(col0 % kQuantBlock == 0, "weight matrix: a quantized block starts at a multiple of 32 columns");
  const int64_t nb = blocks_per_row();
  const bool q8 = format_ == WeightFormat::Q8_0;
  const int64_t row_bytes = values_.size(1);
  const uint8_t* values = host_values<uint8_t>();
  const uint16_t* scales = host_scales();
  for (int64_t r = row0; r < row0 + rows; ++r) {
    float* dst = out + (r - row0) * ldo - col0;
    for (int64_t b = col0 / kQuantBlock; b * kQuantBlock < col0 + cols; ++b) {
      const int64_t n = std::min(kQuantBlock, col0 + cols - b * kQuantBlock);
      float* o = dst + b * kQuantBlock;
      if (q8) {
        const float d = f16_to_f32(scales[r * nb + b]);
        const uint8_t* q = values + r * row_bytes + b * kQuantBlock;
        for (int64_t i = 0; i < n; ++i) o[i] = d * static_cast<float>(q[i] - 128);
        continue;
      }
      // Q4_0: the block's 16 packed bytes and scale, from either layout.
      const uint8_t* q;
      uint8_t gathered[kQuantBlock / 2];
      uint16_t d16;
      if (interleaved()) {
        // Bytes 4j..4j+3 of the row's block are its slot in chunk j.
        const int64_t lane = r % kInterleavedRows;
        const uint8_t* block = values + (r / kInterleavedRows) * row_bytes + b * kInterleavedBlockBytes;
        std::memcpy(&d16, block + 2 * lane, 2);
        for (int64_t j = 0; j < 4; ++j) std::memcpy(gathered + 4 * j, block + 2 * kInterleavedRows + 32 * j + 4 * lane, 4);
        q = gathered;
      } else {
        d16 = scales[r * nb + b];
        q = values + r * row_bytes + b * kQuantBlock / 2;
      }
      const float d = f16_to_f32(d16);
      const int64_t low = std::min<int64_t>(n, kQuantBlock / 2);
      for (int64_t i = 0; i < low; ++i) o[i] = d * static_cast<float>((q[i] & 0x0f) - 8);
      for (int64_t i = kQuantBlock / 2; i < n; ++i) o[i] = d * static_cast<float>((q[i - kQuantBlock / 2] >> 4) - 8);
    }
  }
}

Tensor WeightMatrix::dequantize() const {
  Tensor out = Tensor::empty({rows_, cols_});
  parallel_for(rows_, [&](int64_t r0, int64_t r1) { dequantize_rows(r0, r1 - r0, out.f32() + r0 * cols_); }, 16);
  return out;
}

Tensor stack_rows(const std::vector<RowBlock>& blocks) {
  check(!blocks.empty(), "stack_rows: no blocks");
  int64_t rows = 0;
  for (const RowBlock& b : blocks) {
    if (!b.matrix.defined()) return Tensor();
    check(b.matrix.dim() == 2 && b.matrix.dtype() == blocks[0].matrix.dtype() &&
              b.matrix.size(1) == blocks[0].matrix.size(1) && b.first >= 0 && b.count >= 0 &&
              b.first + b.count <= b.matrix.size(0),
          "stack_rows: blocks of different widths or dtypes, or rows out of range");
    rows += b.count;
  }
  const int64_t K = blocks[0].matrix.size(1);
  const Device device = blocks[0].matrix.device();
  Tensor out = Tensor::empty({rows, K}, blocks[0].matrix.dtype(), device);
  int64_t row = 0;
  for (const RowBlock& b : blocks) {
    check(b.matrix.device() == device, "stack_rows: blocks on different devices");
    if (b.count > 0) out.slice(0, row, row + b.count).copy_from(b.matrix.contiguous().slice(0, b.first, b.first + b.count));
    row += b.count;
  }
  return out;
}

WeightMatrix stack_rows(const std::vector<MatrixRowBlock>& blocks) {
  check(!blocks.empty(), "stack_rows: no blocks");
  std::vector<RowBlock> values, scales;
  int64_t rows = 0;
  for (const MatrixRowBlock& b : blocks) {
    if (!b.matrix.defined()) return WeightMatrix();
    check(b.matrix.arrangement() == WeightMatrix::Arrangement::Rows,
          "stack_rows: a matrix arranged for the CPU kernels (stack the plain matrices)");
    check(b.matrix.format() == blocks[0].matrix.format() && b.matrix.cols() == blocks[0].matrix.cols(),
          "stack_rows: matrices of different formats or widths");
    values.push_back({b.matrix.values(), b.first, b.count});
    if (b.matrix.scales().defined()) scales.push_back({b.matrix.scales(), b.first, b.count});
    rows += b.count;
  }
  const WeightMatrix& first = blocks[0].matrix;
  return WeightMatrix::from_parts(first.format(), rows, first.cols(), stack_rows(values),
                                  scales.empty() ? Tensor() : stack_rows(scales));
}

ConvWeight ConvWeight::prepare(const Tensor& w) {
  ConvWeight c;
  if (!w.defined()) return c;
  check(w.dim() == 4, "conv weight: expected [Cout, Cin/groups, kh, kw], got " + shape_str(w.shape()));
  c.out_channels = w.size(0);
  c.in_channels = w.size(1);
  c.kernel_h = w.size(2);
  c.kernel_w = w.size(3);
  // PyTorch's layout already is the GEMM one: row co holds (ci, ky, kx) in order.
  c.matrix = WeightMatrix::prepare(w.contiguous().view({c.out_channels, c.in_channels * c.kernel_h * c.kernel_w}),
                                   WeightFormat::F32);
  return c;
}

ConvWeight ConvWeight::prepare_transposed_2x2(const Tensor& w) {
  ConvWeight c;
  if (!w.defined()) return c;
  check(w.dim() == 4 && w.size(2) == 2 && w.size(3) == 2,
        "transposed conv weight: expected [Cin, Cout, 2, 2], got " + shape_str(w.shape()));
  c.in_channels = w.size(0);
  c.out_channels = w.size(1);
  c.kernel_h = c.kernel_w = 2;
  // Row (co, a, b) of the matrix holds the weights of that output tap over all input channels.
  const Tensor taps = as_f32(w).view({c.in_channels, c.out_channels * 4}).transpose(0, 1).contiguous();
  c.matrix = WeightMatrix::prepare(taps, WeightFormat::F32);
  return c;
}

}  // namespace sa2va
