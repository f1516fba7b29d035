// Video input (frames decoded on the fly, so memory stays bounded for long videos) and the
// overlay video writer.
//
// A video is either a folder of frame images or a video file that FFmpeg can open.
// - Folder: the files whose extension is jpg, jpeg or png (any case), sorted by plain byte-wise name
//   order, as Python's sorted(os.listdir(...)) in the upstream demo scripts (so "10.jpg" < "2.jpg":
//   number frames with leading zeros). Other files and subfolders are ignored.
// - File: the best video stream, decoded with libavcodec and converted to RGB24 by libswscale without
//   scaling (SWS_BICUBIC | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INT, the frame's own YCbCr matrix and
//   range). A display-rotation tag of 90/180/270 degrees is applied, as the ffmpeg program does.
// Frames may differ in size, as newer upstream Sa2VA accepts: width()/height() are the first frame's
// as decoded, whatever a container's header says (the size masks are produced at), and frame(i)
// returns each frame at its own size. Opening a file decodes its first frame for that reason.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "io/image.h"

namespace sa2va {

class VideoSource {
 public:
  // Opens a frame folder or a video file. Counts the frames exactly (a folder listing, or one
  // demux pass over the file's packets, which reads but does not decode them), and decodes the
  // first frame (its size is the video's). Throws sa2va::Error naming the path for a missing/empty
  // folder, an unreadable file, no video stream, or frames larger than max_pixels (declared so by
  // the file, or decoded so).
  static std::unique_ptr<VideoSource> open(const std::string& path_or_dir,
                                           int64_t max_pixels = kDefaultMaxPixels);
  virtual ~VideoSource() = default;

  int width() const { return width_; }
  int height() const { return height_; }
  int64_t frame_count() const { return frame_count_; }
  // Frames per second from the container; 0 when unknown (frame folders).
  double fps() const { return fps_; }
  const std::string& path() const { return path_; }

  // Frame `index` (0-based). Afterwards next() continues with frame index+1. For files, going
  // forward decodes (without RGB conversion) every frame in between; going back restarts the
  // decoder at the beginning, so request several frames in ascending order.
  virtual Image frame(int64_t index) = 0;
  // Decodes the next frame in display order into `out`; false after the last frame.
  // Throws sa2va::Error (naming the file) on corrupt data or a frame over the pixel limit.
  virtual bool next(Image& out) = 0;
  // Makes the next call of next() return frame 0.
  virtual void rewind() = 0;

 protected:
  std::string path_;
  int width_ = 0, height_ = 0;
  int64_t frame_count_ = 0;
  double fps_ = 0;
};

// The frame files of a folder in the order a VideoSource plays them (see above). Throws when the
// folder cannot be read.
std::vector<std::string> list_frame_files(const std::string& dir);

// The largest single allocation FFmpeg may make, by default 256 MiB (a 100-megapixel 4:2:0 frame
// takes 150 MB): a few bytes of a crafted file can declare a table of any size, and opening it must
// not take gigabytes (such a file is refused as unreadable). A program may set another limit before
// it opens a video; it holds for the whole process.
constexpr size_t kDefaultFfmpegAllocationLimit = size_t{256} << 20;
void set_ffmpeg_allocation_limit(size_t bytes);


// Writes RGB frames to a video file: H.264 (libx264, yuv420p, CRF 18) when that encoder is
// present, otherwise MPEG-4 part 2 at high quality; the container follows the file extension
// (mp4 when it names none FFmpeg knows). Odd sizes are padded to even by repeating the last
// row/column (4:2:0 needs even sizes). Throws sa2va::Error naming the path on failure.
class VideoWriter {
 public:
  VideoWriter(const std::string& path, int width, int height, double fps);
  ~VideoWriter();
  VideoWriter(const VideoWriter&) = delete;
  VideoWriter& operator=(const VideoWriter&) = delete;

  // Every frame must have the size given to the constructor.
  void write(const Image& frame);
  // Flushes the encoder and writes the trailer; also done by the destructor (which cannot throw,
  // so call close() to see errors).
  void close();
  // Name of the encoder in use ("libx264" or "mpeg4").
  std::string encoder_name() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sa2va
