// Mask outputs: COCO RLE (hand-checked strings, round trips), bbox/area, PNG masks, overlays.
#include "io/mask_io.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <set>
#include <utility>

#include "core/error.h"
#include "test_util.h"

namespace sa2va {
namespace {

// Rows given as strings of '0'/'1'.
struct TextMask {
  std::vector<uint8_t> data;
  int height = 0, width = 0;
  explicit TextMask(const std::vector<std::string>& rows)
      : height(static_cast<int>(rows.size())), width(rows.empty() ? 0 : static_cast<int>(rows[0].size())) {
    for (const std::string& row : rows)
      for (char c : row) data.push_back(c == '1');
  }
  MaskView view() const { return {data.data(), height, width}; }
};

TEST(CocoRle, EncodesColumnMajorRunsStartingWithZeros) {
  // Column 0 reads 0,1,0; column 1 reads 1,1,0.
  TextMask mask({"01", "11", "00"});
  CocoRle rle = rle_encode(mask.view());
  EXPECT_EQ(rle.height, 3);
  EXPECT_EQ(rle.width, 2);
  EXPECT_EQ(rle.counts, (std::vector<uint32_t>{1, 1, 1, 2, 1}));

  EXPECT_EQ(rle_encode(TextMask({"11", "11"}).view()).counts, (std::vector<uint32_t>{0, 4}));
  EXPECT_EQ(rle_encode(TextMask({"000", "000"}).view()).counts, (std::vector<uint32_t>{6}));
  EXPECT_EQ(rle_encode(TextMask({"10", "00"}).view()).counts, (std::vector<uint32_t>{0, 1, 3}));
  EXPECT_EQ(rle_encode(MaskView{}).counts, (std::vector<uint32_t>{0}));
}

TEST(CocoRle, CountsStringsCheckedByHand) {
  // 0 -> '0'; 4 -> '4'.
  EXPECT_EQ(rle_counts_to_string({0, 4}), "04");
  // 20 has the sign bit (0x10) set in its only group: a second, zero group follows: 'd' '0'.
  EXPECT_EQ(rle_counts_to_string({20}), "d0");
  // 100 = 3*32 + 4 -> 'T' (4|0x20) '3'; counts[3] is sent as 40 - 5 = 35 = 32 + 3 -> 'S' '1'.
  EXPECT_EQ(rle_counts_to_string({3, 5, 100, 40}), "35T3S1");
  // counts[3] - counts[1] = 2 - 10 = -8: one group 11000 (sign set, rest -1) -> 'H'.
  EXPECT_EQ(rle_counts_to_string({1, 10, 1, 2}), "1:1H");
  // 50 -> 'b' '1'; 10 - 50 = -40 -> groups 11000 (more) and 11110 -> 'h' 'N'.
  EXPECT_EQ(rle_counts_to_string({5, 50, 2, 10}), "5b12hN");
  // Index 2 is still sent whole (the difference starts at index 3).
  EXPECT_EQ(rle_counts_to_string({1, 1, 1}), "111");
  EXPECT_EQ(rle_counts_to_string({}), "");

  for (const char* text : {"04", "d0", "35T3S1", "1:1H", "5b12hN", "111"})
    EXPECT_EQ(rle_counts_to_string(rle_counts_from_string(text)), text);
  EXPECT_EQ(rle_counts_from_string("5b12hN"), (std::vector<uint32_t>{5, 50, 2, 10}));
}

TEST(CocoRle, RandomMasksRoundTrip) {
  std::mt19937 rng(1234);
  const std::vector<std::pair<int, int>> sizes = {{1, 1}, {1, 37}, {29, 1}, {7, 5}, {64, 48}, {100, 3}, {33, 81}};
  for (auto [height, width] : sizes) {
    for (double density : {0.0, 0.02, 0.5, 0.97, 1.0}) {
      std::bernoulli_distribution inside(density);
      std::vector<uint8_t> mask(static_cast<size_t>(height) * width);
      // Blobs as well as noise: runs of random length give long counts (multi-char values).
      for (size_t i = 0; i < mask.size();) {
        const bool value = inside(rng);
        const size_t run = 1 + rng() % (rng() % 2 ? 3 : 400);
        for (size_t k = 0; k < run && i < mask.size(); ++k) mask[i++] = value ? static_cast<uint8_t>(1 + rng() % 255) : 0;
      }
      CocoRle rle = rle_encode({mask.data(), height, width});
      std::vector<uint8_t> decoded = rle_decode(rle);
      ASSERT_EQ(decoded.size(), mask.size());
      for (size_t i = 0; i < mask.size(); ++i) ASSERT_EQ(decoded[i], mask[i] != 0) << height << "x" << width;
      EXPECT_EQ(rle_counts_from_string(rle_counts_to_string(rle.counts)), rle.counts);
    }
  }
}

TEST(CocoRle, BadInputIsAnError) {
  EXPECT_THROW(rle_counts_from_string("0~"), Error);   // '~' is outside '0'..'o'
  EXPECT_THROW(rle_counts_from_string("0/"), Error);   // below '0'
  EXPECT_THROW(rle_counts_from_string("5b"), Error);   // 'b' says more groups follow
  EXPECT_THROW(rle_counts_from_string("H"), Error);    // negative first count
  EXPECT_THROW(rle_counts_from_string("1111H"), Error);  // 1 - 8 < 0
  EXPECT_THROW(rle_counts_from_string("oooooooo0"), Error);  // too many groups
  EXPECT_THROW(rle_decode(CocoRle{2, 2, {1, 2}}), Error);   // covers 3 of 4 pixels
  EXPECT_THROW(rle_decode(CocoRle{2, 2, {1, 2, 2}}), Error);
}

TEST(MaskGeometry, BboxAndArea) {
  TextMask mask({"00000", "00100", "01110", "00000"});
  EXPECT_EQ(mask_bbox(mask.view()), (std::array<int, 4>{1, 1, 3, 2}));
  EXPECT_EQ(mask_area(mask.view()), 4);
  TextMask single({"000", "001"});
  EXPECT_EQ(mask_bbox(single.view()), (std::array<int, 4>{2, 1, 1, 1}));
  TextMask empty({"000", "000"});
  EXPECT_EQ(mask_bbox(empty.view()), (std::array<int, 4>{0, 0, 0, 0}));
  EXPECT_EQ(mask_area(empty.view()), 0);
  TextMask full({"11", "11", "11"});
  EXPECT_EQ(mask_bbox(full.view()), (std::array<int, 4>{0, 0, 2, 3}));
  EXPECT_EQ(mask_area(full.view()), 6);
  // Runs that wrap from one column into the next (pycocotools' case "xp < x").
  TextMask wrap({"01", "00", "10"});
  EXPECT_EQ(mask_bbox(wrap.view()), (std::array<int, 4>{0, 0, 2, 3}));
}

TEST(MaskPng, WritesZeroAnd255) {
  const std::string dir = test::temp_dir("mask-png");
  TextMask mask({"0110", "1001", "0000"});
  save_mask_png(dir + "/m.png", mask.view());
  Image back = load_image(dir + "/m.png");
  ASSERT_EQ(back.width, 4);
  ASSERT_EQ(back.height, 3);
  for (size_t i = 0; i < mask.data.size(); ++i)
    for (int c = 0; c < 3; ++c) EXPECT_EQ(back.rgb[3 * i + c], mask.data[i] ? 255 : 0) << i;
  EXPECT_THROW(save_mask_png(dir + "/missing/m.png", mask.view()), Error);
}

TEST(MaskOverlay, DistinctColours) {
  std::set<std::array<uint8_t, 3>> colours;
  for (int k = 0; k < 64; ++k) colours.insert(mask_color(k));
  EXPECT_EQ(colours.size(), 64u);
}

TEST(MaskOverlay, TintsInsideAndOutlinesTheBorder) {
  const int width = 10, height = 8;
  Image image(width, height);
  std::fill(image.rgb.begin(), image.rgb.end(), 100);
  std::vector<uint8_t> mask(width * height, 0);
  for (int y = 1; y <= 6; ++y)
    for (int x = 2; x <= 8; ++x) mask[y * width + x] = 1;
  const MaskView view{mask.data(), height, width};
  const auto colour = mask_color(0);

  Image out = render_overlay(image, {view}, 0.5f, 1);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      const uint8_t* px = out.row(y) + 3 * x;
      const bool inside = mask[y * width + x];
      const bool edge = inside && (y == 1 || y == 6 || x == 2 || x == 8);
      for (int c = 0; c < 3; ++c) {
        const int expected = !inside ? 100 : edge ? colour[c] : (100 * 128 + colour[c] * 128 + 128) >> 8;
        EXPECT_EQ(px[c], expected) << "x=" << x << " y=" << y << " c=" << c;
      }
    }
  }

