// Shared helpers for the test suite: where fixtures live, golden loading, tensor comparison.
#pragma once
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include <cstdlib>
#include <memory>

#include "core/allocator.h"
#include "core/tensor.h"

namespace sa2va::test {

// A stand-in for cuda:0 whose memory is host memory (its storage frees itself): tensors on it are
// labelled cuda:0, so host access to them throws as on a real GPU, while the CPU kernels work on them
// (kernels_run_on_host) inside a DeviceScope for cuda:0.
class FakeDeviceAllocator final : public Allocator {
 public:
  Device device() const override { return Device::cuda(0); }
  bool host_addressable() const override { return true; }
  std::shared_ptr<void> allocate(size_t bytes) override {
    ++count_;
    return std::shared_ptr<void>(std::aligned_alloc(64, (bytes + 63) / 64 * 64 + 64), std::free);
  }
  uint64_t allocations() const override { return count_; }

 private:
  uint64_t count_ = 0;
};

// True when cuda:0 can be used; otherwise false with the reason (no CUDA backend in this build, no
// driver, no GPU, ...) in *why.
bool gpu_available(std::string* why);

// $SA2VA_FIXTURES, else the shared fixtures folder next to the project.
std::string fixtures_dir();
// Path of a fixture file/folder; when it is missing: FAIL when CI=true, otherwise skip with a message.
// Use as: auto dir = fixture_path("sa2va-tiny"); if (dir.empty()) return;  (the helper already skipped/failed)
std::string fixture_path(const std::string& relative);
#define SA2VA_REQUIRE_FIXTURE(var, rel)               \
  std::string var = ::sa2va::test::fixture_path(rel); \
  if (var.empty()) GTEST_SKIP() << "fixture " << (rel) << " not found (set SA2VA_FIXTURES)"

// Project test data (tests/data) and the built `sa2va` program.
std::string test_data(const std::string& relative);
// The project's data files (data/), e.g. the Qwen2 tokenizer.json make-model ships.
std::string project_data(const std::string& relative);
std::string cli_path();
// A fresh empty temporary directory, removed at process exit.
std::string temp_dir(const std::string& tag);

// Loads one tensor from a golden safetensors file.
Tensor load_golden(const std::string& file, const std::string& name);

struct Diff {
  double max_abs = 0, ref_rms = 0;
  double rel() const { return ref_rms > 0 ? max_abs / ref_rms : max_abs; }
};
// Compares element-wise as f32; shapes must have equal element counts.
Diff compare(const Tensor& actual, const Tensor& expected);
// gtest assertion: max|a-e| / rms(e) <= tol, with a readable message.
::testing::AssertionResult close_rel(const Tensor& actual, const Tensor& expected, double tol);
// Intersection over union of two boolean (U8/BOOL, nonzero = true) masks of equal size.
double mask_iou(const Tensor& a, const Tensor& b);

// One golden tensor of a conformance case against the stage recorded under its name: token ids
// (I64) and images (U8) exactly, boolean masks by IoU >= 0.999, floats by close_rel(f32_tol).
void expect_matches_golden(const std::string& name, const Tensor& actual, const Tensor& golden, double f32_tol);

// Runs a shell command; returns exit status and captures stdout+stderr.
int run_command(const std::string& command, std::string* output);

}  // namespace sa2va::test
