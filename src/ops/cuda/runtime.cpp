#include "ops/cuda/runtime.h"

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "core/error.h"

namespace sa2va::cuda {
namespace {

constexpr int kMaxDevices = 16;
constexpr int kMinComputeMajor = 8;  // bf16 tensor cores and the kernels' sm_80+ builds

std::string mib(size_t bytes) { return std::to_string(bytes >> 20) + " MiB"; }

std::string version_text(int v) { return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10); }

int current_index() {
  int index = 0;
  if (cudaGetDevice(&index) != cudaSuccess) return 0;
  return index;
}

// The outcome of asking the driver for devices, once per process.
struct Availability {
  int count = 0;
  std::string reason;
};

const Availability& availability() {
  static const Availability a = [] {
    Availability r;
    int driver = 0;
    cudaDriverGetVersion(&driver);
    int runtime = 0;
    cudaRuntimeGetVersion(&runtime);
    const cudaError_t status = cudaGetDeviceCount(&r.count);
    if (status == cudaSuccess && r.count > 0) return r;
    r.count = 0;
    if (status == cudaErrorInsufficientDriver || status == cudaErrorNoDevice) cudaGetLastError();
    if (driver == 0)
      r.reason = "no NVIDIA driver is installed (libcuda could not be loaded); this build needs a driver for CUDA " +
                 version_text(runtime) + " or newer";
    else if (status == cudaErrorInsufficientDriver || driver < runtime)
      r.reason = "the NVIDIA driver supports CUDA " + version_text(driver) + ", older than this build's CUDA " +
                 version_text(runtime) + ": update the driver";
    else if (status == cudaErrorNoDevice || status == cudaSuccess)
      r.reason = "the driver sees no CUDA-capable GPU";
    else
      r.reason = std::string("the driver could not list GPUs: ") + cudaGetErrorString(status) + " (" +
                 cudaGetErrorName(status) + ")";
    return r;
  }();
  return a;
}

// Per thread and GPU: its stream and scratch buffers (kept for the thread's lifetime; the streams
// are never destroyed, since tensors freed later still name them).
struct ThreadState {
  std::array<cudaStream_t, kMaxDevices> streams{};
  struct Scratch {
    void* ptr = nullptr;
    size_t bytes = 0;
    int device = -1;
  };
  std::array<Scratch, 4> scratch{};
  ~ThreadState() {
    for (auto& s : scratch)
      if (s.ptr) cudaFree(s.ptr);
  }
};
thread_local ThreadState thread_state;

class CudaAllocator final : public Allocator {
 public:
  explicit CudaAllocator(int index) : index_(index) {}
  Device device() const override { return Device::cuda(index_); }

  std::shared_ptr<void> allocate(size_t bytes) override {
    const int previous = current_index();
    ensure_pool();
    if (current_index() != index_) check(cudaSetDevice(index_), "selecting the device");
    const cudaStream_t s = stream();
    void* p = nullptr;
    const cudaError_t status = cudaMallocAsync(&p, bytes ? bytes : 1, s);
    if (current_index() != previous) cudaSetDevice(previous);
    if (status == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      size_t free_bytes = 0, total = 0;
      cudaMemGetInfo(&free_bytes, &total);
      throw Error("cuda:" + std::to_string(index_) + ": out of GPU memory allocating " + mib(bytes) + " (" +
                  mib(free_bytes) + " free of " + mib(total) + ")");
    }
    check(status, "allocating GPU memory");
    allocations_.fetch_add(1, std::memory_order_relaxed);
    return std::shared_ptr<void>(p, [s](void* q) { cudaFreeAsync(q, s); });
  }

  // GPU memory stays in the pool for the next request, as PyTorch's caching allocator keeps it: the
  // CPU's reason to hand buffers back between stages (resident memory) does not apply, and trimming
  // would cost every request fresh allocations.
  void release_idle() override {}

