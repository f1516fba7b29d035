// Large buffers (tensors and operator scratch of kMinBytes and more) come from a pool of blocks
// mapped straight from the system and recycled.
//
// Why: a video repeats the same large allocations every frame. Handed to malloc they either page
// fault afresh each time (mmap'd chunks) or fragment the heap so that the peak ratchets up over
// thousands of frames. Here a freed block waits, idle, for the next request it can serve (the
// smallest idle block of at least the size and at most 4x it: its pages are resident already, so
// reusing it costs no new memory). Blocks that stayed idle through a whole period (a video frame:
// the tracker calls end_of_period() after each) are unmapped, and so is every idle block when
// release_idle() is called (the end of every request, and when a model is destroyed). A steady
// per-frame loop therefore reuses the same blocks: no page faults, a flat peak.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

namespace sa2va::block_pool {

constexpr size_t kMinBytes = size_t{256} << 10;
// The size of a transparent huge page on x86-64: blocks this large are marked for huge pages (and the
// weight arena, core/weight_arena.h, aligns its chunks to it).
constexpr size_t kHugePageBytes = size_t{2} << 20;

// A 64-byte aligned block of at least `bytes` (>= kMinBytes) bytes, returned to the pool when the
// last owner lets go. Throws Error when the system has no memory left.
std::shared_ptr<void> acquire(size_t bytes);

// Marks the end of a period of work that repeats (one video frame): unmaps the blocks that were
// idle during all of the period that just ended.
void end_of_period();

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
