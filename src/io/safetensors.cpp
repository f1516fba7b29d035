#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace sa2va {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {
// The most a header may claim; real headers are well under 10 MB.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

std::string where(const std::string& path, const std::string& name) {
  return path + ": tensor '" + name + "': ";
}
}  // namespace

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  std::shared_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw Error(path + ": cannot open (" + std::strerror(errno) + ")");
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(path + ": not a regular file");
  }
  const size_t size = static_cast<size_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    throw Error(path + ": truncated safetensors file (" + std::to_string(size) + " bytes, no header)");
  }
  void* map = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) throw Error(path + ": cannot map file (" + std::strerror(errno) + ")");
  file->map_ = map;
  file->map_size_ = size;

  uint64_t header_len = 0;
  std::memcpy(&header_len, map, 8);  // little-endian on every supported host
  if (header_len > kMaxHeaderBytes || header_len > size - 8)
    throw Error(path + ": header length " + std::to_string(header_len) + " exceeds the file size " +
                std::to_string(size) + " (truncated or not a safetensors file)");
  const char* header = static_cast<const char*>(map) + 8;
  file->data_ = header + header_len;
  const size_t data_size = size - 8 - header_len;

  json j;
  try {
    j = json::parse(header, header + header_len);
  } catch (const json::exception& e) {  // syntax errors, and numbers out of range
    throw Error(path + ": malformed safetensors header JSON (" + e.what() + ")");
  }
  if (!j.is_object()) throw Error(path + ": safetensors header is not a JSON object");

  std::vector<std::pair<std::pair<size_t, size_t>, std::string>> ranges;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    if (name == "__metadata__") {
      if (!it->is_object()) throw Error(path + ": __metadata__ is not an object");
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string()) throw Error(path + ": __metadata__ value '" + m.key() + "' is not a string");
        file->metadata_[m.key()] = m->get<std::string>();
      }
      continue;
    }
    const json& e = *it;
    if (!e.is_object() || !e.contains("dtype") || !e.contains("shape") || !e.contains("data_offsets"))
      throw Error(where(path, name) + "entry needs dtype, shape and data_offsets");
    TensorInfo info{};
    if (!e["dtype"].is_string() || !dtype_from_name(e["dtype"].get<std::string>(), &info.dtype))
      throw Error(where(path, name) + "unknown dtype " + e["dtype"].dump());
    if (!e["shape"].is_array()) throw Error(where(path, name) + "shape is not an array");
    uint64_t numel = 1;
    for (const json& d : e["shape"]) {
      if (!d.is_number_unsigned()) throw Error(where(path, name) + "shape has a non-integer or negative entry");
      uint64_t v = d.get<uint64_t>();
      if (v > (1ull << 40) || (v && numel > (1ull << 50) / v)) throw Error(where(path, name) + "shape too large");
      numel *= v;
      info.shape.push_back(static_cast<int64_t>(v));
    }
    const json& off = e["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      throw Error(where(path, name) + "data_offsets must be two non-negative integers");
    const uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
    if (begin > end) throw Error(where(path, name) + "data_offsets are reversed");
    if (end > data_size)
      throw Error(where(path, name) + "data range [" + std::to_string(begin) + ", " + std::to_string(end) +
                  ") lies outside the file's " + std::to_string(data_size) + " data bytes (truncated file?)");
    if (numel * dtype_size(info.dtype) != end - begin)
      throw Error(where(path, name) + "shape " + shape_str(info.shape) + " x " + dtype_name(info.dtype) + " needs " +
                  std::to_string(numel * dtype_size(info.dtype)) + " bytes but the range holds " +
                  std::to_string(end - begin));
    info.begin = begin;
    info.end = end;
    ranges.push_back({{begin, end}, name});
    file->tensors_[name] = info;
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].first.first < ranges[i - 1].first.second)
      throw Error(where(path, ranges[i].second) + "data range overlaps tensor '" + ranges[i - 1].second + "'");
  }
  file->self_ = file;
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) munmap(map_, map_size_);
}

Tensor SafetensorsFile::get(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) throw Error(path_ + ": no tensor named '" + name + "'");
  const TensorInfo& info = it->second;
  std::shared_ptr<const SafetensorsFile> keep = self_.lock();
  void* data = const_cast<char*>(data_ + info.begin);
  // Tensors are read-only views of the map.
  Tensor t = Tensor::borrow(data, info.shape, info.dtype, std::const_pointer_cast<SafetensorsFile>(keep));
  // The format does not align tensors; elements read in place must be aligned to their size.
  if (reinterpret_cast<uintptr_t>(data) % dtype_size(info.dtype) != 0) return t.clone();
  return t;
}

Checkpoint Checkpoint::open(const std::string& model_dir) {
  Checkpoint c;
  c.dir_ = model_dir;
  const fs::path dir(model_dir);
  const fs::path index = dir / "model.safetensors.index.json";
  const fs::path single = dir / "model.safetensors";
  if (fs::exists(index)) {
    json j;
    std::ifstream in(index);
    try {
      j = json::parse(in);
    } catch (const json::exception& e) {  // syntax errors, and numbers out of range
      throw Error(index.string() + ": malformed JSON (" + e.what() + ")");
    }
    if (!j.contains("weight_map") || !j["weight_map"].is_object())
      throw Error(index.string() + ": missing \"weight_map\" object");
    std::map<std::string, size_t> shard_index;
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      if (!it->is_string()) throw Error(index.string() + ": weight_map entry '" + it.key() + "' is not a file name");
      const std::string shard = it->get<std::string>();
      if (shard.find('/') != std::string::npos || shard.find("..") != std::string::npos)
        throw Error(index.string() + ": shard name '" + shard + "' must be a plain file name");
      if (!shard_index.count(shard)) {
        const fs::path p = dir / shard;
        if (!fs::exists(p)) throw Error(index.string() + ": missing shard " + p.string());
        shard_index[shard] = c.files_.size();
        c.files_.push_back(SafetensorsFile::open(p.string()));
      }
      const size_t f = shard_index[shard];
      if (!c.files_[f]->has(it.key()))
        throw Error(c.files_[f]->path() + ": tensor '" + it.key() + "' listed in the index is not in this shard");
      c.where_[it.key()] = f;
    }
  } else if (fs::exists(single)) {
    c.files_.push_back(SafetensorsFile::open(single.string()));
    for (const auto& [name, info] : c.files_[0]->tensors()) c.where_[name] = 0;
  } else {
    throw Error(model_dir + ": no model.safetensors or model.safetensors.index.json");
  }
  return c;
}

