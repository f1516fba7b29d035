// A video given as a folder of frame images: any files (names and bytes) are either played
// frame by frame to the end, or refused with sa2va::Error naming the file.
// Input: files as "name\n--part--\nbytes", repeated.
#include "fuzz_util.h"
#include "io/video.h"
#include "sa2va/sa2va.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sa2va;
  const auto parts = fuzz::split_parts(data, size, 16);
  fuzz::clear_scratch();
  const auto dir = fuzz::scratch_dir() / "frames";
  std::filesystem::create_directory(dir);
  for (size_t i = 0; i + 1 < parts.size(); i += 2) {
    std::string name = parts[i];
    // Plain names inside the folder only (no separators, no "." or ".."), short enough to create.
    std::erase_if(name, [](char c) { return c == '/' || c == '\0'; });
    if (name.empty() || name == "." || name == ".." || name.size() > 64) continue;
    fuzz::write_file(dir / name, parts[i + 1]);
  }
  try {
    auto video = VideoSource::open(dir.string(), /*max_pixels=*/1'000'000);
    Image frame;
    int64_t played = 0;
    while (video->next(frame)) {
      if (frame.width <= 0 || frame.rgb.size() != static_cast<size_t>(frame.width) * frame.height * 3) std::abort();
      ++played;
    }
    if (played != video->frame_count()) std::abort();
    if (video->frame_count() > 0) (void)video->frame(video->frame_count() - 1);
  } catch (const Error&) {
  }
  return 0;
}
