// safetensors checkpoints: a validating reader over mmap (one file, or shards listed in
// model.safetensors.index.json) and a writer. Tensors returned by the reader borrow the
// mapped memory (no copies); the mapping lives as long as any tensor from it.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace sa2va {

struct TensorInfo {
  DType dtype;
  Shape shape;
  size_t begin = 0, end = 0;  // byte range inside the data section
};

// One .safetensors file. open() validates the whole header: its length against the file size,
// well-formed JSON, known dtypes, shape × dtype size == byte range, every range inside the
// file, no two ranges overlapping. Any violation throws Error naming the file and tensor.
class SafetensorsFile {
 public:
  static std::shared_ptr<SafetensorsFile> open(const std::string& path);
  ~SafetensorsFile();

  const std::string& path() const { return path_; }
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool has(const std::string& name) const { return tensors_.count(name) != 0; }
  Tensor get(const std::string& name) const;  // throws if absent
  // Drops from the process the mapped pages lying wholly inside [data, data + bytes) when that
  // range is in this file's map (they are read again from the file if touched); false otherwise.
  bool release(const void* data, size_t bytes) const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  const char* data_ = nullptr;  // start of the data section
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
  std::weak_ptr<SafetensorsFile> self_;
};

// All weights of a model folder: model.safetensors, or the shards named by
// model.safetensors.index.json (every shard must exist and hold the tensors it is listed for).
class Checkpoint {
 public:
  static Checkpoint open(const std::string& model_dir);
  bool has(const std::string& name) const { return where_.count(name) != 0; }
  Tensor get(const std::string& name) const;
  const TensorInfo& info(const std::string& name) const;
  // The metadata value under `key` of the file holding tensor `name` ("" when absent).
  std::string file_metadata(const std::string& name, const std::string& key) const;
  std::vector<std::string> names() const;
  const std::string& dir() const { return dir_; }
  // For a tensor viewing this checkpoint's files whose contents were copied (converted, fused,
  // quantized): drops its resident pages, so that the process keeps only the copy in memory. A
  // no-op for any other tensor.
  void release(const Tensor& t) const;

 private:
  std::string dir_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, size_t> where_;  // tensor name -> index in files_
};

// Streaming writer for checkpoints larger than memory: the header (names, dtypes, shapes) is
// written first, then each tensor's bytes in the declared order through write_next().
class SafetensorsWriter {
 public:
  struct Entry {
    std::string name;
    DType dtype;
    Shape shape;
  };
  SafetensorsWriter(const std::string& path, const std::vector<Entry>& entries,
                    const std::map<std::string, std::string>& metadata = {});
  ~SafetensorsWriter();
  void write_next(const Tensor& t);  // must match the next entry's dtype and shape
  void close();                      // checks that every entry was written

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Writes tensors (any dtype, contiguous or not) in the given order with optional metadata: into
// `path`.partial, renamed to `path` once complete, so a failed write (a full disk) leaves an earlier
// file as it was and no partial one.
void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace sa2va
