// Video input: frame folders and video files (generated here with the ffmpeg program), checked
// against ffmpeg's own RGB24 output; key-frame selection; the overlay video writer.
#include "io/video.h"
#include "models/preprocess.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "sa2va/sa2va.h"
#include "test_util.h"

namespace sa2va {
namespace {

namespace fs = std::filesystem;

constexpr int kWidth = 64, kHeight = 48, kFrames = 12;
// The pixel conversion VideoSource promises, asked of the ffmpeg program.
const char* kExactSws = "-sws_flags bicubic+accurate_rnd+full_chroma_int";

bool have_ffmpeg() {
  static const bool found = test::run_command("ffmpeg -hide_banner -version", nullptr) == 0;
  return found;
}

bool have_encoder(const std::string& name) {
  static const std::string encoders = [] {
    std::string out;
    test::run_command("ffmpeg -hide_banner -encoders", &out);
    return out;
  }();
  return encoders.find(" " + name + " ") != std::string::npos;
}

void ffmpeg(const std::string& args) {
  std::string out;
  int rc = test::run_command("ffmpeg -hide_banner -loglevel error -nostdin -y " + args, &out);
  ASSERT_EQ(rc, 0) << "ffmpeg " << args << "\n" << out;
}

std::string testsrc(int frames = kFrames) {
  return "-f lavfi -i testsrc=size=" + std::to_string(kWidth) + "x" + std::to_string(kHeight) +
         ":rate=10 -frames:v " + std::to_string(frames);
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Every frame as ffmpeg decodes and converts it (auto-rotation included).
std::vector<Image> ffmpeg_frames(const std::string& video, int width, int height) {
  std::string raw = video + ".rgb";
  ffmpeg("-i " + video + " " + kExactSws + " -pix_fmt rgb24 -f rawvideo " + raw);
  std::vector<uint8_t> bytes = read_bytes(raw);
  const size_t frame_size = static_cast<size_t>(width) * height * 3;
  std::vector<Image> frames;
  for (size_t offset = 0; offset + frame_size <= bytes.size(); offset += frame_size) {
    Image image(width, height);
    std::copy(bytes.begin() + offset, bytes.begin() + offset + frame_size, image.rgb.begin());
    frames.push_back(std::move(image));
  }
  EXPECT_EQ(bytes.size() % frame_size, 0u);
  return frames;
}

int max_abs_diff(const Image& a, const Image& b) {
  if (a.rgb.size() != b.rgb.size()) return 256;
  int worst = 0;
  for (size_t i = 0; i < a.rgb.size(); ++i) worst = std::max(worst, std::abs(a.rgb[i] - b.rgb[i]));
  return worst;
}

double mean_abs_diff(const Image& a, const Image& b) {
  double sum = 0;
  for (size_t i = 0; i < a.rgb.size(); ++i) sum += std::abs(a.rgb[i] - b.rgb[i]);
  return sum / static_cast<double>(a.rgb.size());
}

std::vector<Image> read_all(VideoSource& source) {
  std::vector<Image> frames;
  Image frame;
  while (source.next(frame)) frames.push_back(frame);
  return frames;
}

Image gradient(int width, int height, int seed) {
  Image image(width, height);
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x) {
      uint8_t* p = image.row(y) + 3 * x;
      // Smooth (no wrap-around) up to 70x60, so that lossy 4:2:0 coding stays close.
      p[0] = static_cast<uint8_t>(x * 3 + seed * 4);
      p[1] = static_cast<uint8_t>(y * 3 + seed * 7);
      p[2] = static_cast<uint8_t>(x + y + seed * 2);
    }
  return image;
}

// ---- Folders ----------------------------------------------------------------------------------

TEST(VideoFolder, SortedByNameIgnoringOtherFiles) {
  const std::string dir = test::temp_dir("video-folder");
  // Byte-wise order, as Python's sorted(): upper case first, "frame10" before "frame2".
  const std::vector<std::string> names = {"A.PNG", "b.png", "frame10.png", "frame2.png"};
  for (size_t i = 0; i < names.size(); ++i) save_png_rgb(dir + "/" + names[i], gradient(8, 6, static_cast<int>(i)));
  std::ofstream(dir + "/notes.txt") << "not a frame";
  std::ofstream(dir + "/frame.png.bak") << "not a frame";
  fs::create_directory(dir + "/sub.png");

  EXPECT_EQ(list_frame_files(dir).size(), names.size());
  auto source = VideoSource::open(dir);
  EXPECT_EQ(source->width(), 8);
  EXPECT_EQ(source->height(), 6);
  EXPECT_EQ(source->frame_count(), 4);
  EXPECT_EQ(source->fps(), 0.0);
  std::vector<Image> frames = read_all(*source);
  ASSERT_EQ(frames.size(), names.size());
  for (size_t i = 0; i < names.size(); ++i) EXPECT_EQ(frames[i].rgb, gradient(8, 6, static_cast<int>(i)).rgb) << i;

  EXPECT_EQ(source->frame(2).rgb, frames[2].rgb);
  Image after;
  ASSERT_TRUE(source->next(after));  // continues after the random-access frame
  EXPECT_EQ(after.rgb, frames[3].rgb);
  EXPECT_FALSE(source->next(after));
  source->rewind();
  ASSERT_TRUE(source->next(after));
  EXPECT_EQ(after.rgb, frames[0].rgb);
  EXPECT_THROW(source->frame(4), Error);
  EXPECT_THROW(source->frame(-1), Error);
}

TEST(VideoFolder, JpegFramesDecodeLikeImages) {
  if (!have_ffmpeg()) GTEST_SKIP() << "ffmpeg program not found";
  const std::string dir = test::temp_dir("video-jpeg");
  ffmpeg(testsrc(3) + " " + dir + "/%05d.jpg");
  auto source = VideoSource::open(dir);
  ASSERT_EQ(source->frame_count(), 3);
  for (int i = 0; i < 3; ++i) {
    char name[32];
    std::snprintf(name, sizeof(name), "/%05d.jpg", i + 1);
    EXPECT_EQ(source->frame(i).rgb, load_image(dir + name).rgb) << i;
  }
}

// Frames may differ in size (newer upstream Sa2VA accepts such videos): each comes back at its
// own size; width() and height() stay the first frame's.
TEST(VideoFolder, FramesOfOtherSizesComeAtTheirOwnSize) {
  const std::string dir = test::temp_dir("video-sizes");
  save_png_rgb(dir + "/0.png", gradient(8, 6, 0));
  save_png_rgb(dir + "/1.png", gradient(6, 5, 1));
  auto source = VideoSource::open(dir);
  EXPECT_EQ(source->width(), 8);
  EXPECT_EQ(source->height(), 6);
  Image frame;
  ASSERT_TRUE(source->next(frame));
  EXPECT_EQ(frame.rgb, gradient(8, 6, 0).rgb);
  ASSERT_TRUE(source->next(frame));
  EXPECT_EQ(frame.width, 6);
  EXPECT_EQ(frame.height, 5);
  EXPECT_EQ(frame.rgb, gradient(6, 5, 1).rgb);
  EXPECT_EQ(source->frame(1).rgb, gradient(6, 5, 1).rgb);
}

TEST(VideoFolder, EmptyOrMissingFolderIsAnError) {
  const std::string dir = test::temp_dir("video-empty");
  EXPECT_THROW(VideoSource::open(dir), Error);
  std::ofstream(dir + "/readme.txt") << "no frames here";
  try {
    VideoSource::open(dir);
    FAIL() << "no error for a folder without frames";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(dir), std::string::npos) << e.what();
  }
  EXPECT_THROW(VideoSource::open(dir + "/missing"), Error);
}

TEST(VideoFolder, CorruptFrameIsAnError) {
  const std::string dir = test::temp_dir("video-corrupt");
  save_png_rgb(dir + "/0.png", gradient(8, 6, 0));
  std::ofstream(dir + "/1.png") << "garbage";
  auto source = VideoSource::open(dir);
  EXPECT_THROW(source->frame(1), Error);
}

// ---- Files ------------------------------------------------------------------------------------

struct Clip {
  const char* name;
  const char* encode;  // ffmpeg output options
  const char* encoder;
  bool lossless;
};

class VideoFile : public ::testing::TestWithParam<Clip> {};

TEST_P(VideoFile, MatchesFfmpegFrameForFrame) {
  const Clip& clip = GetParam();
  if (!have_ffmpeg()) GTEST_SKIP() << "ffmpeg program not found";
  if (!have_encoder(clip.encoder)) GTEST_SKIP() << "no " << clip.encoder << " encoder";
  const std::string dir = test::temp_dir("video-file");
  const std::string video = dir + "/" + clip.name;
  ffmpeg(testsrc() + " " + clip.encode + " " + video);
  // The frames that went in, generated once for all formats.
  static const std::vector<uint8_t> source_rgb = [] {
    const std::string raw = test::temp_dir("video-source") + "/source.rgb";
    ffmpeg(testsrc() + " -pix_fmt rgb24 -f rawvideo " + raw);
    return read_bytes(raw);
  }();
  ASSERT_EQ(source_rgb.size(), static_cast<size_t>(kWidth) * kHeight * 3 * kFrames);

  auto source = VideoSource::open(video);
  EXPECT_EQ(source->width(), kWidth);
  EXPECT_EQ(source->height(), kHeight);
  EXPECT_EQ(source->frame_count(), kFrames);
  EXPECT_NEAR(source->fps(), 10.0, 1e-6);

  std::vector<Image> frames = read_all(*source);
  ASSERT_EQ(static_cast<int>(frames.size()), kFrames);
  std::vector<Image> expected = ffmpeg_frames(video, kWidth, kHeight);
  ASSERT_EQ(expected.size(), frames.size());
  for (int i = 0; i < kFrames; ++i) {
    EXPECT_EQ(max_abs_diff(frames[i], expected[i]), 0) << clip.name << " frame " << i;
    // And close to the frames that went in.
    Image original(kWidth, kHeight);
    const size_t size = original.rgb.size();
    std::copy(source_rgb.begin() + i * size, source_rgb.begin() + (i + 1) * size, original.rgb.begin());
    if (clip.lossless) {
      EXPECT_EQ(max_abs_diff(frames[i], original), 0) << clip.name << " frame " << i;
    } else {
      EXPECT_LT(mean_abs_diff(frames[i], original), 12.0) << clip.name << " frame " << i;
    }
  }

  // Random access, forward and backward, equals sequential decoding.
  for (int64_t index : {7, 2, 11, 0, 5}) EXPECT_EQ(source->frame(index).rgb, frames[index].rgb) << index;
  Image next;
  ASSERT_TRUE(source->next(next));
  EXPECT_EQ(next.rgb, frames[6].rgb);
  source->rewind();
  EXPECT_EQ(read_all(*source).size(), frames.size());
  EXPECT_THROW(source->frame(kFrames), Error);
  // Right after opening (the first frame is decoded then, for its size): a jump past it, and frame 0
  // followed by the next.
  EXPECT_EQ(VideoSource::open(video)->frame(3).rgb, frames[3].rgb);
  auto fresh = VideoSource::open(video);
  EXPECT_EQ(fresh->frame(0).rgb, frames[0].rgb);
  ASSERT_TRUE(fresh->next(next));
  EXPECT_EQ(next.rgb, frames[1].rgb);
}

INSTANTIATE_TEST_SUITE_P(
    Formats, VideoFile,
    ::testing::Values(Clip{"x264.mp4", "-c:v libx264 -preset ultrafast -pix_fmt yuv420p", "libx264", false},
                      Clip{"mpeg4.mp4", "-c:v mpeg4 -q:v 3", "mpeg4", false},
                      Clip{"vp9.webm", "-c:v libvpx-vp9 -deadline realtime -b:v 200k", "libvpx-vp9", false},
                      Clip{"vp8.webm", "-c:v libvpx -deadline realtime -b:v 200k", "libvpx", false},
                      Clip{"mjpeg.avi", "-c:v mjpeg -q:v 3", "mjpeg", false},
                      Clip{"ffv1_yuv.mkv", "-c:v ffv1 -pix_fmt yuv420p", "ffv1", false},
                      // Converted with, and tagged as, the BT.709 matrix at full range.
                      Clip{"ffv1_bt709.mkv",
                           "-vf scale=out_color_matrix=bt709:out_range=full,format=yuv444p -c:v ffv1 "
                           "-colorspace bt709 -color_range pc",
                           "ffv1", false},
                      Clip{"ffv1_rgb.mkv", "-c:v ffv1 -pix_fmt bgr0", "ffv1", true},
                      Clip{"png.avi", "-c:v png -pix_fmt rgb24", "png", true}),
    [](const ::testing::TestParamInfo<Clip>& info) {
      std::string name = info.param.name;
      for (char& c : name)
        if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
      return name;
    });

// One opened video file read by several threads at once (two requests about the same video): each
// frame as one thread alone reads it.
TEST(VideoFileThreads, OneVideoServesSeveralThreads) {
  if (!have_ffmpeg()) GTEST_SKIP() << "ffmpeg program not found";
  const std::string video = test::temp_dir("video-threads") + "/clip.mp4";
  ffmpeg(testsrc() + " -c:v mpeg4 -q:v 3 " + video);
  auto shared = Video::open(video);
  std::vector<Image> expected;
  for (int64_t i = 0; i < kFrames; ++i) expected.push_back(Video::open(video)->frame(i));
  std::vector<int> mismatches(2, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t)
    threads.emplace_back([&, t] {
      for (int pass = 0; pass < 4; ++pass)
        for (int64_t k = 0; k < kFrames; ++k) {
          const int64_t i = t == 0 ? k : kFrames - 1 - k;  // one thread forwards, the other backwards
          mismatches[t] += shared->frame(i).rgb != expected[i].rgb;
        }
    });
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(mismatches, std::vector<int>(2, 0));
}

// Sets the display matrix of the first track of an mp4 written by ffmpeg (tkhd version 0), as a
// phone does for a portrait recording. `clockwise` is the rotation a player applies.
void set_mp4_rotation(const std::string& path, int clockwise) {
  std::vector<uint8_t> bytes = read_bytes(path);
  const std::string tag = "tkhd";
  auto it = std::search(bytes.begin(), bytes.end(), tag.begin(), tag.end());
  ASSERT_NE(it, bytes.end());
  const size_t box = static_cast<size_t>(it - bytes.begin()) - 4;
  ASSERT_EQ(bytes[box + 8], 0) << "tkhd version";
  // Matrix (a b u; c d v; x y w) in 16.16 fixed point, w in 2.30; rows of (cos, sin; -sin, cos).
  const int32_t one = 0x10000;
  int32_t a = one, b = 0, c = 0, d = one;
  if (clockwise == 90) a = 0, b = one, c = -one, d = 0;
  if (clockwise == 180) a = -one, d = -one;
  if (clockwise == 270) a = 0, b = -one, c = one, d = 0;
  const int32_t matrix[9] = {a, b, 0, c, d, 0, 0, 0, 0x40000000};
  for (int i = 0; i < 9; ++i)
    for (int k = 0; k < 4; ++k) bytes[box + 48 + 4 * i + k] = static_cast<uint8_t>(static_cast<uint32_t>(matrix[i]) >> (24 - 8 * k));
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

TEST(VideoFileRotation, DisplayMatrixIsApplied) {
  if (!have_ffmpeg() || !have_encoder("libx264")) GTEST_SKIP() << "ffmpeg with libx264 not found";
  const std::string dir = test::temp_dir("video-rotate");
  ffmpeg(testsrc(3) + " -c:v libx264 -preset ultrafast " + dir + "/upright.mp4");
  const std::vector<uint8_t> upright = read_bytes(dir + "/upright.mp4");
  for (int angle : {90, 180, 270}) {
    const std::string video = dir + "/rot" + std::to_string(angle) + ".mp4";
    std::ofstream(video, std::ios::binary).write(reinterpret_cast<const char*>(upright.data()), upright.size());
    set_mp4_rotation(video, angle);
    auto source = VideoSource::open(video);
    const bool swapped = angle != 180;
    const int width = swapped ? kHeight : kWidth, height = swapped ? kWidth : kHeight;
    EXPECT_EQ(source->width(), width) << angle;
    EXPECT_EQ(source->height(), height) << angle;
    std::vector<Image> frames = read_all(*source);
    // The ffmpeg program rotates by the same matrix (autorotate).
    std::vector<Image> expected = ffmpeg_frames(video, width, height);
    ASSERT_EQ(frames.size(), 3u);
    ASSERT_EQ(expected.size(), 3u);
    for (size_t i = 0; i < frames.size(); ++i) {
      EXPECT_EQ(frames[i].width, width);
      EXPECT_EQ(max_abs_diff(frames[i], expected[i]), 0) << angle << " frame " << i;
    }
  }
}

// Opening and decoding every frame; errors must be sa2va::Error naming the file.
void expect_error_naming(const std::string& path) {
  try {
    auto source = VideoSource::open(path);
    read_all(*source);
    FAIL() << path << ": no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
}

TEST(VideoFileErrors, TruncatedGarbageAndAudioOnly) {
  if (!have_ffmpeg() || !have_encoder("libx264")) GTEST_SKIP() << "ffmpeg with libx264 not found";
  const std::string dir = test::temp_dir("video-errors");
  ffmpeg(testsrc() + " -c:v libx264 -preset ultrafast " + dir + "/full.mp4");
  ffmpeg(testsrc() + " -c:v libx264 -preset ultrafast -movflags +faststart " + dir + "/faststart.mp4");
  ffmpeg(testsrc() + " -c:v ffv1 " + dir + "/full.mkv");
  auto cut_in_half = [&](const std::string& name) {
    std::vector<uint8_t> bytes = read_bytes(dir + "/" + name);
    const std::string cut = dir + "/cut_" + name;
    std::ofstream(cut, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), bytes.size() / 2);
    return cut;
  };
  expect_error_naming(cut_in_half("full.mp4"));       // index at the end: lost
  expect_error_naming(cut_in_half("faststart.mp4"));  // index first: frames missing
  // Matroska has no frame index: a cut file is a shorter video (as for the ffmpeg program),
  // whose frames all decode.
  auto cut = VideoSource::open(cut_in_half("full.mkv"));
  EXPECT_GT(cut->frame_count(), 0);
  EXPECT_LT(cut->frame_count(), kFrames);
  EXPECT_EQ(static_cast<int64_t>(read_all(*cut).size()), cut->frame_count());

  std::vector<char> noise(4096);
  std::mt19937 rng(7);
  for (char& c : noise) c = static_cast<char>(rng());
  std::ofstream(dir + "/garbage.mp4", std::ios::binary).write(noise.data(), noise.size());
  expect_error_naming(dir + "/garbage.mp4");
  std::ofstream(dir + "/empty.mp4");
  expect_error_naming(dir + "/empty.mp4");

  ffmpeg("-f lavfi -i sine=duration=0.2 " + dir + "/audio.wav");
  expect_error_naming(dir + "/audio.wav");
  expect_error_naming(dir + "/missing.mp4");
}

TEST(VideoFileErrors, FramesLargerThanTheLimit) {
  if (!have_ffmpeg()) GTEST_SKIP() << "ffmpeg program not found";
  const std::string dir = test::temp_dir("video-limit");
  ffmpeg(testsrc(2) + " -c:v ffv1 " + dir + "/small.mkv");
  EXPECT_THROW(VideoSource::open(dir + "/small.mkv", kWidth * kHeight - 1), Error);
  EXPECT_NO_THROW(VideoSource::open(dir + "/small.mkv", kWidth * kHeight));
}

// ---- Key frames --------------------------------------------------------------------------------

// A stream whose size changes midway (two MPEG-TS pieces back to back): frames come at their
// own size, and a frame over the pixel limit is an error naming the file and the frame.
TEST(VideoFileSizes, SizeChangeMidStream) {
  if (!have_ffmpeg() || !have_encoder("libx264")) GTEST_SKIP() << "ffmpeg with libx264 not found";
  const std::string dir = test::temp_dir("video-size-change");
  const std::string h264 = " -c:v libx264 -pix_fmt yuv420p -f mpegts ";
  ffmpeg("-f lavfi -i testsrc=size=64x48:rate=10 -frames:v 3" + h264 + dir + "/a.ts");
  ffmpeg("-f lavfi -i testsrc=size=32x24:rate=10 -frames:v 2" + h264 + dir + "/b.ts");
  ffmpeg("-f lavfi -i testsrc=size=96x64:rate=10 -frames:v 2" + h264 + dir + "/c.ts");
  auto join = [&](const std::string& out, const std::string& first, const std::string& second) {
    std::ofstream o(dir + "/" + out, std::ios::binary);
    for (const std::string& piece : {first, second}) {
      const std::vector<uint8_t> bytes = read_bytes(dir + "/" + piece);
      o.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    }
  };
  join("smaller.ts", "a.ts", "b.ts");
  join("larger.ts", "a.ts", "c.ts");

  auto source = VideoSource::open(dir + "/smaller.ts");
  EXPECT_EQ(source->width(), 64);
  EXPECT_EQ(source->height(), 48);
  ASSERT_EQ(source->frame_count(), 5);
  const std::vector<Image> frames = read_all(*source);
  ASSERT_EQ(frames.size(), 5u);
  for (size_t i = 0; i < frames.size(); ++i) {
    EXPECT_EQ(frames[i].width, i < 3 ? 64 : 32) << i;
    EXPECT_EQ(frames[i].height, i < 3 ? 48 : 24) << i;
    EXPECT_EQ(frames[i].rgb.size(), static_cast<size_t>(frames[i].width) * frames[i].height * 3) << i;
  }
  // The second piece decodes as the ffmpeg program decodes it on its own.
  const std::vector<Image> second = ffmpeg_frames(dir + "/b.ts", 32, 24);
  ASSERT_EQ(second.size(), 2u);
  EXPECT_LE(max_abs_diff(frames[3], second[0]), 2);

  auto limited = VideoSource::open(dir + "/larger.ts", 64 * 48);
  try {
    read_all(*limited);
    FAIL() << "no error for a frame over the pixel limit";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("larger.ts"), std::string::npos) << message;
    EXPECT_NE(message.find("frame 3"), std::string::npos) << message;
    EXPECT_NE(message.find("96x64"), std::string::npos) << message;
  }
}

// A container whose header gives another size than the stream's frames (an IVF file of VP8 at 12x10
// whose header says 8x6): the video's size is its first decoded frame's, as the ffmpeg program has
// it, so that masks come at the size of the frames they are drawn on; the pixel limit holds for it.
TEST(VideoFileSizes, HeaderSizeOtherThanTheFrames) {
  if (!have_ffmpeg() || !have_encoder("libvpx")) GTEST_SKIP() << "ffmpeg with libvpx not found";
  const std::string dir = test::temp_dir("video-header-size");
  ffmpeg("-f lavfi -i testsrc=size=12x10:rate=10 -frames:v 3 -c:v libvpx -f ivf " + dir + "/v.ivf");
  std::vector<uint8_t> bytes = read_bytes(dir + "/v.ivf");
  ASSERT_GT(bytes.size(), 32u);
  ASSERT_EQ(std::string(bytes.begin(), bytes.begin() + 4), "DKIF");
  bytes[12] = 8, bytes[13] = 0, bytes[14] = 6, bytes[15] = 0;  // the header's width and height
  std::ofstream(dir + "/v.ivf", std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));

