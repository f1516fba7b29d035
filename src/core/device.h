// Devices: where a tensor's memory lives and where the kernels that read it run.
// Today every kernel runs on the CPU; the CUDA type exists so that tensors, weights and the
// execution context can already say where they are, and code that needs host memory can check.
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

}  // namespace sa2va
