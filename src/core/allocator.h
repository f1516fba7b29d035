// Per-device memory allocators. Every tensor's storage comes from the allocator of its device.
//
// CPU: small buffers from the aligned heap; large ones (block_pool::kMinBytes and more) from the
// block pool (core/block_pool.h), which recycles mapped blocks across video frames.
// Other devices register their allocator when their backend is built in; asking for a device
// that has none is an Error naming it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

#include "core/device.h"

namespace sa2va {

class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual Device device() const = 0;
  // At least `bytes` bytes, 64-byte aligned, freed when the last owner lets go. Throws Error when
  // the device has no memory left.
  virtual std::shared_ptr<void> allocate(size_t bytes) = 0;
  // The end of a period of work that repeats (one video frame): buffers idle during the whole
  // period may be returned to the system.
  virtual void end_of_period() {}
  // Returns every idle cached buffer to the system (end of a request, a model destroyed).
  virtual void release_idle() {}
  // Number of allocate() calls so far (tests check that a decode step allocates no tensor).
  virtual uint64_t allocations() const = 0;
};

// The allocator of `device`; throws Error when this build has no backend for it.
Allocator& allocator_for(Device device);

// Installs (or, with nullptr, removes) the allocator of a non-CPU device type. Backends call it
// once at start-up; tests use it to stand in a device. The allocator must outlive its use.
void register_allocator(DeviceType type, Allocator* allocator);

}  // namespace sa2va