  auto source = VideoSource::open(dir + "/v.ivf");
  EXPECT_EQ(source->width(), 12);
  EXPECT_EQ(source->height(), 10);
  ASSERT_EQ(source->frame_count(), 3);
  const std::vector<Image> frames = read_all(*source);
  ASSERT_EQ(frames.size(), 3u);
  const std::vector<Image> expected = ffmpeg_frames(dir + "/v.ivf", 12, 10);
  ASSERT_EQ(expected.size(), 3u);
  for (size_t i = 0; i < frames.size(); ++i) EXPECT_EQ(max_abs_diff(frames[i], expected[i]), 0) << i;
  // 12x10 = 120 pixels decoded, over a limit of 100 that the header's 48 are within.
  const auto open_error = [](const std::string& path, int64_t max_pixels) {
    try {
      VideoSource::open(path, max_pixels);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(open_error(dir + "/v.ivf", 100).find("12x10"), std::string::npos) << open_error(dir + "/v.ivf", 100);
  EXPECT_EQ(open_error(dir + "/v.ivf", 120), "no error");

  // The VP8 key frame itself declaring 12000x12000 (its 14-bit sizes after the start code 9d 01 2a):
  // the decoder refuses it before allocating 216 MB for it.
  const uint8_t start[] = {0x9d, 0x01, 0x2a};
  const auto at = std::search(bytes.begin(), bytes.end(), std::begin(start), std::end(start));
  ASSERT_NE(at, bytes.end());
  for (int k : {3, 5}) at[k] = 12000 & 0xff, at[k + 1] = 12000 >> 8;
  std::ofstream(dir + "/bomb.ivf", std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  const std::string message = open_error(dir + "/bomb.ivf", 1000);
  EXPECT_NE(message.find("bomb.ivf"), std::string::npos) << message;
  EXPECT_NE(message.find("limit of 1000 pixels"), std::string::npos) << message;
}

// ---- Frames in memory (Video::from_frames) -----------------------------------------------------

std::string from_frames_error(std::vector<Image> frames) {
  try {
    Video::from_frames(std::move(frames));
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(FramesVideo, KeepsEachFrameAtItsOwnSize) {
  auto video = Video::from_frames({gradient(8, 6, 0), gradient(5, 4, 1)});
  EXPECT_EQ(video->frame_count(), 2);
  EXPECT_EQ(video->width(), 8);  // the first frame's size, the size masks come out at
  EXPECT_EQ(video->height(), 6);
  EXPECT_EQ(video->fps(), 0.0);
  EXPECT_EQ(video->frame(1).rgb, gradient(5, 4, 1).rgb);
  EXPECT_EQ(video->frame(0).rgb, gradient(8, 6, 0).rgb);
  try {
    video->frame(2);
    FAIL() << "no error for a frame past the end";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("frame 2 is out of range (the video has 2 frames)"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(video->frame(-1), Error);
}

TEST(FramesVideo, EmptyOrInconsistentFramesAreErrors) {
  EXPECT_NE(from_frames_error({}).find("at least one frame"), std::string::npos);
  Image short_buffer = gradient(8, 6, 0);
  short_buffer.rgb.pop_back();
  EXPECT_NE(from_frames_error({gradient(8, 6, 0), short_buffer}).find("frame 1: its pixel buffer does not match"),
            std::string::npos);
  Image no_pixels;  // 0 x 0
  EXPECT_NE(from_frames_error({no_pixels}).find("frame 0: its pixel buffer does not match"), std::string::npos);
  Image negative = gradient(4, 4, 0);
  negative.width = -4;
  EXPECT_NE(from_frames_error({negative}).find("frame 0"), std::string::npos);
}

TEST(LlmFrameIndices, FirstFramesByDefault) {
  EXPECT_EQ(preprocess::llm_frame_indices(100), (std::vector<int64_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(preprocess::llm_frame_indices(3), (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(preprocess::llm_frame_indices(6, 5), (std::vector<int64_t>{0, 1, 2, 3, 4}));
  EXPECT_TRUE(preprocess::llm_frame_indices(0).empty());
  EXPECT_EQ(preprocess::llm_frame_indices(10, 2), (std::vector<int64_t>{0, 1}));
}

TEST(LlmFrameIndices, UniformTakesSegmentMiddles) {
  EXPECT_EQ(preprocess::llm_frame_indices(100, 5, true), (std::vector<int64_t>{10, 30, 50, 70, 90}));
  EXPECT_EQ(preprocess::llm_frame_indices(7, 5, true), (std::vector<int64_t>{0, 2, 3, 4, 6}));
  EXPECT_EQ(preprocess::llm_frame_indices(3, 5, true), (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(preprocess::llm_frame_indices(1, 5, true), (std::vector<int64_t>{0}));
  for (int64_t total = 1; total < 200; ++total) {
    std::vector<int64_t> indices = preprocess::llm_frame_indices(total, 5, true);
    ASSERT_EQ(static_cast<int64_t>(indices.size()), std::min<int64_t>(total, 5));
    for (size_t i = 0; i < indices.size(); ++i) {
      EXPECT_GE(indices[i], 0);
      EXPECT_LT(indices[i], total);
      if (i > 0) {
        EXPECT_GT(indices[i], indices[i - 1]) << total;
      }
      // floor((i + 0.5) * total / n)
      EXPECT_EQ(indices[i], static_cast<int64_t>(std::floor((i + 0.5) * total / indices.size()))) << total;
    }
  }
}

// ---- Writer ------------------------------------------------------------------------------------

TEST(VideoWriter, WritesFramesThatReadBack) {
  const std::string dir = test::temp_dir("video-writer");
  const int width = 65, height = 47;  // odd: padded to 66x48
  std::string encoder;
  {
    VideoWriter writer(dir + "/overlay.mp4", width, height, 12.5);
    encoder = writer.encoder_name();
    for (int i = 0; i < 10; ++i) writer.write(gradient(width, height, i));
    EXPECT_THROW(writer.write(gradient(width + 1, height, 0)), Error);
    writer.close();
  }
  EXPECT_TRUE(encoder == "libx264" || encoder == "mpeg4") << encoder;
  auto source = VideoSource::open(dir + "/overlay.mp4");
  EXPECT_EQ(source->width(), 66);
  EXPECT_EQ(source->height(), 48);
  EXPECT_EQ(source->frame_count(), 10);
  EXPECT_NEAR(source->fps(), 12.5, 1e-6);
  std::vector<Image> frames = read_all(*source);
  ASSERT_EQ(frames.size(), 10u);
  for (int i = 0; i < 10; ++i) {
    Image expected = gradient(width, height, i);
    double sum = 0;
    for (int y = 0; y < height; ++y)
      for (int x = 0; x < width * 3; ++x) sum += std::abs(frames[i].row(y)[x] - expected.row(y)[x]);
    EXPECT_LT(sum / (width * height * 3), 4.0) << "frame " << i;
  }
  EXPECT_THROW(VideoWriter(dir + "/no/such/dir/x.mp4", 8, 8, 10), Error);
  EXPECT_THROW(VideoWriter(dir + "/bad.mp4", 0, 8, 10), Error);
}

}  // namespace
}  // namespace sa2va