bool SafetensorsFile::release(const void* data, size_t bytes) const {
  const auto* begin = static_cast<const char*>(data);
  const auto* map = static_cast<const char*>(map_);
  if (begin < map || bytes > map_size_ || begin > map + (map_size_ - bytes)) return false;
  static const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t first = (reinterpret_cast<uintptr_t>(begin) + page - 1) & ~(page - 1);
  const uintptr_t last = (reinterpret_cast<uintptr_t>(begin) + bytes) & ~(page - 1);
  // A private read-only file map never written: the pages come back from the file unchanged.
  if (first < last) madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
  return true;
}

void Checkpoint::release(const Tensor& t) const {
  if (!t.defined() || !t.device().is_cpu() || t.nbytes() == 0) return;
  for (const auto& file : files_)
    if (file->release(t.raw(), t.nbytes())) return;
}

Tensor Checkpoint::get(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) throw Error(dir_ + ": checkpoint has no tensor named '" + name + "'");
  return files_[it->second]->get(name);
}

const TensorInfo& Checkpoint::info(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) throw Error(dir_ + ": checkpoint has no tensor named '" + name + "'");
  return files_[it->second]->tensors().at(name);
}

std::string Checkpoint::file_metadata(const std::string& name, const std::string& key) const {
  auto it = where_.find(name);
  if (it == where_.end()) throw Error(dir_ + ": checkpoint has no tensor named '" + name + "'");
  const auto& metadata = files_[it->second]->metadata();
  const auto value = metadata.find(key);
  return value == metadata.end() ? std::string() : value->second;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  for (const auto& [name, f] : where_) out.push_back(name);
  return out;
}

struct SafetensorsWriter::Impl {
  std::string path;
  std::ofstream out;
  std::vector<Entry> entries;
  size_t next = 0;
};

SafetensorsWriter::SafetensorsWriter(const std::string& path, const std::vector<Entry>& entries,
                                     const std::map<std::string, std::string>& metadata)
    : impl_(std::make_unique<Impl>()) {
  impl_->path = path;
  impl_->entries = entries;
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  size_t offset = 0;
  for (const Entry& e : entries) {
    check(e.name != "__metadata__", path + ": '__metadata__' is not a valid tensor name");
    check(!header.contains(e.name), path + ": duplicate tensor name '" + e.name + "'");
    const size_t bytes = static_cast<size_t>(shape_numel(e.shape)) * dtype_size(e.dtype);
    header[e.name] = {{"dtype", dtype_name(e.dtype)}, {"shape", e.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string h = header.dump();
  while ((h.size() + 8) % 8) h.push_back(' ');  // keep the data section 8-byte aligned
  impl_->out.open(path, std::ios::binary | std::ios::trunc);
  if (!impl_->out) throw Error(path + ": cannot open for writing");
  const uint64_t len = h.size();
  impl_->out.write(reinterpret_cast<const char*>(&len), 8);
  impl_->out.write(h.data(), static_cast<std::streamsize>(h.size()));
}

SafetensorsWriter::~SafetensorsWriter() = default;

void SafetensorsWriter::write_next(const Tensor& t) {
  check(impl_->next < impl_->entries.size(), impl_->path + ": more tensors written than declared");
  const Entry& e = impl_->entries[impl_->next];
  check(t.dtype() == e.dtype && t.shape() == e.shape,
        impl_->path + ": tensor '" + e.name + "' written as " + dtype_name(t.dtype()) + " " + shape_str(t.shape()) +
            ", declared " + dtype_name(e.dtype) + " " + shape_str(e.shape));
  const Tensor c = t.contiguous();
  impl_->out.write(static_cast<const char*>(c.raw()), static_cast<std::streamsize>(c.nbytes()));
  if (!impl_->out) throw Error(impl_->path + ": write failed (disk full?)");
  ++impl_->next;
}

void SafetensorsWriter::close() {
  check(impl_->next == impl_->entries.size(), impl_->path + ": only " + std::to_string(impl_->next) + " of " +
                                                   std::to_string(impl_->entries.size()) + " tensors were written");
  impl_->out.close();
  if (!impl_->out) throw Error(impl_->path + ": write failed");
}

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<SafetensorsWriter::Entry> entries;
  for (const auto& [name, t] : tensors) entries.push_back({name, t.dtype(), t.shape()});
  const std::string partial = path + ".partial";
  try {
    SafetensorsWriter writer(partial, entries, metadata);
    for (const auto& [name, t] : tensors) writer.write_next(t);
    writer.close();
  } catch (...) {
    std::remove(partial.c_str());
    throw;
  }
  check(std::rename(partial.c_str(), path.c_str()) == 0, path + ": cannot write (renaming the finished file failed)");
}

}  // namespace sa2va
