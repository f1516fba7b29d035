// Shared helpers for the test suite: where fixtures live, golden loading, tensor comparison.
#pragma once
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include <cstdlib>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>

#include "core/allocator.h"
#include "core/stages.h"
#include "core/tensor.h"
#include "sa2va/sa2va.h"

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

// A case of a fixture folder's meta.json ("image", "generate", ...).
nlohmann::json fixture_case(const std::string& dir, const std::string& name);
// The request a case describes: image (if any), prompt, conversation so far, teacher-forced answer
// or token limit.
Request fixture_request(const std::string& dir, const nlohmann::json& c);
// t[:, ::H/n, ::W/n] of a [..., C, H, W] tensor as [C, n, n] f32, as the ".subN" goldens store it.
Tensor strided(const Tensor& t, int64_t n);
// The tolerance of a stage against its golden in f32: 1e-4, but 5e-4 for the language model's final
// hidden states, which in these very narrow fixture models (hidden size 8 and 64) reach a few 1e-4
// of their RMS on rows whose own RMS is small; the language model is judged by the [SEG] hidden
// states, the logits and the ids, which must all be within 1e-4.
double conformance_tolerance(const std::string& stage);
// Every tensor of a golden file against the stage recorded under its name (the first of that name),
// with expect_matches_golden and the tolerance `f32_tol(name)`; a golden never recorded fails.
// "<stage>.sub16" goldens are compared with strided(<stage>, 16).
void expect_stages_match_goldens(const std::string& golden_file, const StageRecorder& rec,
                                 const std::function<double(const std::string&)>& f32_tol);

// Runs a shell command; returns exit status and captures stdout+stderr.
int run_command(const std::string& command, std::string* output);

// `count` whole UTF-8 characters from the middle of `text` (a stop string taken from an answer).
std::string middle_characters(const std::string& text, int count);

}  // namespace sa2va::test