  // Without an outline every inside pixel is tinted; a later mask is drawn on top.
  std::vector<uint8_t> second(width * height, 0);
  second[3 * width + 4] = 1;
  Image plain = render_overlay(image, {view, {second.data(), height, width}}, 0.5f, 0);
  EXPECT_EQ(plain.row(1)[3 * 2], (100 * 128 + colour[0] * 128 + 128) >> 8);
  const auto colour2 = mask_color(1);
  EXPECT_EQ(plain.row(3)[3 * 4 + 1],
            (((100 * 128 + colour[1] * 128 + 128) >> 8) * 128 + colour2[1] * 128 + 128) >> 8);
  EXPECT_EQ(plain.row(0)[0], 100);

  // A mask touching the image border is outlined along it.
  std::vector<uint8_t> all(width * height, 1);
  Image bordered = render_overlay(image, {{all.data(), height, width}}, 0.5f, 1);
  EXPECT_EQ(bordered.row(0)[0], colour[0]);
  EXPECT_EQ(bordered.row(4)[3 * 5], (100 * 128 + colour[0] * 128 + 128) >> 8);

  std::vector<uint8_t> small(4, 1);
  EXPECT_THROW(render_overlay(image, {{small.data(), 2, 2}}), Error);
  EXPECT_THROW(render_overlay(image, {view}, 1.5f), Error);
}

