// Decodes a video sequentially with VideoSource and prints the peak resident memory after 100
// frames and at the end: memory must stay bounded however long the video is.
//
//   video_decode_bench [video]   (without an argument: generates 2,000 frames of 1280x720 testsrc
//                                 into a temporary H.264 mp4 with the ffmpeg program)
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "core/error.h"
#include "io/video.h"

namespace {

double peak_rss_mib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

}  // namespace

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  std::string path;
  fs::path generated;
  if (argc > 1) {
    path = argv[1];
  } else {
    generated = fs::temp_directory_path() / "sa2va_video_decode_bench.mp4";
    path = generated.string();
    const std::string command =
        "ffmpeg -hide_banner -loglevel error -nostdin -y -f lavfi -i testsrc=size=1280x720:rate=30 "
        "-frames:v 2000 -c:v libx264 -preset ultrafast -pix_fmt yuv420p " + path;
    std::printf("generating: %s\n", command.c_str());
    if (std::system(command.c_str()) != 0) {
      std::fprintf(stderr, "ffmpeg failed\n");
      return 1;
    }
  }
  try {
    std::printf("peak RSS before opening: %.1f MiB\n", peak_rss_mib());
    auto start = std::chrono::steady_clock::now();
    auto source = sa2va::VideoSource::open(path);
    const double open_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("%s: %dx%d, %lld frames, %.2f fps; open + frame count %.3f s, peak RSS %.1f MiB\n", path.c_str(),
                source->width(), source->height(), static_cast<long long>(source->frame_count()), source->fps(),
                open_s, peak_rss_mib());
    sa2va::Image frame;
    int64_t decoded = 0;
    uint64_t checksum = 0;  // keeps the work observable
    start = std::chrono::steady_clock::now();
    while (source->next(frame)) {
      for (size_t i = 0; i < frame.rgb.size(); i += 4099) checksum += frame.rgb[i];
      if (++decoded == 100)
        std::printf("after %lld frames: peak RSS %.1f MiB\n", static_cast<long long>(decoded), peak_rss_mib());
    }
    const double decode_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("after %lld frames: peak RSS %.1f MiB; %.1f frames/s (checksum %llu)\n",
                static_cast<long long>(decoded), peak_rss_mib(), decoded / decode_s,
                static_cast<unsigned long long>(checksum));
  } catch (const sa2va::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  if (!generated.empty()) fs::remove(generated);
  return 0;
}
