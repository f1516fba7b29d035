// Host memory for the weight matrices that decode streams every token, packed back to back in
// 2 MiB-aligned chunks with transparent huge pages requested (MADV_HUGEPAGE).
//
// Why: decode reads every matrix once per token; from 4 KiB pages a matrix of a few MB is
// hundreds of TLB misses, each a two-level page walk in a virtual machine. Measured on a 2-core
// VM (Q4_0 layer matrices of Sa2VA-1B): one core streamed them at 13.4-13.7 GB/s from 4 KiB pages
// and at 17.5-17.9 GB/s from 2 MiB pages; two cores at 24.5 and 26.8 GB/s (Q8_0: 26.5 and 30.1). The block
// pool maps each block at an arbitrary 4 KiB boundary, so a block of a few MB holds at most one
// whole huge page; weights kept for a model's life need no recycling, so a bump arena packs them
// without gaps (at most the last, partly used huge page of a chunk is spare). Where the system
// grants no huge pages the memory is ordinary pages, nothing else changes.
#pragma once
#include <cstddef>
#include <memory>

#include "core/tensor.h"

namespace sa2va {

class WeightArena {
 public:
  // A new CPU tensor in the arena, 64-byte aligned, uninitialised. Its chunk stays mapped while any
  // tensor in it lives (the arena itself may go first). Throws Error when the system has no memory.
  Tensor empty(const Shape& shape, DType dtype);

 private:
  std::shared_ptr<void> chunk_;  // the chunk being filled
  size_t used_ = 0, capacity_ = 0;
};

}  // namespace sa2va