using Polygons = std::vector<std::vector<int32_t>>;

// Even-odd fill at pixel centres, OR-ed over the polygons (each region is filled on its own).
std::vector<uint8_t> fill_polygons(const Polygons& polygons, int height, int width) {
  std::vector<uint8_t> filled(static_cast<size_t>(height) * width, 0);
  for (const std::vector<int32_t>& polygon : polygons) {
    const size_t n = polygon.size() / 2;
    for (int y = 0; y < height; ++y) {
      for (int x = 0; x < width; ++x) {
        const double cx = x + 0.5, cy = y + 0.5;
        bool inside = false;  // crossings of a ray from the centre towards +x
        for (size_t i = 0, j = n - 1; i < n; j = i++) {
          const double xi = polygon[2 * i], yi = polygon[2 * i + 1], xj = polygon[2 * j], yj = polygon[2 * j + 1];
          if ((yi > cy) != (yj > cy) && cx < xj + (cy - yj) * (xi - xj) / (yi - yj)) inside = !inside;
        }
        if (inside) filled[static_cast<size_t>(y) * width + x] = 1;
      }
    }
  }
  return filled;
}

// The mask (as 0/1) with its holes filled: every pixel that outside pixels do not connect
// (4-connected) to the image border.
std::vector<uint8_t> fill_holes(const MaskView& mask) {
  const int h = mask.height, w = mask.width;
  std::vector<uint8_t> outer(static_cast<size_t>(h) * w, 0);  // outside pixels reached from the border
  std::vector<std::pair<int, int>> pending;
  auto visit = [&](int x, int y) {
    if (x < 0 || y < 0 || x >= w || y >= h || mask.at(y, x) || outer[static_cast<size_t>(y) * w + x]) return;
    outer[static_cast<size_t>(y) * w + x] = 1;
    pending.emplace_back(x, y);
  };
  for (int x = 0; x < w; ++x) visit(x, 0), visit(x, h - 1);
  for (int y = 0; y < h; ++y) visit(0, y), visit(w - 1, y);
  while (!pending.empty()) {
    const auto [x, y] = pending.back();
    pending.pop_back();
    visit(x + 1, y), visit(x - 1, y), visit(x, y + 1), visit(x, y - 1);
  }
  for (uint8_t& pixel : outer) pixel = !pixel;
  return outer;
}

