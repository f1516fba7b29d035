// Devices: where a tensor's memory lives and where the kernels that read it run.
// A thread runs kernels on one device at a time: the CPU unless a DeviceScope (entered by the
// request's ContextScope) says otherwise. The op fronts that take raw pointers dispatch on that
// device, so on a GPU every pointer handed to an op is that GPU's memory.
#pragma once
#include <string>

namespace sa2va {

enum class DeviceType { CPU, CUDA };

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;

  static Device cpu() { return {}; }
  static Device cuda(int index = 0) { return {DeviceType::CUDA, index}; }
  bool is_cpu() const { return type == DeviceType::CPU; }
  std::string name() const;  // "cpu", "cuda:0"
  bool operator==(const Device&) const = default;
};

// "cpu", "cuda" or "cuda:N"; throws Error naming the text otherwise.
Device parse_device(const std::string& text);

// True when this build has the CUDA backend (src/ops/cuda/), whether or not a GPU is present.
bool cuda_built();

// The device whose kernels the calling thread runs.
Device current_device();
// True when that device's data is worked on by the CPU kernels: the CPU itself, or a test's
// host-memory stand-in for a GPU (core/allocator.h).
bool kernels_run_on_host();

// Makes `device` the calling thread's device for the scope's lifetime (and the GPU's own notion of
// the current device, for CUDA); the previous one comes back at the end. Entering a GPU that is
// missing or unusable throws Error saying why.
class DeviceScope {
 public:
  explicit DeviceScope(Device device);
  ~DeviceScope();
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  Device previous_;
  bool previous_on_host_;
};

}  // namespace sa2va
