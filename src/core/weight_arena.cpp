#include "core/weight_arena.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "core/block_pool.h"
#include "core/error.h"

namespace sa2va {
namespace {

using block_pool::kHugePageBytes;
constexpr size_t kChunkBytes = size_t{64} << 20;
constexpr size_t kAlignment = 64;

// `bytes` (a multiple of 2 MiB) mapped at a 2 MiB boundary: a larger mapping trimmed at both ends.
std::shared_ptr<void> map_chunk(size_t bytes) {
  void* raw = mmap(nullptr, bytes + kHugePageBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED)
    throw Error("out of memory: cannot map " + std::to_string(bytes >> 20) + " MiB for weight matrices");
  const uintptr_t start = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t aligned = (start + kHugePageBytes - 1) & ~(kHugePageBytes - 1);
  if (aligned > start) munmap(raw, aligned - start);
  const uintptr_t end = start + bytes + kHugePageBytes;
  if (end > aligned + bytes) munmap(reinterpret_cast<void*>(aligned + bytes), end - (aligned + bytes));
  void* chunk = reinterpret_cast<void*>(aligned);
  madvise(chunk, bytes, MADV_HUGEPAGE);
  return std::shared_ptr<void>(chunk, [bytes](void* p) { munmap(p, bytes); });
}

}  // namespace

Tensor WeightArena::empty(const Shape& shape, DType dtype) {
  const size_t bytes = std::max<size_t>(static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype), 1);
  const size_t padded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
  if (padded > capacity_ - used_) {
    const size_t chunk_bytes = std::max(kChunkBytes, (padded + kHugePageBytes - 1) / kHugePageBytes * kHugePageBytes);
    std::shared_ptr<void> chunk = map_chunk(chunk_bytes);
    if (padded > kChunkBytes / 2) {  // a large matrix gets a chunk of its own; the current one stays open
      return Tensor::borrow(chunk.get(), shape, dtype, chunk);
    }
    chunk_ = std::move(chunk);
    used_ = 0;
    capacity_ = chunk_bytes;
  }
  void* data = static_cast<uint8_t*>(chunk_.get()) + used_;
  used_ += padded;
  return Tensor::borrow(data, shape, dtype, chunk_);
}

}  // namespace sa2va