  uint64_t allocations() const override { return allocations_.load(std::memory_order_relaxed); }

  void copy_from_host(void* device_dst, const void* host_src, size_t bytes) override {
    if (!bytes) return;
    const cudaStream_t s = stream();
    check(cudaMemcpyAsync(device_dst, host_src, bytes, cudaMemcpyHostToDevice, s), "copying to the GPU");
    // The host buffer may be freed as soon as this returns.
    check(cudaStreamSynchronize(s), "copying to the GPU");
  }
  void copy_to_host(void* host_dst, const void* device_src, size_t bytes) override {
    if (!bytes) return;
    const cudaStream_t s = stream();
    check(cudaMemcpyAsync(host_dst, device_src, bytes, cudaMemcpyDeviceToHost, s), "copying from the GPU");
    check(cudaStreamSynchronize(s), "copying from the GPU");
  }
  void copy_within(void* device_dst, const void* device_src, size_t bytes) override {
    if (bytes) {
      check(cudaMemcpyAsync(device_dst, device_src, bytes, cudaMemcpyDeviceToDevice, stream()), "copying on the GPU");
    }
  }
  void fill_zero(void* device_dst, size_t bytes) override {
    if (bytes) check(cudaMemsetAsync(device_dst, 0, bytes, stream()), "clearing GPU memory");
  }
  void make_current(Device device) override { use_device(device.index); }
  void synchronize() override {
    const int previous = current_index();
    if (previous != index_) check(cudaSetDevice(index_), "selecting the device");
    check(cudaStreamSynchronize(stream()), "running kernels");
    if (previous != index_) cudaSetDevice(previous);
  }

 private:
  // Freed memory stays in the device's pool for the next request (a cache, as PyTorch's); a scratch
  // buffer that cannot be allocated outside the pool trims it. Memory freed on one stream is not
  // handed to another stream before the free has run (no opportunistic reuse): a tensor is made,
  // used and dropped by one request's thread, and weights, made at load, are synchronised before
  // any request reads them.
  void ensure_pool() {
    std::call_once(pool_once_, [this] {
      use_device(index_);
      cudaMemPool_t pool = nullptr;
      check(cudaDeviceGetDefaultMemPool(&pool, index_), "opening the memory pool");
      uint64_t keep = UINT64_MAX;
      check(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep), "configuring the memory pool");
      int no = 0;
      check(cudaMemPoolSetAttribute(pool, cudaMemPoolReuseAllowOpportunistic, &no), "configuring the memory pool");
    });
  }

  int index_;
  std::once_flag pool_once_;
  std::atomic<uint64_t> allocations_{0};
};

}  // namespace

void check(cudaError_t status, const char* what) {
  if (status == cudaSuccess) return;
  cudaGetLastError();  // clear a non-sticky error so that later calls are not blamed
  throw Error("cuda:" + std::to_string(current_index()) + ": " + what + ": " + cudaGetErrorString(status) + " (" +
              cudaGetErrorName(status) + ")");
}

void check_launch(const char* kernel) {
  const cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess)
    throw Error("cuda:" + std::to_string(current_index()) + ": kernel " + kernel + " failed to launch: " +
                cudaGetErrorString(status) + " (" + cudaGetErrorName(status) + ")");
}

int device_count() { return availability().count; }
std::string unavailable_reason() { return availability().reason; }

DeviceProperties properties(int index) {
  cudaDeviceProp p{};
  check(cudaGetDeviceProperties(&p, index), "reading the device properties");
  DeviceProperties d;
  d.name = p.name;
  d.major = p.major;
  d.minor = p.minor;
  d.total_bytes = p.totalGlobalMem;
  d.multiprocessors = p.multiProcessorCount;
  return d;
}

