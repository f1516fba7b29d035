#include "core/block_pool.h"

#include <sys/mman.h>

#include <algorithm>
#include <mutex>
#include <string>
#include <vector>

#include "core/error.h"

namespace sa2va::block_pool {
namespace {

constexpr size_t kGranule = size_t{64} << 10;  // block sizes are multiples of this

struct IdleBlock {
  void* data;
  size_t bytes;
  uint64_t idle_since;  // acquisition count when it was released
};

struct Pool {
  std::mutex mutex;
  std::vector<IdleBlock> idle;  // a few dozen at most
  uint64_t acquisitions = 0;
  size_t mapped_bytes = 0;
  size_t peak_mapped_bytes = 0;
  size_t idle_bytes = 0;
};

Pool& pool() {
  static Pool* p = new Pool;  // never destroyed: blocks may be released during static destruction
  return *p;
}

void unmap(void* data, size_t bytes) { munmap(data, bytes); }

// Removes idle blocks that were passed over for too long; returns them for unmapping outside the lock.
std::vector<IdleBlock> take_stale(Pool& p) {
  std::vector<IdleBlock> stale;
  for (size_t i = 0; i < p.idle.size();) {
    if (p.acquisitions - p.idle[i].idle_since > kMaxIdleAcquisitions) {
      stale.push_back(p.idle[i]);
      p.idle_bytes -= p.idle[i].bytes;
      p.mapped_bytes -= p.idle[i].bytes;
      p.idle[i] = p.idle.back();
      p.idle.pop_back();
    } else {
      ++i;
    }
  }
  return stale;
}

}  // namespace

std::shared_ptr<void> acquire(size_t bytes) {
  const size_t need = (std::max(bytes, kMinBytes) + kGranule - 1) / kGranule * kGranule;
  Pool& p = pool();
  void* data = nullptr;
  size_t block_bytes = need;
  std::vector<IdleBlock> stale;
  {
    std::lock_guard<std::mutex> lock(p.mutex);
    ++p.acquisitions;
    // The smallest idle block that fits without wasting more than an eighth.
    size_t best = p.idle.size();
    for (size_t i = 0; i < p.idle.size(); ++i) {
      const size_t b = p.idle[i].bytes;
      if (b >= need && b <= 4 * need && (best == p.idle.size() || b < p.idle[best].bytes)) best = i;
    }
    if (best < p.idle.size()) {
      data = p.idle[best].data;
      block_bytes = p.idle[best].bytes;
      p.idle_bytes -= block_bytes;
      p.idle[best] = p.idle.back();
      p.idle.pop_back();
    }
    stale = take_stale(p);
  }
  for (const IdleBlock& b : stale) unmap(b.data, b.bytes);
  if (!data) {
    data = mmap(nullptr, need, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (data == MAP_FAILED)
      throw Error("out of memory: cannot map a buffer of " + std::to_string(need >> 20) + " MiB");
    std::lock_guard<std::mutex> lock(p.mutex);
    p.mapped_bytes += need;
    p.peak_mapped_bytes = std::max(p.peak_mapped_bytes, p.mapped_bytes);
  }
  return std::shared_ptr<void>(data, [block_bytes](void* released) {
    Pool& q = pool();
    std::lock_guard<std::mutex> lock(q.mutex);
    q.idle.push_back({released, block_bytes, q.acquisitions});
    q.idle_bytes += block_bytes;
  });
}

void release_idle() {
  Pool& p = pool();
  std::vector<IdleBlock> idle;
  {
    std::lock_guard<std::mutex> lock(p.mutex);
    idle.swap(p.idle);
    p.mapped_bytes -= p.idle_bytes;
    p.idle_bytes = 0;
  }
  for (const IdleBlock& b : idle) unmap(b.data, b.bytes);
}

Stats stats() {
  Pool& p = pool();
  std::lock_guard<std::mutex> lock(p.mutex);
  return {p.mapped_bytes, p.idle_bytes, p.idle.size(), p.peak_mapped_bytes, p.acquisitions};
}

}  // namespace sa2va::block_pool
