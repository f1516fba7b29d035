#include "io/model_folder.h"

#include <filesystem>

#include "core/error.h"

namespace sa2va {
namespace fs = std::filesystem;

void write_model_folder(const std::string& model_dir, const std::string& out_dir,
                        const std::vector<SafetensorsWriter::Entry>& entries,
                        const std::function<Tensor(size_t)>& tensor_at,
                        const std::map<std::string, std::string>& metadata) {
  const fs::path in(model_dir), out(out_dir);
  check(fs::is_directory(in), model_dir + ": not a model folder");
  std::error_code ec;
  const bool created = !fs::exists(out);
  if (!created) {
    check(fs::is_directory(out), out_dir + ": exists and is not a folder");
    check(!fs::equivalent(out, in, ec), out_dir + ": the output folder must differ from the model folder");
    check(fs::is_empty(out), out_dir + ": the output folder is not empty");
  }
  fs::create_directories(out, ec);
  check(!ec && fs::is_directory(out), out_dir + ": cannot create the output folder");
  const fs::path partial = out / "model.safetensors.partial";
  try {
    SafetensorsWriter writer(partial.string(), entries, metadata);
    for (size_t i = 0; i < entries.size(); ++i) writer.write_next(tensor_at(i));
    writer.close();
    for (const auto& file : fs::directory_iterator(in)) {
      const std::string fname = file.path().filename().string();
      if (!file.is_regular_file() || file.path().extension() == ".safetensors" ||
          fname == "model.safetensors.index.json")
        continue;
      fs::copy_file(file.path(), out / fname, ec);
      check(!ec, (out / fname).string() + ": cannot copy " + file.path().string() + ": " + ec.message());
    }
    fs::rename(partial, out / "model.safetensors", ec);
    check(!ec, (out / "model.safetensors").string() + ": cannot write: " + ec.message());
  } catch (...) {
    if (created) fs::remove_all(out, ec);
    else fs::remove(partial, ec);
    throw;
  }
}

}  // namespace sa2va