// Number of 8-connected regions of inside pixels.
int count_regions(const MaskView& mask) {
  const int h = mask.height, w = mask.width;
  std::vector<uint8_t> seen(static_cast<size_t>(h) * w, 0);
  int regions = 0;
  for (int start = 0; start < h * w; ++start) {
    if (!mask.data[start] || seen[start]) continue;
    ++regions;
    std::vector<int> pending = {start};
    seen[start] = 1;
    while (!pending.empty()) {
      const int x = pending.back() % w, y = pending.back() / w;
      pending.pop_back();
      for (int ny = y - 1; ny <= y + 1; ++ny)
        for (int nx = x - 1; nx <= x + 1; ++nx)
          if (nx >= 0 && ny >= 0 && nx < w && ny < h && mask.at(ny, nx) && !seen[ny * w + nx])
            seen[ny * w + nx] = 1, pending.push_back(ny * w + nx);
    }
  }
  return regions;
}

// The outlines of `mask`: one per 8-connected region, corners within [0, W] x [0, H], axis-aligned
// edges turning at every corner (no collinear consecutive points, also across the wrap-around), and
// together they fill back the mask with its holes filled.
void expect_outlines_fill_back(const MaskView& mask, const std::string& name) {
  SCOPED_TRACE(name);
  const Polygons polygons = mask_polygons(mask);
  EXPECT_EQ(static_cast<int>(polygons.size()), count_regions(mask));
  for (const std::vector<int32_t>& polygon : polygons) {
    ASSERT_EQ(polygon.size() % 2, 0u);
    const size_t n = polygon.size() / 2;
    ASSERT_GE(n, 4u);
    for (size_t i = 0; i < n; ++i) {
      const int32_t x = polygon[2 * i], y = polygon[2 * i + 1];
      EXPECT_TRUE(x >= 0 && x <= mask.width && y >= 0 && y <= mask.height) << x << "," << y;
      const size_t next = (i + 1) % n, after = (i + 2) % n;
      const int64_t ax = polygon[2 * next] - x, ay = polygon[2 * next + 1] - y;
      const int64_t bx = polygon[2 * after] - polygon[2 * next], by = polygon[2 * after + 1] - polygon[2 * next + 1];
      EXPECT_TRUE((ax == 0) != (ay == 0)) << "edge " << i << " is not along a pixel edge";
      EXPECT_NE(ax * by - ay * bx, 0) << "corner " << next << " is collinear with its neighbours";
    }
  }
  EXPECT_EQ(fill_polygons(polygons, mask.height, mask.width), fill_holes(mask));
}

TEST(MaskPolygons, EmptyMaskHasNoPolygons) {
  EXPECT_TRUE(mask_polygons(MaskView{}).empty());
  EXPECT_TRUE(mask_polygons(TextMask({"000", "000"}).view()).empty());
}

TEST(MaskPolygons, FullMaskAndSinglePixelAreRectangles) {
  TextMask full({"111", "111"});
  EXPECT_EQ(mask_polygons(full.view()), (Polygons{{0, 0, 3, 0, 3, 2, 0, 2}}));
  TextMask pixel({"0000", "0010", "0000"});
  EXPECT_EQ(mask_polygons(pixel.view()), (Polygons{{2, 1, 3, 1, 3, 2, 2, 2}}));
  EXPECT_EQ(mask_polygons(TextMask({"1"}).view()), (Polygons{{0, 0, 1, 0, 1, 1, 0, 1}}));
  expect_outlines_fill_back(full.view(), "full");
  expect_outlines_fill_back(pixel.view(), "pixel");
}

