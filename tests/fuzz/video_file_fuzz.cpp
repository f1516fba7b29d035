// Video files (what `sa2va run --video` and an uploaded video of `sa2va serve` open): any bytes are
// either a video whose frames play in order, each an RGB image within the pixel limit, and replay
// from any index; or refused with sa2va::Error naming the file.
extern "C" {
#include <libavutil/log.h>
}

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <string>

#include "core/error.h"
#include "fuzz_util.h"
#include "io/video.h"

namespace {

constexpr int64_t kMaxPixels = 1 << 20;  // small frames keep each input fast; the checks are the same
constexpr int64_t kMaxFramesPlayed = 12;

void check_frame(const sa2va::Image& frame) {
  const bool sized = frame.width > 0 && frame.height > 0 &&
                     static_cast<int64_t>(frame.width) * frame.height <= kMaxPixels &&
                     frame.rgb.size() == static_cast<size_t>(frame.width) * static_cast<size_t>(frame.height) * 3;
  if (!sized) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  av_log_set_level(AV_LOG_QUIET);  // corrupt inputs would print FFmpeg's complaints at every step
  // Under the target's -malloc_limit_mb (160): an allocation past it is a finding only where FFmpeg's
  // cap does not stop it (frames are allocated by our code, within the pixel limit).
  sa2va::set_ffmpeg_allocation_limit(size_t{150} << 20);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sa2va;
  const std::string file = (fuzz::scratch_dir() / "video").string();
  {
    std::ofstream out(file, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  try {
    std::unique_ptr<VideoSource> video = VideoSource::open(file, kMaxPixels);
    if (video->width() <= 0 || video->height() <= 0 || video->frame_count() <= 0 || !(video->fps() >= 0))
      std::abort();
    // Play from the start, as the pipeline does.
    Image frame;
    int64_t played = 0;
    while (played < kMaxFramesPlayed && video->next(frame)) {
      check_frame(frame);
      if (played == 0 && (frame.width != video->width() || frame.height != video->height())) std::abort();
      ++played;
    }
    if (played < std::min(kMaxFramesPlayed, video->frame_count())) std::abort();  // next() throws instead
    // Back to an earlier frame (the decoder restarts), then forward past frames without converting them.
    const int64_t last = std::min(video->frame_count(), kMaxFramesPlayed) - 1;
    check_frame(video->frame(last / 2));
    check_frame(video->frame(last));
    video->rewind();
    if (!video->next(frame)) std::abort();
    check_frame(frame);
  } catch (const Error& e) {
    // Every refusal names the file it is about.
    if (std::string(e.what()).find(file) == std::string::npos) std::abort();
  }
  return 0;
}
