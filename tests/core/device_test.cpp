// Devices and allocators: tensors know where they live, host access is checked.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>

#include "core/allocator.h"
#include "core/error.h"
#include "core/tensor.h"
#include "test_util.h"

namespace sa2va {
namespace {

using test::FakeDeviceAllocator;

TEST(Device, ParsesNames) {
  EXPECT_EQ(parse_device("cpu"), Device::cpu());
  EXPECT_EQ(parse_device("cuda"), Device::cuda(0));
  EXPECT_EQ(parse_device("cuda:3"), Device::cuda(3));
  EXPECT_EQ(Device::cuda(1).name(), "cuda:1");
  for (const char* bad : {"", "gpu", "cuda:", "cuda:x", "cuda:-1", "CPU"})
    EXPECT_THROW(parse_device(bad), Error) << bad;
}

TEST(Device, CpuTensorsComeFromTheCpuAllocator) {
  Allocator& cpu = allocator_for(Device::cpu());
  const uint64_t before = cpu.allocations();
  Tensor t = Tensor::empty({3, 5});
  EXPECT_EQ(cpu.allocations(), before + 1);
  EXPECT_TRUE(t.device().is_cpu());
  EXPECT_NE(t.f32(), nullptr);
  EXPECT_TRUE(t.slice(0, 1, 2).device().is_cpu());  // views keep the device
}

TEST(Device, WithoutBackendADeviceIsAClearError) {
  try {
    Tensor::empty({2, 2}, DType::F32, Device::cuda(0));
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cuda:0"), std::string::npos) << e.what();
  }
}

TEST(Device, HostAccessToADeviceTensorIsChecked) {
  FakeDeviceAllocator fake;
  register_allocator(DeviceType::CUDA, &fake);
  Tensor t = Tensor::empty({4, 4}, DType::F32, Device::cuda(0));
  EXPECT_EQ(fake.allocations(), 1u);
  EXPECT_EQ(t.device(), Device::cuda(0));
  EXPECT_EQ(t.view({16}).device(), Device::cuda(0));
  EXPECT_THROW(t.f32(), Error);
  EXPECT_THROW(t.raw(), Error);
  EXPECT_THROW(t.data<uint8_t>(), Error);
  EXPECT_EQ(t.clone().device(), Device::cuda(0));               // copies stay on the device
  EXPECT_THROW(t.slice(1, 0, 2).clone(), Error);                 // but only whole rows (contiguous)
  register_allocator(DeviceType::CUDA, nullptr);
  EXPECT_THROW(register_allocator(DeviceType::CPU, &fake), Error);
}

// Zeros on a device are cleared there (a GPU memset), not uploaded from a host buffer of zeros.
TEST(Device, ZerosAreClearedOnTheirDevice) {
  struct Dirty final : public Allocator {
    Device device() const override { return Device::cuda(0); }
    bool host_addressable() const override { return true; }
    std::shared_ptr<void> allocate(size_t bytes) override {
      void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
      std::memset(p, 0xab, bytes);
      return std::shared_ptr<void>(p, std::free);
    }
    uint64_t allocations() const override { return 0; }
    void copy_from_host(void* dst, const void* src, size_t bytes) override {
      ++uploads;
      Allocator::copy_from_host(dst, src, bytes);
    }
    void fill_zero(void* dst, size_t bytes) override {
      ++fills;
      Allocator::fill_zero(dst, bytes);
    }
    int uploads = 0, fills = 0;
  } dirty;
  register_allocator(DeviceType::CUDA, &dirty);
  const Tensor t = Tensor::zeros({3, 7}, DType::F32, Device::cuda(0));
  EXPECT_EQ(dirty.fills, 1);
  EXPECT_EQ(dirty.uploads, 0);
  register_allocator(DeviceType::CUDA, nullptr);
  EXPECT_EQ(t.device(), Device::cuda(0));
  for (int i = 0; i < 21; ++i) EXPECT_EQ(static_cast<const float*>(t.device_data())[i], 0.f) << i;
}

}  // namespace
}  // namespace sa2va