TEST(MaskPolygons, LinesAndAnLShapeInImageCoordinates) {
  // x is the column, y the row (not RLE's column-major order); clockwise on screen.
  TextMask row({"0000000", "0111100"});
  EXPECT_EQ(mask_polygons(row.view()), (Polygons{{1, 1, 5, 1, 5, 2, 1, 2}}));
  TextMask column({"000", "001", "001", "001"});
  EXPECT_EQ(mask_polygons(column.view()), (Polygons{{2, 1, 3, 1, 3, 4, 2, 4}}));
  TextMask l_shape({"100", "100", "111"});
  EXPECT_EQ(mask_polygons(l_shape.view()), (Polygons{{0, 0, 1, 0, 1, 2, 3, 2, 3, 3, 0, 3}}));
  expect_outlines_fill_back(row.view(), "row");
  expect_outlines_fill_back(column.view(), "column");
  expect_outlines_fill_back(l_shape.view(), "L");
}

TEST(MaskPolygons, SeparateBlobsInRasterOrderOfTheirFirstPixel) {
  // The right blob starts on row 0, the left one on row 1.
  TextMask blobs({"00011", "10000", "11000"});
  EXPECT_EQ(mask_polygons(blobs.view()), (Polygons{{3, 0, 5, 0, 5, 1, 3, 1}, {0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 0, 3}}));
  expect_outlines_fill_back(blobs.view(), "blobs");
}

TEST(MaskPolygons, DiagonalStaircaseIsOneRegion) {
  // Pixels touching only at corners are 8-connected: one outline through each shared corner twice.
  TextMask down({"100", "010", "001"});
  EXPECT_EQ(mask_polygons(down.view()),
            (Polygons{{0, 0, 1, 0, 1, 1, 2, 1, 2, 2, 3, 2, 3, 3, 2, 3, 2, 2, 1, 2, 1, 1, 0, 1}}));
  TextMask up({"001", "010", "100"});
  EXPECT_EQ(mask_polygons(up.view()),
            (Polygons{{2, 0, 3, 0, 3, 1, 2, 1, 2, 2, 1, 2, 1, 3, 0, 3, 0, 2, 1, 2, 1, 1, 2, 1}}));
  TextMask stairs({"1100000", "0111000", "0001110", "0000011"});
  expect_outlines_fill_back(down.view(), "down");
  expect_outlines_fill_back(up.view(), "up");
  expect_outlines_fill_back(stairs.view(), "stairs");
  EXPECT_EQ(mask_polygons(stairs.view()).size(), 1u);
}

TEST(MaskPolygons, RingIsOutlinedWithoutItsHole) {
  TextMask ring({"1111", "1001", "1111"});
  EXPECT_EQ(mask_polygons(ring.view()), (Polygons{{0, 0, 4, 0, 4, 3, 0, 3}}));
  expect_outlines_fill_back(ring.view(), "ring");
  // An island in the hole is a region of its own, listed after the ring.
  TextMask island({"11111", "10001", "10101", "10001", "11111"});
  EXPECT_EQ(mask_polygons(island.view()), (Polygons{{0, 0, 5, 0, 5, 5, 0, 5}, {2, 2, 3, 2, 3, 3, 2, 3}}));
  expect_outlines_fill_back(island.view(), "island");
  // A ring closed only through corners still encloses its hole.
  TextMask diamond({"0110", "1001", "0110"});
  ASSERT_EQ(mask_polygons(diamond.view()).size(), 1u);
  EXPECT_EQ(fill_polygons(mask_polygons(diamond.view()), 3, 4), TextMask({"0110", "1111", "0110"}).data);
  expect_outlines_fill_back(diamond.view(), "diamond");
}

