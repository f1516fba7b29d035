// Mask outputs: COCO run-length encoding (compatible with pycocotools), bounding box and area,
// 8-bit PNG masks, and overlays of masks on an RGB image.
//
// COCO RLE (pycocotools maskApi): the H x W mask is read in column-major order (down each column,
// columns left to right); counts are the lengths of alternating runs, the first run being zeros
// (so it may be 0). The compressed "counts" string encodes each count x (for i > 2 the difference
// x - counts[i-2], which may be negative) in signed groups of 5 bits, least significant first, one
// character per group: c = group | 0x20 when more groups follow, written as char(c + 48). Encoding
// stops when the remaining value is 0 (or -1 for negatives) and the sign bit 0x10 of the last group
// agrees with it.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "io/image.h"

namespace sa2va {

// A borrowed H x W mask, rows top to bottom; nonzero = inside.
struct MaskView {
  const uint8_t* data = nullptr;
  int height = 0, width = 0;
  bool at(int y, int x) const { return data[static_cast<size_t>(y) * width + x] != 0; }
};

struct CocoRle {
  int height = 0, width = 0;
  std::vector<uint32_t> counts;  // column-major runs, zeros first
};

CocoRle rle_encode(const MaskView& mask);
// Back to an H x W row-major mask of 0/1. Throws sa2va::Error when the runs do not cover H x W exactly.
std::vector<uint8_t> rle_decode(const CocoRle& rle);

// pycocotools' compressed string for the counts (rleToString) and its inverse (rleFrString).
// rle_counts_from_string throws sa2va::Error on characters outside '0'..'o', a truncated last value,
// or a negative count.
std::string rle_counts_to_string(const std::vector<uint32_t>& counts);
std::vector<uint32_t> rle_counts_from_string(const std::string& text);

// pycocotools' rasterisation of one polygon [x0, y0, x1, y1, ...] (rleFrPoly): the outline is
// traced at 5x resolution and a pixel is inside where its centre column crossing count is odd.
// Fewer than 3 points give an empty mask; a coordinate that is not finite or lies more than
// kMaxPolygonCoordinate from the origin is an Error (its outline could not be traced).
constexpr double kMaxPolygonCoordinate = 1e6;
CocoRle rle_from_polygon(const std::vector<double>& xy, int height, int width);

// COCO box [x, y, w, h] of the inside pixels (w = last column - first column + 1); all zero for an
// empty mask, as pycocotools' toBbox.
std::array<int, 4> mask_bbox(const MaskView& mask);
// Number of inside pixels.
int64_t mask_area(const MaskView& mask);

// Outlines of the mask as polygons, COCO "segmentation" style: one flat list [x0, y0, x1, y1, ...]
// per 8-connected region, in image coordinates (x = column, y = row) of pixel corners, so a single
// pixel at (x, y) is the square (x, y) (x + 1, y) (x + 1, y + 1) (x, y + 1). Each polygon follows
// the region's outer boundary along pixel edges, clockwise on screen, with only the corners kept
// (no collinear points); holes are not outlined, the polygon covers them. Regions that touch only
// at a corner are one region, so their polygon passes through that corner twice. Filled by the
// even-odd rule at pixel centres, a polygon gives its region with the holes filled (islands in them
// included). Regions are listed in raster order of their first pixel; an empty mask gives none.
// Linear time: each region is walked once along its outline and marked once.
std::vector<std::vector<int32_t>> mask_polygons(const MaskView& mask);

// 8-bit grayscale PNG: 255 inside, 0 outside. Throws sa2va::Error naming the path on failure.
void save_mask_png(const std::string& path, const MaskView& mask);

// Colour of the k-th mask in overlays: a fixed list of well-separated colours, then golden-ratio hues.
std::array<uint8_t, 3> mask_color(int index);

// The image with every mask tinted in mask_color(k) (out = (1 - alpha) * pixel + alpha * colour,
// rounded) and outlined in that colour: inside pixels within `contour_width` pixels (square
// neighbourhood) of an outside pixel or the image border. Masks are drawn in order (later ones on
// top) and must have the image's size; contour_width 0 draws no outline.
Image render_overlay(const Image& image, const std::vector<MaskView>& masks, float alpha = 0.5f,
                     int contour_width = 2);

}  // namespace sa2va
