#include "models/preprocess.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "core/dtype.h"
#include "core/error.h"
#include "ops/ops.h"

namespace sa2va::preprocess {
namespace {

// ---- PIL bicubic resample (docs/preprocess.md §1) -------------------------------------------

constexpr int kPrecisionBits = 22;  // Pillow's 8-bit fixed point

// Keys cubic, a = -0.5, support 2 (Pillow's bicubic_filter).
double bicubic_kernel(double x) {
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
  return 0.0;
}

// Fixed-point taps for one axis: output index i reads source [first[i], first[i] + count[i]).
using AxisTaps = ops::FixedPointTaps;

AxisTaps compute_taps(int in_size, int out_size) {
  constexpr double kSupport = 2.0;
  const double scale = static_cast<double>(in_size) / out_size;
  const double filter_scale = std::max(scale, 1.0);  // > 1 when shrinking: the kernel widens (antialias)
  const double support = kSupport * filter_scale;
  AxisTaps axis;
  axis.precision_bits = kPrecisionBits;
  axis.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  axis.first.resize(out_size);
  axis.count.resize(out_size);
  axis.weights.assign(static_cast<size_t>(out_size) * axis.ksize, 0);
  std::vector<double> w(axis.ksize);
  for (int i = 0; i < out_size; ++i) {
    const double center = (i + 0.5) * scale;
    const double inv_scale = 1.0 / filter_scale;
    const int lo = std::max(static_cast<int>(center - support + 0.5), 0);  // C truncation, as Pillow
    const int hi = std::min(static_cast<int>(center + support + 0.5), in_size);
    const int n = hi - lo;
    double sum = 0.0;
    for (int x = 0; x < n; ++x) {
      w[x] = bicubic_kernel((x + lo - center + 0.5) * inv_scale);
      sum += w[x];
    }
    int32_t* taps = axis.weights.data() + static_cast<size_t>(i) * axis.ksize;
    for (int x = 0; x < n; ++x) {
      const double normalised = sum != 0.0 ? w[x] / sum : w[x];
      const double fixed = normalised * (1 << kPrecisionBits);
      taps[x] = static_cast<int32_t>(normalised < 0 ? fixed - 0.5 : fixed + 0.5);
    }
    axis.first[i] = lo;
    axis.count[i] = n;
  }
  return axis;
}

// Rows [row0, row0 + out.height) of `in`, resampled along x to out.width.
void resample_horizontal(const Image& in, int row0, const AxisTaps& axis, Image& out) {
  check(axis.size() == out.width && row0 + out.height <= in.height, "resize: horizontal pass out of range");
  const DeviceScope on_host(Device::cpu());  // Images are host memory, whatever device the request runs on
  ops::resample_rgb8_horizontal(in.row(row0), in.width, out.height, axis, out.row(0));
}

// Resampled along y; source row of output row y starts at axis.first[y] - row0.
void resample_vertical(const Image& in, int row0, const AxisTaps& axis, Image& out) {
  check(axis.size() == out.height && in.width == out.width, "resize: vertical pass out of range");
  const DeviceScope on_host(Device::cpu());
  ops::resample_u8_vertical(in.row(0), in.height, static_cast<int64_t>(out.width) * 3, row0, axis, out.row(0));
}

// ---- dynamic tiling (docs/preprocess.md §2.1) -----------------------------------------------------

struct Ratio {
  int cols, rows;
};

// Candidate grids in the order upstream iterates them: a CPython set of (i, j) sorted by i*j (a stable
// sort, so equal products keep the set's order, which depends on how many elements the set holds).
// Orders recorded from CPython >= 3.8 for min_num = 1: max_num 8..12 share the order of 12 (filtered),
// as do 1..3; max_num 4..7 differ.
constexpr Ratio kOrderMax12[] = {{1, 1}, {1, 2}, {2, 1}, {3, 1}, {1, 3}, {2, 2}, {4, 1}, {1, 4}, {5, 1},
                                 {1, 5}, {1, 6}, {6, 1}, {3, 2}, {2, 3}, {7, 1}, {1, 7}, {4, 2}, {2, 4},
                                 {1, 8}, {8, 1}, {1, 9}, {3, 3}, {9, 1}, {2, 5}, {5, 2}, {10, 1}, {1, 10},
                                 {11, 1}, {1, 11}, {12, 1}, {3, 4}, {4, 3}, {1, 12}, {6, 2}, {2, 6}};
constexpr Ratio kOrderMax7[] = {{1, 1}, {1, 2}, {2, 1}, {3, 1}, {1, 3}, {4, 1}, {1, 4}, {2, 2},
                                {1, 5}, {5, 1}, {6, 1}, {2, 3}, {1, 6}, {3, 2}, {7, 1}, {1, 7}};
// max_num 6 is kOrderMax7 without the product-7 entries; 4 and 5 are its prefixes as well.

std::vector<Ratio> candidate_grids(int min_tiles, int max_tiles) {
  std::vector<Ratio> order;
  if (max_tiles <= 12) {
    const bool small = max_tiles >= 4 && max_tiles <= 7;
    const Ratio* begin = small ? std::begin(kOrderMax7) : std::begin(kOrderMax12);
    const Ratio* end = small ? std::end(kOrderMax7) : std::end(kOrderMax12);
    for (const Ratio* r = begin; r != end; ++r) {
      const int n = r->cols * r->rows;
      if (n >= min_tiles && n <= max_tiles) order.push_back(*r);
    }
    return order;
  }
  // Beyond what upstream uses: by product, then columns ascending (ties between equal products with equal
  // aspect distance may then resolve differently from CPython's set order).
  for (int n = min_tiles; n <= max_tiles; ++n) {
    for (int cols = 1; cols <= n; ++cols) {
      if (n % cols == 0) order.push_back({cols, n / cols});
    }
  }
  return order;
}

}  // namespace

Image resize_bicubic(const Image& image, int out_w, int out_h) {
  check(image.width > 0 && image.height > 0, "resize: empty image");
  check(out_w > 0 && out_h > 0, "resize: invalid output size " + std::to_string(out_w) + "x" + std::to_string(out_h));
  if (out_w == image.width && out_h == image.height) return image;
  const bool horizontal = out_w != image.width;
  const bool vertical = out_h != image.height;
  const AxisTaps taps_y = compute_taps(image.height, out_h);
  if (!horizontal) {
    Image out(out_w, out_h);
    resample_vertical(image, 0, taps_y, out);
    return out;
  }
  const AxisTaps taps_x = compute_taps(image.width, out_w);
  // The horizontal pass only covers the source rows the vertical pass will read (as Pillow does).
  const int row_first = vertical ? taps_y.first.front() : 0;
  const int row_last = vertical ? taps_y.first.back() + taps_y.count.back() : image.height;
  Image rows(out_w, row_last - row_first);
  resample_horizontal(image, row_first, taps_x, rows);
  if (!vertical) return rows;
  Image out(out_w, out_h);
  resample_vertical(rows, row_first, taps_y, out);
  return out;
}

Image crop(const Image& image, int x0, int y0, int width, int height) {
  check(x0 >= 0 && y0 >= 0 && width > 0 && height > 0 && x0 + width <= image.width && y0 + height <= image.height,
        "crop: box outside the image");
  Image out(width, height);
  for (int y = 0; y < height; ++y) {
    std::memcpy(out.row(y), image.row(y0 + y) + 3 * x0, static_cast<size_t>(width) * 3);
  }
  return out;
}

TileGrid choose_tile_grid(int width, int height, int min_tiles, int max_tiles, int tile) {
  check(width > 0 && height > 0, "tiling: empty image");
  check(min_tiles >= 1 && max_tiles >= min_tiles, "tiling: invalid tile count range");
  const double aspect = static_cast<double>(width) / height;
  const double area = static_cast<double>(width) * height;
  TileGrid best;
  double best_diff = std::numeric_limits<double>::infinity();
  for (const Ratio& r : candidate_grids(min_tiles, max_tiles)) {
    const double diff = std::abs(aspect - static_cast<double>(r.cols) / r.rows);
    if (diff < best_diff) {
      best_diff = diff;
      best = {r.cols, r.rows};
    } else if (diff == best_diff && area > 0.5 * tile * tile * r.cols * r.rows) {
      best = {r.cols, r.rows};  // a tie goes to the later (more tiles) grid for large images only
    }
  }
  return best;
}

std::vector<Image> dynamic_tiles(const Image& image, int min_tiles, int max_tiles, int tile, bool thumbnail) {
  const TileGrid grid = choose_tile_grid(image.width, image.height, min_tiles, max_tiles, tile);
  const Image resized = resize_bicubic(image, tile * grid.cols, tile * grid.rows);
  std::vector<Image> tiles;
  tiles.reserve(grid.count() + 1);
  for (int k = 0; k < grid.count(); ++k) {
    tiles.push_back(crop(resized, (k % grid.cols) * tile, (k / grid.cols) * tile, tile, tile));
  }
  if (thumbnail && grid.count() > 1) tiles.push_back(resize_bicubic(image, tile, tile));
  return tiles;
}

namespace {

// (u8/255 - mean[c]) / std[c] in float32, HWC -> CHW into `out` (3*H*W floats).
void normalize_chw(const Image& image, const float mean[3], const float stdev[3], float* out) {
  const DeviceScope on_host(Device::cpu());  // into a host tensor; the encoders copy it to their device
  ops::normalize_rgb8_chw(image.rgb.data(), image.height, image.width, mean, stdev, out);
}

}  // namespace

Tensor normalize_for_vit(const std::vector<Image>& tiles) {
  check(!tiles.empty(), "normalize_for_vit: no tiles");
  static const float kMean[3] = {0.485f, 0.456f, 0.406f};
  static const float kStd[3] = {0.229f, 0.224f, 0.225f};
  const int w = tiles[0].width, h = tiles[0].height;
  Tensor out = Tensor::empty({static_cast<int64_t>(tiles.size()), 3, h, w});
  for (size_t i = 0; i < tiles.size(); ++i) {
    check(tiles[i].width == w && tiles[i].height == h, "normalize_for_vit: tiles differ in size");
    normalize_chw(tiles[i], kMean, kStd, out.f32() + i * 3 * static_cast<size_t>(w) * h);
  }
  return out;
}

Image sam2_resize(const Image& image) { return resize_bicubic(image, kSamImageSize, kSamImageSize); }

Tensor sam2_normalize(const Image& resized, Sam2Constants constants) {
  // Upstream's inference builds mean/std as bfloat16 tensors; these are the rounded values, used in float32.
  static const float kMean[3] = {round_to_bf16(0.485f), round_to_bf16(0.456f), round_to_bf16(0.406f)};
  static const float kStd[3] = {round_to_bf16(0.229f), round_to_bf16(0.224f), round_to_bf16(0.225f)};
  static const float kMean32[3] = {0.485f, 0.456f, 0.406f};
  static const float kStd32[3] = {0.229f, 0.224f, 0.225f};
  const bool rounded = constants == Sam2Constants::Bf16Rounded;
  Tensor out = Tensor::empty({3, resized.height, resized.width});
  normalize_chw(resized, rounded ? kMean : kMean32, rounded ? kStd : kStd32, out.f32());
  return out;
}

Tensor sam2_input(const Image& image) { return sam2_normalize(sam2_resize(image)); }

Tensor mask_prompt_grid(const uint8_t* mask, int width, int height, int grid) {
  check(mask != nullptr && width > 0 && height > 0 && grid > 0, "mask prompt: empty mask");
  // PyTorch legacy nearest: src = min(floor(dst * (in/out)), in - 1), the scale in float32.
  const float scale_y = static_cast<float>(height) / static_cast<float>(grid);
  const float scale_x = static_cast<float>(width) / static_cast<float>(grid);
  Tensor out = Tensor::empty({grid, grid}, DType::U8);
  uint8_t* dst = out.data<uint8_t>();
  for (int i = 0; i < grid; ++i) {
    const int sy = std::min(static_cast<int>(std::floor(static_cast<float>(i) * scale_y)), height - 1);
    for (int j = 0; j < grid; ++j) {
      const int sx = std::min(static_cast<int>(std::floor(static_cast<float>(j) * scale_x)), width - 1);
      dst[i * grid + j] = mask[static_cast<size_t>(sy) * width + sx] != 0 ? 1 : 0;
    }
  }
  return out;
}

Tensor postprocess_mask_logits(const Tensor& lowres_logits, int out_h, int out_w) {
  check(out_h > 0 && out_w > 0, "mask post-processing: invalid output size");
  const int64_t h = lowres_logits.size(-2), w = lowres_logits.size(-1);
  check(lowres_logits.numel() == h * w, "mask post-processing: expected one low-res logit map, got " +
                                            shape_str(lowres_logits.shape()));
  const Tensor x = lowres_logits.contiguous().view({1, h, w});
  const Tensor full = ops::interpolate_bilinear(x, kSamImageSize, kSamImageSize, /*align_corners=*/false);
  const Tensor out = ops::interpolate_bilinear(full, out_h, out_w, /*align_corners=*/false);
  return out.view({out_h, out_w});
}

Tensor threshold_mask(const Tensor& logits) {
  const Tensor x = logits.device().is_cpu() ? logits.contiguous() : logits.to(Device::cpu());  // masks are host data
  Tensor out = Tensor::empty(x.shape(), DType::U8);
  const float* src = x.f32();
  uint8_t* dst = out.data<uint8_t>();
  const int64_t n = x.numel();
  for (int64_t i = 0; i < n; ++i) dst[i] = (1.f / (1.f + std::exp(-src[i]))) > 0.5f ? 1 : 0;
  return out;
}

std::vector<int64_t> llm_frame_indices(int64_t total, int count, bool uniform) {
  check(total >= 0 && count >= 0, "llm_frame_indices: negative frame count");
  const int64_t n = std::min<int64_t>(count, total);
  std::vector<int64_t> indices(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) indices[i] = uniform ? (2 * i + 1) * total / (2 * n) : i;
  return indices;
}

// Each region mask sampled to the grid x grid token cells (any mask size: upstream samples it straight to
// the token grid, whatever the image's size) and how many cells it covers; a region that covers no cell
// gets no tokens ("region1<vp></vp>"), as upstream. `cells` (when given) receives them as U8 [K, grid²].
// Each mask's data must hold width x height values.
std::vector<int> region_cell_counts(const std::vector<Mask>& masks, int grid, Tensor* cells) {
  const int64_t K = static_cast<int64_t>(masks.size()), area = static_cast<int64_t>(grid) * grid;
  if (cells) *cells = Tensor::empty({K, area}, DType::U8);
  std::vector<int> counts;
  for (int64_t k = 0; k < K; ++k) {
    const Mask& m = masks[static_cast<size_t>(k)];
    const Tensor grid_cells = mask_prompt_grid(m.data.data(), m.width, m.height, grid).contiguous();
    const uint8_t* c = grid_cells.data<uint8_t>();
    if (cells) std::memcpy(cells->data<uint8_t>() + k * area, c, static_cast<size_t>(area));
    counts.push_back(static_cast<int>(std::count_if(c, c + area, [](uint8_t v) { return v != 0; })));
  }
  return counts;
}

}  // namespace sa2va::preprocess
