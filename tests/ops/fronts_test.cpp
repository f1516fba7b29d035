// The op fronts (ops/*.cpp) check devices, sizes and buffers before any kernel runs: data on a
// device without kernels, or split across devices, is an Error naming the op and the devices;
// negative sizes and missing buffers are Errors; empty work is a no-op that reads nothing.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "core/allocator.h"
#include "core/error.h"
#include "ops/ops.h"
#include "test_util.h"
#include "ops_test_util.h"

namespace sa2va {
namespace {

using test::FakeDeviceAllocator;

Tensor on_fake_cuda(const Shape& shape) {
  static FakeDeviceAllocator fake;  // the tensors' storage is freed on its own (std::free)
  register_allocator(DeviceType::CUDA, &fake);
  Tensor t = Tensor::empty(shape, DType::F32, Device::cuda(0));
  register_allocator(DeviceType::CUDA, nullptr);
  return t;
}

// Runs f, which must throw an Error whose message contains every one of `parts`.
template <typename F>
void expect_error(F&& f, const std::vector<std::string>& parts) {
  try {
    f();
    FAIL() << "expected an Error containing " << parts.front();
  } catch (const Error& e) {
    for (const auto& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
}

TEST(OpsFronts, LinearNamesTheDevicesOfWeightAndInput) {
  const Tensor x = ops_test::random_tensor({2, 4}, 1);
  const WeightMatrix host_w = WeightMatrix::prepare(ops_test::random_tensor({3, 4}, 2), WeightFormat::F32);
  const WeightMatrix device_w = WeightMatrix::prepare(on_fake_cuda({3, 4}), WeightFormat::F32);
  ASSERT_EQ(device_w.device(), Device::cuda(0));
  std::vector<float> y(6);
  expect_error([&] { ops::linear(x.f32(), 2, 4, device_w, nullptr, y.data()); },
               {"linear: the weight lives on cuda:0, the input on cpu"});
  expect_error([&] { ops::linear(x, device_w); }, {"linear: the weight lives on cuda:0, the input on cpu"});
  expect_error([&] { ops::linear(on_fake_cuda({2, 4}), host_w); },
               {"linear: the weight lives on cpu, the input on cuda:0"});
  // Data on a GPU needs a CUDA build, and the calling thread running on that GPU.
  expect_error([&] { ops::linear(on_fake_cuda({2, 4}), device_w); },
               {"linear", cuda_built() ? "runs kernels on cpu" : "no cuda:0 kernel"});
  expect_error([&] { ops::linear(x, host_w, on_fake_cuda({3})); },
               {"linear: the bias lives on cuda:0, the input on cpu"});
}

TEST(OpsFronts, ConvAndResampleRejectDeviceTensors) {
  const Tensor device_x = on_fake_cuda({2, 4, 4});
  const Tensor host_x = ops_test::random_tensor({2, 4, 4}, 3);
  const ConvWeight host_w = ConvWeight::prepare(ops_test::random_tensor({2, 2, 3, 3}, 4));
  ConvWeight device_w = host_w;
  device_w.matrix = WeightMatrix::prepare(on_fake_cuda({2, 18}), WeightFormat::F32);
  expect_error([&] { ops::conv2d(device_x, host_w, Tensor(), ops::Conv2dArgs()); },
               {"conv2d", cuda_built() ? "runs kernels on cpu" : "no cuda:0 kernel"});
  expect_error([&] { ops::conv2d(host_x, device_w, Tensor(), ops::Conv2dArgs()); },
               {"conv2d: the weight lives on cuda:0, the input on cpu"});
  expect_error([&] { ops::conv2d(host_x, host_w, on_fake_cuda({2}), ops::Conv2dArgs()); },
               {"conv2d: the bias lives on cuda:0, the input on cpu"});
  expect_error([&] { ops::max_pool2d(device_x, 2, 2); }, {"max_pool2d", "cuda:0"});
  expect_error([&] { ops::interpolate_bilinear(device_x, 8, 8, false); }, {"interpolate_bilinear", "cuda:0"});
  expect_error([&] { ops::interpolate_nearest(device_x, 8, 8); }, {"interpolate_nearest", "cuda:0"});
  expect_error([&] { ops::pixel_shuffle_v2(on_fake_cuda({16, 3}), 4); }, {"pixel_shuffle_v2", "cuda:0"});
}

TEST(OpsFronts, RawPointerOpsCheckSizesAndBuffers) {
  std::vector<float> x(8, 1.f), w(4, 1.f);
  expect_error([&] { ops::silu(x.data(), -1); }, {"silu: negative element count -1"});
  expect_error([&] { ops::gelu_erf(nullptr, 8); }, {"gelu_erf: null buffer"});
  expect_error([&] { ops::add(x.data(), nullptr, x.data(), 8); }, {"add: null buffer"});
  expect_error([&] { ops::add_rows(x.data(), w.data(), -2, 4); }, {"add_rows: negative size"});
  expect_error([&] { ops::copy_rows(x.data(), 2, x.data(), 4, 2, 4); }, {"copy_rows", "stride"});
  expect_error([&] { ops::layer_norm(x.data(), w.data(), nullptr, nullptr, 2, 4, 1e-6f); },
               {"layer_norm: null buffer"});
  expect_error([&] { ops::rms_norm(x.data(), w.data(), x.data(), 2, -4, 1e-6f); }, {"rms_norm: negative size"});
  expect_error([&] { ops::rope_axial_2d(x.data(), -1, 4, 1, 1, 1e4f, 1); }, {"rope_axial_2d: negative token count"});
  expect_error([&] { ops::rope_rotate_half(x.data(), 1, 1, 4, 4, nullptr, 1e4f); }, {"rope: null buffer"});
  // Existing messages are unchanged.
  expect_error([&] { ops::rope_rotate_half(x.data(), 1, 1, 3, 4, nullptr, 1e4f); }, {"rope: head_dim must be even"});
  std::vector<float> y(4);
  expect_error([&] { ops::gemm(x.data(), 1, x.data(), 2, y.data(), 2, 2, 2, 2, false); },
               {"gemm: leading dimension smaller than the matrix"});
}

TEST(OpsFronts, EmptyWorkReadsNothing) {
  // Null buffers are fine when there is nothing to read or write.
  EXPECT_NO_THROW(ops::silu(nullptr, 0));
  EXPECT_NO_THROW(ops::softmax_rows(nullptr, 0, 16));
  EXPECT_NO_THROW(ops::add_per_row(nullptr, nullptr, 4, 0));
  EXPECT_NO_THROW(ops::copy_rows(nullptr, 0, nullptr, 0, 0, 8));
  EXPECT_NO_THROW(ops::layer_norm(nullptr, nullptr, nullptr, nullptr, 0, 8, 1e-6f));
  EXPECT_NO_THROW(ops::layer_norm_2d(nullptr, nullptr, nullptr, nullptr, 8, 0, 1e-6f));
  EXPECT_NO_THROW(ops::rope_rotate_half(nullptr, 0, 2, 4, 8, nullptr, 1e4f));
  EXPECT_NO_THROW(ops::rope_axial_2d(nullptr, 4, 4, 2, 2, 1e4f, 0));
  EXPECT_NO_THROW(ops::gemm(nullptr, 0, nullptr, 0, nullptr, 0, 0, 4, 4, false));
}

}  // namespace
}  // namespace sa2va
