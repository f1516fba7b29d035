// Sa2VA pre- and post-processing, bit-exact with the upstream Python pipeline (docs/preprocess.md):
//  - PIL's bicubic resize (antialiased, 22-bit fixed point) used for every image resize,
//  - InternVL dynamic tiling (+ thumbnail) and ToTensor/Normalize for InternViT,
//  - SAM2's 1024x1024 DirectResize and normalisation with bf16-rounded mean/std,
//  - visual-prompt masks to the 16x16 token grid (PyTorch legacy nearest),
//  - SAM2 low-res mask logits back to the image size (bilinear 256 -> 1024 -> HxW) and thresholding.
#pragma once
#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "io/image.h"

namespace sa2va::preprocess {

constexpr int kVitImageSize = 448;
constexpr int kSamImageSize = 1024;
constexpr int kMaskPromptGrid = 16;
constexpr int kSamLowResSize = 256;

// PIL `Image.resize((out_w, out_h))` with BICUBIC on an RGB image (docs/preprocess.md §1). Same size: a copy.
Image resize_bicubic(const Image& image, int out_w, int out_h);

// The box [x0, x0+w) x [y0, y0+h), which must lie inside the image.
Image crop(const Image& image, int x0, int y0, int width, int height);

// InternVL `find_closest_aspect_ratio` (docs/preprocess.md §2.1): columns x rows of tiles for a width x height image.
struct TileGrid {
  int cols = 1, rows = 1;
  int count() const { return cols * rows; }
};
TileGrid choose_tile_grid(int width, int height, int min_tiles = 1, int max_tiles = 12, int tile = kVitImageSize);

// InternVL `dynamic_preprocess`: the image resized to the chosen grid and cut into tile x tile crops
// (row-major), plus a tile-sized thumbnail of the whole image when there is more than one crop.
std::vector<Image> dynamic_tiles(const Image& image, int min_tiles = 1, int max_tiles = 12, int tile = kVitImageSize,
                                 bool thumbnail = true);

// ToTensor + Normalize(ImageNet mean/std) in float32: tiles (all of the same size) -> F32 [n, 3, H, W].
Tensor normalize_for_vit(const std::vector<Image>& tiles);

// SAM2 input for one image or frame: DirectResize to 1024x1024 (PIL bicubic), then
// (u8/255 - mean)/std in float32 with the bf16-rounded constants -> F32 [3, 1024, 1024].
Image sam2_resize(const Image& image);
// Inference (the released model code) rounds mean/std to bf16; training keeps them in float32.
enum class Sam2Constants { Bf16Rounded, Float32 };
Tensor sam2_normalize(const Image& resized_1024, Sam2Constants constants = Sam2Constants::Bf16Rounded);
Tensor sam2_input(const Image& image);

// A visual-prompt region mask (h x w, nonzero = inside) sampled to grid x grid with PyTorch's legacy
// nearest interpolation -> U8 [grid, grid] holding 1 where the sampled value is nonzero.
Tensor mask_prompt_grid(const uint8_t* mask, int width, int height, int grid = kMaskPromptGrid);
// Each region mask sampled to the grid x grid token cells (mask_prompt_grid) and how many cells it
// covers (its tokens; none: "region1<vp></vp>", as upstream); `cells`, when given, receives them as
// U8 [K, grid²]. Each mask's data must hold width x height values.
std::vector<int> region_cell_counts(const std::vector<Mask>& masks, int grid, Tensor* cells);

// SAM2 low-res mask logits [256, 256] (or [1, 256, 256]) -> F32 [out_h, out_w] logits:
// bilinear (align_corners=False) to 1024x1024, then bilinear to (out_h, out_w), as upstream does.
Tensor postprocess_mask_logits(const Tensor& lowres_logits, int out_h, int out_w);

// sigmoid(logit) > 0.5 evaluated in float32 (so logits within ~1e-7 of 0 are false) -> U8 [..] of 0/1.
Tensor threshold_mask(const Tensor& logits);

// Which frames the LLM sees.
// uniform = false (upstream Sa2VA): the first min(count, total) frames, 0, 1, 2, ...
// uniform = true: n = min(count, total) frames evenly spread, frame i = floor((i + 0.5) * total / n)
//   (the middle of each of n equal segments), computed exactly in integers as
//   (2i + 1) * total / (2n). Indices are strictly increasing; n == total gives 0, 1, 2, ...
std::vector<int64_t> llm_frame_indices(int64_t total, int count = 5, bool uniform = false);

}  // namespace sa2va::preprocess
