// The generated tables on a GPU: made by the CPU kernels on the host, then copied, so that both
// devices hold the same numbers (they are made once per model or per image size, off the hot path).
#include <vector>

#include "core/allocator.h"
#include "core/device.h"
#include "ops/cpu/kernels.h"
#include "ops/cuda/kernels.h"

namespace sa2va::ops::cuda {
namespace {

void copy_to_current_gpu(void* dst, const void* host, size_t bytes) {
  allocator_for(current_device()).copy_from_host(dst, host, bytes);
}

}  // namespace

void position_embedding_sine(int64_t channels, int64_t h, int64_t w, float* out) {
  std::vector<float> host(static_cast<size_t>(channels * h * w));
  cpu::position_embedding_sine(channels, h, w, host.data());
  copy_to_current_gpu(out, host.data(), host.size() * sizeof(float));
}

void position_embedding_random(const float* gaussian, int64_t half, int64_t n, float* out) {
  std::vector<float> g(static_cast<size_t>(2 * half)), host(static_cast<size_t>(2 * half * n * n));
  allocator_for(current_device()).copy_to_host(g.data(), gaussian, g.size() * sizeof(float));
  cpu::position_embedding_random(g.data(), half, n, host.data());
  copy_to_current_gpu(out, host.data(), host.size() * sizeof(float));
}

void fill_random_normal(uint16_t* out_bf16, float* out_f32, int64_t n, float mean, float stddev, uint64_t seed) {
  if (out_bf16) {
    std::vector<uint16_t> host(static_cast<size_t>(n));
    cpu::fill_random_normal(host.data(), nullptr, n, mean, stddev, seed);
    copy_to_current_gpu(out_bf16, host.data(), host.size() * sizeof(uint16_t));
  } else {
    std::vector<float> host(static_cast<size_t>(n));
    cpu::fill_random_normal(nullptr, host.data(), n, mean, stddev, seed);
    copy_to_current_gpu(out_f32, host.data(), host.size() * sizeof(float));
  }
}

}  // namespace sa2va::ops::cuda
