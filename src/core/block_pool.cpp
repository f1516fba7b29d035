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
  uint64_t idle_since;  // the period in which it was released
};

struct Pool {
  std::mutex mutex;
  std::vector<IdleBlock> idle;  // a few dozen at most
  uint64_t acquisitions = 0;
  uint64_t period = 0;
  size_t mapped_bytes = 0;
  size_t peak_mapped_bytes = 0;
  size_t idle_bytes = 0;
};

Pool& pool() {
  static Pool* p = new Pool;  // never destroyed: blocks may be released during static destruction
  return *p;
}

void unmap_all(const std::vector<IdleBlock>& blocks) {
  for (const IdleBlock& b : blocks) munmap(b.data, b.bytes);
}

}  // namespace

std::shared_ptr<void> acquire(size_t bytes) {
  const size_t need = (std::max(bytes, kMinBytes) + kGranule - 1) / kGranule * kGranule;
  Pool& p = pool();
  void* data = nullptr;
  size_t block_bytes = need;
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
  }
  if (!data) {
    data = mmap(nullptr, need, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (data == MAP_FAILED)
      throw Error("out of memory: cannot map a buffer of " + std::to_string(need >> 20) + " MiB");
    // Transparent huge pages where the system grants them on request: a new block faults in 2 MiB at
    // a time and a large buffer read end to end walks fewer pages (the weight matrices decode
    // streams are packed into huge pages by the weight arena instead: core/weight_arena.h, as a
    // block holds a whole huge page only where its arbitrary 4 KiB start happens to allow one).
    // Nothing changes where THP is off.
    if (need >= kHugePageBytes) madvise(data, need, MADV_HUGEPAGE);
    std::lock_guard<std::mutex> lock(p.mutex);
    p.mapped_bytes += need;
    p.peak_mapped_bytes = std::max(p.peak_mapped_bytes, p.mapped_bytes);
  }
  return std::shared_ptr<void>(data, [block_bytes](void* released) {
    Pool& q = pool();
    std::lock_guard<std::mutex> lock(q.mutex);
    q.idle.push_back({released, block_bytes, q.period});
    q.idle_bytes += block_bytes;
  });
}

void end_of_period() {
  Pool& p = pool();
  std::vector<IdleBlock> stale;
  {
    std::lock_guard<std::mutex> lock(p.mutex);
    for (size_t i = 0; i < p.idle.size();) {
      if (p.idle[i].idle_since < p.period) {  // idle since before the period that just ended
        stale.push_back(p.idle[i]);
        p.idle_bytes -= p.idle[i].bytes;
        p.mapped_bytes -= p.idle[i].bytes;
        p.idle[i] = p.idle.back();
        p.idle.pop_back();
      } else {
        ++i;
      }
    }
    ++p.period;
  }
  unmap_all(stale);
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
  unmap_all(idle);
}

Stats stats() {
  Pool& p = pool();
  std::lock_guard<std::mutex> lock(p.mutex);
  return {p.mapped_bytes, p.idle_bytes, p.idle.size(), p.peak_mapped_bytes, p.acquisitions};
}

}  // namespace sa2va::block_pool
