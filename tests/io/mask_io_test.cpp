// Mask outputs: COCO RLE (hand-checked strings, round trips), bbox/area, PNG masks, overlays.
#include "io/mask_io.h"

#include <gtest/gtest.h>

#include <random>
#include <set>

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

}  // namespace
}  // namespace sa2va