TEST(MaskPolygons, RandomRectanglesAndDiscsFillBack) {
  std::mt19937 rng(2024);
  for (int trial = 0; trial < 200; ++trial) {
    const int width = 1 + static_cast<int>(rng() % 64), height = 1 + static_cast<int>(rng() % 48);
    std::vector<uint8_t> mask(static_cast<size_t>(height) * width, 0);
    // Up to 24 shapes: rectangles (thin ones make frames and holes) and discs (small ones make
    // pixels touching at corners).
    const int shapes = static_cast<int>(rng() % 25);
    for (int s = 0; s < shapes; ++s) {
      std::uniform_real_distribution<double> along_x(-2, width + 2), along_y(-2, height + 2), size(0.3, 16);
      const double ax = along_x(rng), ay = along_y(rng), sx = size(rng), sy = size(rng);
      const bool disc = rng() % 2;  // of diameter sx centred at a, else sx x sy with its top-left at a
      for (int y = 0; y < height; ++y) {
        for (int x = 0; x < width; ++x) {
          const double dx = x + 0.5 - ax, dy = y + 0.5 - ay;
          const bool in = disc ? dx * dx + dy * dy <= sx * sx / 4 : dx >= 0 && dx <= sx && dy >= 0 && dy <= sy;
          if (in) mask[static_cast<size_t>(y) * width + x] = 1;
        }
      }
    }
    const std::string name = "trial " + std::to_string(trial) + ": " + std::to_string(width) + "x" +
                             std::to_string(height);
    expect_outlines_fill_back({mask.data(), height, width}, name);
  }
}

// Expected runs from an independent implementation of pycocotools' rleFrPoly that was checked
// equal to pycocotools on thousands of random polygons.
TEST(MaskIo, PolygonsRasteriseAsPycocotools) {
  struct Case {
    std::vector<double> xy;
    int h, w;
    std::vector<uint32_t> counts;
  };
  const std::vector<Case> cases = {
      {{1, 1, 4, 1, 4, 4, 1, 4}, 6, 6, {7, 3, 3, 3, 3, 3, 14}},
      {{0.3, 0.2, 9.7, 1.1, 5.2, 8.9}, 10, 12, {10, 2, 8, 4, 7, 5, 5, 7, 3, 7, 3, 6, 4, 4, 6, 2, 8, 1, 28}},
      {{2, 0, 7.5, 3.3, 2, 9, -1, 4.6, 3, 4.5}, 9, 8, {5, 2, 7, 3, 1, 2, 3, 3, 2, 6, 3, 5, 5, 3, 7, 1, 14}},
      {{0, 0, 50, 0, 50, 30}, 20, 40, {20, 1, 19, 1, 19, 2, 18, 3, 17, 3, 17, 4, 16, 4, 16, 5, 15, 6, 14, 6, 14, 7,
                                        13, 7, 13, 8, 12, 9, 11, 9, 11, 10, 10, 10, 10, 11, 9, 12, 8, 12, 8, 13, 7, 13,
                                        7, 14, 6, 15, 5, 15, 5, 16, 4, 16, 4, 17, 3, 18, 2, 18, 2, 19, 1, 19, 1, 140}},
  };
  for (const Case& c : cases) {
    const CocoRle rle = rle_from_polygon(c.xy, c.h, c.w);
    EXPECT_EQ(rle.counts, c.counts);
    EXPECT_EQ(rle_decode(rle).size(), static_cast<size_t>(c.h) * c.w);  // the runs cover the image
  }
  EXPECT_EQ(rle_from_polygon({1, 1, 2, 2}, 3, 3).counts, (std::vector<uint32_t>{9}));  // under 3 points: empty
  // Coordinates whose outline could not be traced are refused (no out-of-range conversion).
  EXPECT_THROW(rle_from_polygon({0, 0, 3e35, 0, 2, 2}, 4, 4), Error);
  EXPECT_THROW(rle_from_polygon({0, 0, 1, 0, 2, std::nan("")}, 4, 4), Error);
  EXPECT_THROW(rle_from_polygon({0, 0, -1e7, 0, 2, 2}, 4, 4), Error);
}

}  // namespace
}  // namespace sa2va
