// Large buffers (tensors and operator scratch of kMinBytes and more) come from a pool of blocks
// mapped straight from the system and recycled.
//
// Why: a video repeats the same large allocations every frame. Handed to malloc they either page
// fault afresh each time (mmap'd chunks) or fragment the heap so that the peak ratchets up over
// thousands of frames. Here a freed block waits, idle, for the next request it can serve (the
// smallest idle block of at least the size and at most 4x it: its pages are resident already, so
// reusing it costs no new memory) and is unmapped once kMaxIdleAcquisitions other blocks were
// handed out without it being reused (a video frame takes ~170), or when release_idle() is called
// (the end of every request). A steady per-frame loop therefore reuses the same blocks: no page
// faults, a flat peak.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

namespace sa2va::block_pool {

constexpr size_t kMinBytes = size_t{256} << 10;
constexpr uint64_t kMaxIdleAcquisitions = 200;

// A 64-byte aligned block of at least `bytes` (>= kMinBytes) bytes, returned to the pool when the
// last owner lets go. Throws Error when the system has no memory left.
std::shared_ptr<void> acquire(size_t bytes);

// Unmaps every idle block.
void release_idle();

struct Stats {
  size_t mapped_bytes = 0;  // all blocks, in use or idle
  size_t idle_bytes = 0;
  size_t idle_blocks = 0;
  size_t peak_mapped_bytes = 0;
  uint64_t acquisitions = 0;
};
Stats stats();

}  // namespace sa2va::block_pool
