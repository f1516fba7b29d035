// Image decoding against PIL: each tests/data/images/<name>.<ext> has <name>.rgb, the raw bytes of
// PIL's Image.open(file).convert('RGB') (written by tests/data/images/make_images.py).
#include "io/image.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <iterator>

#include "core/error.h"
#include "test_util.h"

namespace sa2va {
namespace {

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  EXPECT_TRUE(file.good()) << path;
  return {std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream file(path, std::ios::binary);
  file.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

// Expects decoding `file` to throw sa2va::Error whose message names the file and contains `needle`.
void expect_decode_error(const std::string& file, const std::string& needle, int64_t max_pixels = kDefaultMaxPixels) {
  try {
    load_image(file, max_pixels);
    ADD_FAILURE() << file << ": expected an error";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find(file), std::string::npos) << message;
    EXPECT_NE(message.find(needle), std::string::npos) << message;
  }
}

// CRC-32 as PNG chunks use it (bitwise; only a few bytes are hashed here).
uint32_t png_crc32(const uint8_t* data, size_t size) {
  uint32_t crc = 0xFFFFFFFFu;
  for (size_t i = 0; i < size; ++i) {
    crc ^= data[i];
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return crc ^ 0xFFFFFFFFu;
}

class ImageDecodeMatchesPil : public ::testing::TestWithParam<const char*> {};

TEST_P(ImageDecodeMatchesPil, ExactPixels) {
  const std::string file = GetParam();
  const std::string stem = file.substr(0, file.rfind('.'));
  const Image image = load_image(test::test_data("images/" + file));
  const std::vector<uint8_t> expected = read_bytes(test::test_data("images/" + stem + ".rgb"));
  EXPECT_EQ(image.width, 19);
  EXPECT_EQ(image.height, 13);
  ASSERT_EQ(image.rgb.size(), expected.size());
  size_t mismatches = 0, first = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    if (image.rgb[i] != expected[i] && mismatches++ == 0) first = i;
  }
  EXPECT_EQ(mismatches, 0u) << file << ": first mismatch at byte " << first << ": " << int(image.rgb[first])
                            << " vs PIL " << int(expected[first]);
}

INSTANTIATE_TEST_SUITE_P(
    Formats, ImageDecodeMatchesPil,
    ::testing::Values("rgb.png", "rgba.png", "gray.png", "gray_alpha.png", "palette.png", "palette_trns.png",
                      "palette_short.png", "gray1.png", "gray4.png", "gray16.png", "gray_trns.png", "rgb16.png",
                      "rgba16.png", "gray_alpha16.png", "rgb_interlaced.png", "baseline.jpg", "yuv444.jpg",
                      "yuv422.jpg", "progressive.jpg", "grayscale.jpg", "cmyk.jpg"),
    [](const ::testing::TestParamInfo<const char*>& info) {
      std::string name = info.param;
      for (char& c : name) c = (c == '.') ? '_' : c;
      return name;
    });

TEST(ImageDecode, FixtureInputHasExpectedSize) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  const Image image = load_image(dir + "/inputs/image.png");
  EXPECT_EQ(image.width, 600);
  EXPECT_EQ(image.height, 280);
}

TEST(ImageDecode, RejectsBadFiles) {
  const std::string dir = test::temp_dir("image_bad");
  expect_decode_error(dir + "/missing.png", "cannot open");

  write_bytes(dir + "/empty.png", {});
  expect_decode_error(dir + "/empty.png", "empty");

  write_bytes(dir + "/text.png", {'h', 'e', 'l', 'l', 'o'});
  expect_decode_error(dir + "/text.png", "unsupported image format");

  for (const char* name : {"baseline.jpg", "progressive.jpg", "rgb.png", "rgb_interlaced.png"}) {
    const std::vector<uint8_t> good = read_bytes(test::test_data(std::string("images/") + name));
    // Truncated in the pixel data.
    std::vector<uint8_t> truncated(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(good.size() * 2 / 3));
    const std::string truncated_path = dir + "/truncated_" + name;
    write_bytes(truncated_path, truncated);
    expect_decode_error(truncated_path, "truncated");
    // Only the signature survives.
    std::vector<uint8_t> header_only(good.begin(), good.begin() + 8);
    const std::string header_path = dir + "/header_" + name;
    write_bytes(header_path, header_only);
    expect_decode_error(header_path, "invalid");
  }

  // Corrupt PNG: a flipped byte in IHDR breaks its CRC.
  std::vector<uint8_t> png = read_bytes(test::test_data("images/rgb.png"));
  png[20] ^= 0x40;
  write_bytes(dir + "/crc.png", png);
  expect_decode_error(dir + "/crc.png", "invalid PNG");

  // Corrupt JPEG: an impossible sample precision in the frame header (SOF0).
  std::vector<uint8_t> jpeg = read_bytes(test::test_data("images/baseline.jpg"));
  size_t sof = 2;
  while (sof + 4 < jpeg.size() && !(jpeg[sof] == 0xFF && jpeg[sof + 1] == 0xC0)) ++sof;
  ASSERT_LT(sof + 4, jpeg.size());
  jpeg[sof + 4] = 3;
  write_bytes(dir + "/marker.jpg", jpeg);
  expect_decode_error(dir + "/marker.jpg", "invalid JPEG");
}

// Every single-byte corruption of small files either decodes or throws sa2va::Error (never crashes).
TEST(ImageDecode, SurvivesCorruptedBytes) {
  for (const char* name : {"baseline.jpg", "progressive.jpg", "cmyk.jpg", "palette_short.png", "rgb_interlaced.png"}) {
    const std::vector<uint8_t> good = read_bytes(test::test_data(std::string("images/") + name));
    int errors = 0;
    for (size_t i = 0; i < good.size(); i += 3) {
      std::vector<uint8_t> bad = good;
      bad[i] = static_cast<uint8_t>(bad[i] ^ (0x5A + i));
      try {
        const Image image = decode_image(bad.data(), bad.size(), name);
        EXPECT_EQ(image.rgb.size(), static_cast<size_t>(image.width) * image.height * 3);
      } catch (const Error& e) {
        ++errors;
        EXPECT_NE(std::string(e.what()).find(name), std::string::npos);
      }
    }
    EXPECT_GT(errors, 0) << name;
  }
}

TEST(ImageDecode, RejectsImagesAboveThePixelLimit) {
  const std::string small_png = test::test_data("images/rgb.png");
  const std::string small_jpeg = test::test_data("images/baseline.jpg");
  expect_decode_error(small_png, "exceeds the limit", 19 * 13 - 1);
  expect_decode_error(small_jpeg, "exceeds the limit", 19 * 13 - 1);
  EXPECT_EQ(load_image(small_png, 19 * 13).width, 19);

  // A PNG header claiming 70000 x 1 pixels (> 65535 per side) is refused before any pixel is read.
  std::vector<uint8_t> png = read_bytes(small_png);
  const uint32_t wide = 70000;
  png[16] = static_cast<uint8_t>(wide >> 24), png[17] = static_cast<uint8_t>(wide >> 16);
  png[18] = static_cast<uint8_t>(wide >> 8), png[19] = static_cast<uint8_t>(wide);
  png[20] = 0, png[21] = 0, png[22] = 0, png[23] = 1;
  // libpng checks the CRC first; recompute it so that the size check is what fails.
  const uint32_t sum = png_crc32(png.data() + 12, 17);
  png[29] = static_cast<uint8_t>(sum >> 24), png[30] = static_cast<uint8_t>(sum >> 16);
  png[31] = static_cast<uint8_t>(sum >> 8), png[32] = static_cast<uint8_t>(sum);
  const std::string dir = test::temp_dir("image_big");
  write_bytes(dir + "/wide.png", png);
  expect_decode_error(dir + "/wide.png", "exceeds the limit");
}

// The caller hears the size from the header before the pixels are decoded, and may refuse them: its
// exception ends the decoding and comes back as it was thrown.
TEST(ImageDecode, TellsTheSizeBeforeDecodingAndPassesARefusalOn) {
  struct Refused {};
  for (const std::string name : {"images/rgb.png", "images/baseline.jpg"}) {
    SCOPED_TRACE(name);
    const std::vector<uint8_t> bytes = read_bytes(test::test_data(name));
    int width = 0, height = 0;
    const Image image = decode_image(bytes.data(), bytes.size(), name, kDefaultMaxPixels, [&](int w, int h) {
      width = w;
      height = h;
    });
    EXPECT_EQ(width, image.width);
    EXPECT_EQ(height, image.height);
    EXPECT_THROW(decode_image(bytes.data(), bytes.size(), name, kDefaultMaxPixels, [](int, int) { throw Refused{}; }),
                 Refused);
    // Above the pixel limit the decoder refuses first; the caller is not asked.
    bool asked = false;
    EXPECT_THROW(decode_image(bytes.data(), bytes.size(), name, 10, [&](int, int) { asked = true; }), Error);
    EXPECT_FALSE(asked);
  }
}

TEST(ImageEncode, PngRoundTrip) {
  const std::string dir = test::temp_dir("image_png");
  Image rgb(7, 5);
  for (size_t i = 0; i < rgb.rgb.size(); ++i) rgb.rgb[i] = static_cast<uint8_t>(i * 37 + 11);
  save_png_rgb(dir + "/rgb.png", rgb);
  const Image back = load_image(dir + "/rgb.png");
  EXPECT_EQ(back.width, 7);
  EXPECT_EQ(back.height, 5);
  EXPECT_EQ(back.rgb, rgb.rgb);

  std::vector<uint8_t> gray(9 * 4);
  for (size_t i = 0; i < gray.size(); ++i) gray[i] = static_cast<uint8_t>(i * 7);
  save_png_gray(dir + "/gray.png", gray.data(), 9, 4);
  const Image gray_back = load_image(dir + "/gray.png");
  ASSERT_EQ(gray_back.rgb.size(), gray.size() * 3);
  for (size_t i = 0; i < gray.size(); ++i) EXPECT_EQ(gray_back.rgb[3 * i + 1], gray[i]);

  EXPECT_THROW(save_png_rgb(dir + "/no_such_dir/x.png", rgb), Error);
  EXPECT_THROW(save_png_gray(dir + "/empty.png", gray.data(), 0, 4), Error);
}

}  // namespace
}  // namespace sa2va
