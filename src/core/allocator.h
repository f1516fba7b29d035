// Per-device memory allocators. Every tensor's storage comes from the allocator of its device.
//
// CPU: small buffers from the aligned heap; large ones (block_pool::kMinBytes and more) from the
// block pool (core/block_pool.h), which recycles mapped blocks across video frames.
// CUDA (built in with SA2VA_CUDA): a stream-ordered pool per GPU (src/ops/cuda/runtime.h). Tests may
// stand in another allocator for a device type (register_allocator). Asking for a device this build
// has no backend for is an Error naming it.
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

  // Copies between this device's memory and the host, and within the device. They are ordered
  // after the calling thread's earlier kernels on the device; the ones into host memory return
  // when the bytes are there. The defaults are memcpy (host-addressable memory).
  virtual void copy_from_host(void* device_dst, const void* host_src, size_t bytes);
  virtual void copy_to_host(void* host_dst, const void* device_src, size_t bytes);
  virtual void copy_within(void* device_dst, const void* device_src, size_t bytes);
  // Sets `bytes` bytes of this device's memory to zero, ordered as the copies (memset by default).
  virtual void fill_zero(void* device_dst, size_t bytes);
  // Waits until the calling thread's queued work on this device is done (results made on one
  // request's stream and read by others: weights at load, shared caches).
  virtual void synchronize() {}
  // Makes `device` (of this allocator's type) the calling thread's device for the backend (DeviceScope).
  virtual void make_current(Device /*device*/) {}
  // True when this memory is host memory that the CPU kernels can work on: the CPU, and a stand-in
  // device of the tests that runs the CPU kernels on memory marked as another device's (so that
  // any host access to it by model code is caught as on a real GPU).
  virtual bool host_addressable() const { return false; }
};

// The allocator of `device`; throws Error when this build has no backend for it.
Allocator& allocator_for(Device device);

// Stands `allocator` in for a non-CPU device type (tests), or, with nullptr, goes back to the
// built-in backend (or to none). The allocator must outlive its use.
void register_allocator(DeviceType type, Allocator* allocator);

}  // namespace sa2va
