#include "core/allocator.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include "core/block_pool.h"
#include "core/error.h"

namespace sa2va {
namespace {

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kPoolLargeBuffers = false;  // keep AddressSanitizer's guard zones around every buffer
#else
constexpr bool kPoolLargeBuffers = true;
#endif

class CpuAllocator final : public Allocator {
 public:
  Device device() const override { return Device::cpu(); }

  std::shared_ptr<void> allocate(size_t bytes) override {
    allocations_.fetch_add(1, std::memory_order_relaxed);
    if (kPoolLargeBuffers && bytes >= block_pool::kMinBytes) return block_pool::acquire(bytes);
    const size_t rounded = (bytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded ? rounded : 64);
    if (!p) throw Error("out of memory allocating " + std::to_string(bytes) + " bytes");
    return std::shared_ptr<void>(p, std::free);
  }

  void end_of_period() override { block_pool::end_of_period(); }
  // Idle pooled blocks are unmapped; the heap's freed small allocations go back as well (glibc keeps
  // them resident otherwise).
  void release_idle() override {
    block_pool::release_idle();
#if defined(__GLIBC__)
    malloc_trim(0);
#endif
  }
  uint64_t allocations() const override { return allocations_.load(std::memory_order_relaxed); }
  bool host_addressable() const override { return true; }

 private:
  std::atomic<uint64_t> allocations_{0};
};

std::mutex registry_mutex;
Allocator* cuda_stand_in = nullptr;
thread_local Device thread_device;
thread_local bool thread_kernels_on_host = true;

}  // namespace

#if SA2VA_WITH_CUDA
namespace cuda {
Allocator& builtin_allocator(int index);  // ops/cuda/runtime.cpp
}
bool cuda_built() { return true; }
#else
bool cuda_built() { return false; }
#endif

void Allocator::copy_from_host(void* device_dst, const void* host_src, size_t bytes) {
  if (bytes) std::memcpy(device_dst, host_src, bytes);
}
void Allocator::copy_to_host(void* host_dst, const void* device_src, size_t bytes) {
  if (bytes) std::memcpy(host_dst, device_src, bytes);
}
void Allocator::copy_within(void* device_dst, const void* device_src, size_t bytes) {
  if (bytes) std::memcpy(device_dst, device_src, bytes);
}
void Allocator::fill_zero(void* device_dst, size_t bytes) {
  if (bytes) std::memset(device_dst, 0, bytes);
}

Device current_device() { return thread_device; }
bool kernels_run_on_host() { return thread_kernels_on_host; }

DeviceScope::DeviceScope(Device device) : previous_(thread_device), previous_on_host_(thread_kernels_on_host) {
  bool on_host = true;
  if (!device.is_cpu()) {
    Allocator& a = allocator_for(device);
    a.make_current(device);
    on_host = a.host_addressable();
  }
  thread_device = device;
  thread_kernels_on_host = on_host;
}

DeviceScope::~DeviceScope() {
  thread_device = previous_;
  thread_kernels_on_host = previous_on_host_;
  if (!previous_.is_cpu()) {
    try {
      allocator_for(previous_).make_current(previous_);
    } catch (...) {  // entered successfully before: nothing new can be reported from a destructor
    }
  }
}

std::string Device::name() const {
  return is_cpu() ? std::string("cpu") : "cuda:" + std::to_string(index);
}

Device parse_device(const std::string& text) {
  if (text == "cpu") return Device::cpu();
  if (text == "cuda") return Device::cuda(0);
  if (text.rfind("cuda:", 0) == 0 && text.size() > 5 && text.size() <= 7 &&
      text.find_first_not_of("0123456789", 5) == std::string::npos)
    return Device::cuda(std::stoi(text.substr(5)));
  throw Error("unknown device '" + text + "' (expected cpu, cuda or cuda:N)");
}

Allocator& allocator_for(Device device) {
  static CpuAllocator* cpu = new CpuAllocator;  // never destroyed: tensors may die during static destruction
  if (device.is_cpu()) return *cpu;
  {
    std::lock_guard<std::mutex> lock(registry_mutex);
    if (cuda_stand_in) return *cuda_stand_in;
  }
#if SA2VA_WITH_CUDA
  return cuda::builtin_allocator(device.index);
#else
  throw Error("device " + device.name() + " is not available: this build of sa2va has no CUDA backend "
              "(configure with -DSA2VA_CUDA=ON)");
#endif
}

void register_allocator(DeviceType type, Allocator* allocator) {
  check(type != DeviceType::CPU, "the CPU allocator is built in and cannot be replaced");
  std::lock_guard<std::mutex> lock(registry_mutex);
  cuda_stand_in = allocator;
}

}  // namespace sa2va