void use_device(int index) {
  const std::string name = "cuda:" + std::to_string(index);
  const Availability& a = availability();
  if (a.count == 0) throw Error(name + " is not available: " + a.reason);
  if (index < 0 || index >= a.count)
    throw Error(name + " is not available: the driver sees " + std::to_string(a.count) + " GPU" +
                (a.count == 1 ? "" : "s") + " (cuda:0" + (a.count > 1 ? "..cuda:" + std::to_string(a.count - 1) : "") +
                ")");
  if (index >= kMaxDevices) {
    throw Error(name + ": more than " + std::to_string(kMaxDevices) + " GPUs are not supported");
  }
  static std::array<std::once_flag, kMaxDevices> checked;
  static std::array<std::string, kMaxDevices> problem;
  std::call_once(checked[static_cast<size_t>(index)], [&] {
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, index) != cudaSuccess) {
      cudaGetLastError();
      problem[static_cast<size_t>(index)] = "its properties could not be read";
    } else if (p.major < kMinComputeMajor) {
      problem[static_cast<size_t>(index)] = std::string(p.name) + " has compute capability " + std::to_string(p.major) +
                                            "." + std::to_string(p.minor) + "; sa2va needs 8.0 or newer (bf16)";
    }
  });
  const std::string& why = problem[static_cast<size_t>(index)];
  if (!why.empty()) throw Error(name + " cannot be used: " + why);
  check(cudaSetDevice(index), "selecting the device");
}

cudaStream_t stream() {
  const int index = current_index();
  cudaStream_t& s = thread_state.streams[static_cast<size_t>(index)];
  if (!s) check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "creating a stream");
  return s;
}

void synchronize() { check(cudaStreamSynchronize(stream()), "running kernels"); }

void memory_info(size_t* free_bytes, size_t* total_bytes) {
  check(cudaMemGetInfo(free_bytes, total_bytes), "reading the memory use");
}

void* scratch(size_t bytes, int slot) {
  auto& s = thread_state.scratch.at(static_cast<size_t>(slot));
  const int device = current_index();
  if (s.ptr && s.bytes >= bytes && s.device == device) return s.ptr;
  if (s.ptr) {
    // The old buffer's stream (on the GPU it was made on) may still read it.
    if (s.device != device) cudaSetDevice(s.device);
    cudaStreamSynchronize(thread_state.streams[static_cast<size_t>(s.device)]);
    cudaFree(s.ptr);
    if (s.device != device) cudaSetDevice(device);
    s.ptr = nullptr;
  }
  const size_t rounded = (bytes + (1u << 20) - 1) & ~size_t((1u << 20) - 1);
  cudaError_t status = cudaMalloc(&s.ptr, rounded);
  if (status == cudaErrorMemoryAllocation) {
    // Memory freed into the stream-ordered pool stays reserved there: hand it back and try again.
    cudaGetLastError();
    cudaMemPool_t pool = nullptr;
    if (cudaDeviceGetDefaultMemPool(&pool, device) == cudaSuccess) {
      cudaDeviceSynchronize();
      cudaMemPoolTrimTo(pool, 0);
    }
    status = cudaMalloc(&s.ptr, rounded);
  }
  if (status == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    s.ptr = nullptr;
    throw Error("cuda:" + std::to_string(device) + ": out of GPU memory for a " + mib(bytes) + " scratch buffer");
  }
  check(status, "allocating a scratch buffer");
  s.bytes = rounded;
  s.device = device;
  return s.ptr;
}

Allocator& builtin_allocator(int index) {
  if (index < 0 || index >= kMaxDevices)
    throw Error("cuda:" + std::to_string(index) + " is not available: device indices go up to " +
                std::to_string(kMaxDevices - 1));
  static std::array<CudaAllocator*, kMaxDevices> allocators = [] {
    std::array<CudaAllocator*, kMaxDevices> a{};
    for (int i = 0; i < kMaxDevices; ++i) a[static_cast<size_t>(i)] = new CudaAllocator(i);  // never destroyed
    return a;
  }();
  return *allocators[static_cast<size_t>(index)];
}

}  // namespace sa2va::cuda
