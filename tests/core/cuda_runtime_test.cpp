// The CUDA backend's runtime side: a missing GPU, a missing or old driver, or a device index beyond
// the GPUs present is a clear Error naming the device; on a GPU, tensors go there and back intact.
#include <gtest/gtest.h>

#include <string>

#include "core/device.h"
#include "core/error.h"
#include "core/tensor.h"
#include "test_util.h"
#if SA2VA_WITH_CUDA
#include "ops/cuda/blas.h"
#endif

namespace sa2va {
namespace {

std::string error_of(void (*f)()) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

bool has_gpu() {
  std::string why;
  return test::gpu_available(&why);
}

TEST(CudaRuntime, AnUnusableGpuIsAClearError) {
  if (!cuda_built()) GTEST_SKIP() << "this build has no CUDA backend";
  if (!has_gpu()) {
    // This machine has no usable GPU: entering it, and allocating on it, say so and why.
    const std::string scope = error_of([] { DeviceScope s(Device::cuda(0)); });
    EXPECT_NE(scope.find("cuda:0 is not available: "), std::string::npos) << scope;
    EXPECT_TRUE(scope.find("driver") != std::string::npos || scope.find("GPU") != std::string::npos) << scope;
    const std::string alloc = error_of([] { Tensor::empty({4, 4}, DType::F32, Device::cuda(0)); });
    EXPECT_NE(alloc.find("cuda:0"), std::string::npos) << alloc;
    EXPECT_NE(alloc.find("[4, 4]"), std::string::npos) << alloc;
  }
  // An index past the GPUs present (or past those supported) names itself.
  const std::string far = error_of([] { DeviceScope s(Device::cuda(15)); });
  EXPECT_NE(far.find("cuda:15"), std::string::npos) << far;
  const std::string beyond = error_of([] { Tensor::empty({2}, DType::F32, Device::cuda(40)); });
  EXPECT_NE(beyond.find("cuda:40"), std::string::npos) << beyond;
}

// cuBLASLt is opened at run time; its entry points bind and answer a host-only call on any machine
// with the toolkit, GPU or not (a binding that silently stays null would crash the first product).
TEST(CudaRuntime, CublasLtOpensAndAnswersWithoutAGpu) {
#if SA2VA_WITH_CUDA
  // A CUDA build is made where the toolkit is, and the loader falls back on the toolkit's folder.
  try {
    cuda::check_library();
  } catch (const Error& e) {
    FAIL() << e.what();
  }
#else
  GTEST_SKIP() << "this build has no CUDA backend";
#endif
}

TEST(CudaRuntime, TensorsGoToTheGpuAndBackIntact) {
  if (!cuda_built() || !has_gpu()) GTEST_SKIP() << "no GPU in this build or on this machine";
  DeviceScope on_gpu(Device::cuda(0));
  Tensor host = Tensor::empty({3, 5}, DType::BF16);
  for (int i = 0; i < 15; ++i) host.bf16()[i] = static_cast<uint16_t>(0x3f80 + i);
  const Tensor device = host.to(Device::cuda(0));
  EXPECT_EQ(device.device(), Device::cuda(0));
  EXPECT_THROW(device.bf16(), Error);  // host access to GPU memory is refused
  const Tensor back = device.to(Device::cpu());
  for (int i = 0; i < 15; ++i) EXPECT_EQ(back.bf16()[i], host.bf16()[i]);
  // A strided view of host memory is made contiguous on the way.
  const Tensor column = Tensor::from_vector({1, 2, 3, 4, 5, 6}, {2, 3}).slice(1, 1, 2);
  EXPECT_EQ(column.to(Device::cuda(0)).to_vector(), (std::vector<float>{2, 5}));
}

}  // namespace
}  // namespace sa2va
