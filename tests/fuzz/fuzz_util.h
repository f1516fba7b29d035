// Shared pieces of the libFuzzer targets: splitting one input into parts and a private scratch
// folder for the readers that take paths.
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "models/make_model.h"

namespace sa2va::fuzz {

// Parts of one input, separated by this line; the seeds use it, and mutations may add or drop it.
inline constexpr std::string_view kPartSeparator = "\n--part--\n";

inline std::vector<std::string> split_parts(const uint8_t* data, size_t size, size_t max_parts) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> parts;
  size_t begin = 0;
  while (parts.size() + 1 < max_parts) {
    const size_t at = input.find(kPartSeparator, begin);
    if (at == std::string_view::npos) break;
    parts.emplace_back(input.substr(begin, at - begin));
    begin = at + kPartSeparator.size();
  }
  parts.emplace_back(input.substr(begin));
  return parts;
}

// One folder per fuzzing process, emptied before each input that uses it.
inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir = [] {
    std::string pattern = (std::filesystem::temp_directory_path() / "sa2va-fuzz-XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) std::abort();
    std::atexit([] { std::error_code ec; std::filesystem::remove_all(scratch_dir(), ec); });
    return std::filesystem::path(pattern);
  }();
  return dir;
}

// The folder of the model the model-using targets load: $SA2VA_FUZZ_MODEL, else a tiny random-weight
// model written once into the scratch folder (those targets never clear it).
inline std::string tiny_model_dir() {
  if (const char* given = std::getenv("SA2VA_FUZZ_MODEL"); given != nullptr && *given != '\0') return given;
  const std::string dir = (scratch_dir() / "tiny-model").string();
  MakeModelOptions options;
  options.preset = "tiny";
  options.out_dir = dir;
  make_model(options);
  return dir;
}

inline void clear_scratch() {
  for (const auto& entry : std::filesystem::directory_iterator(scratch_dir())) std::filesystem::remove_all(entry.path());
}

inline void write_file(const std::filesystem::path& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

}  // namespace sa2va::fuzz
