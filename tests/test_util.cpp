#include "test_util.h"

#include <sys/wait.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>

#include "core/device.h"
#include "core/error.h"
#include "io/image.h"
#include "io/safetensors.h"

namespace sa2va::test {
namespace fs = std::filesystem;

std::string fixtures_dir() {
  const char* env = std::getenv("SA2VA_FIXTURES");
  return env && *env ? std::string(env) : std::string(SA2VA_DEFAULT_FIXTURES);
}

std::string fixture_path(const std::string& relative) {
  const fs::path p = fs::path(fixtures_dir()) / relative;
  if (fs::exists(p)) return p.string();
  const char* ci = std::getenv("CI");
  if (ci && std::string(ci) == "true") {
    ADD_FAILURE() << "fixture " << p.string() << " is missing (CI=true requires the fixtures)";
  }
  return "";
}

std::string test_data(const std::string& relative) { return (fs::path(SA2VA_TEST_DATA_DIR) / relative).string(); }

std::string project_data(const std::string& relative) {
  return (fs::path(SA2VA_PROJECT_DATA_DIR) / relative).string();
}

std::string cli_path() { return SA2VA_CLI_PATH; }

std::string temp_dir(const std::string& tag) {
  static std::vector<std::string> created;
  static std::once_flag cleanup_once;
  std::call_once(cleanup_once, [] {
    std::atexit([] {
      for (const auto& d : created) {
        std::error_code ec;
        fs::remove_all(d, ec);
      }
    });
  });
  std::string pattern = (fs::temp_directory_path() / ("sa2va-test-" + tag + "-XXXXXX")).string();
  std::vector<char> buf(pattern.begin(), pattern.end());
  buf.push_back('\0');
  if (!mkdtemp(buf.data())) throw std::runtime_error("mkdtemp failed for " + pattern);
  created.emplace_back(buf.data());
  return created.back();
}

Tensor load_golden(const std::string& file, const std::string& name) {
  static std::mutex mutex;
  static std::map<std::string, std::shared_ptr<SafetensorsFile>> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto& f = cache[file];
  if (!f) f = SafetensorsFile::open(file);
  return f->get(name).clone();
}

Diff compare(const Tensor& actual, const Tensor& expected) {
  Diff d;
  const std::vector<float> a = actual.to_vector(), e = expected.to_vector();
  if (a.size() != e.size()) {
    d.max_abs = INFINITY;
    return d;
  }
  double sq = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double diff = std::fabs(static_cast<double>(a[i]) - e[i]);
    if (!(diff <= d.max_abs)) d.max_abs = diff;  // NaN propagates as the max
    sq += static_cast<double>(e[i]) * e[i];
  }
  d.ref_rms = a.empty() ? 0 : std::sqrt(sq / static_cast<double>(a.size()));
  return d;
}

::testing::AssertionResult close_rel(const Tensor& actual, const Tensor& expected, double tol) {
  if (actual.numel() != expected.numel())
    return ::testing::AssertionFailure() << "element counts differ: " << shape_str(actual.shape()) << " vs "
                                         << shape_str(expected.shape());
  const Diff d = compare(actual, expected);
  if (d.rel() <= tol)
    return ::testing::AssertionSuccess() << "max|diff| " << d.max_abs << ", rms(ref) " << d.ref_rms << ", rel " << d.rel();
  return ::testing::AssertionFailure() << "max|diff| " << d.max_abs << " / rms(ref) " << d.ref_rms << " = " << d.rel()
                                       << " > " << tol;
}

double mask_iou(const Tensor& a, const Tensor& b) {
  const Tensor ca = a.contiguous(), cb = b.contiguous();
  if (ca.numel() != cb.numel()) return 0;
  const auto* pa = static_cast<const uint8_t*>(ca.raw());
  const auto* pb = static_cast<const uint8_t*>(cb.raw());
  int64_t inter = 0, uni = 0;
  for (int64_t i = 0; i < ca.numel(); ++i) {
    const bool x = pa[i] != 0, y = pb[i] != 0;
    inter += x && y;
    uni += x || y;
  }
  return uni ? static_cast<double>(inter) / static_cast<double>(uni) : 1.0;
}

void expect_matches_golden(const std::string& name, const Tensor& actual, const Tensor& golden, double f32_tol) {
  ASSERT_EQ(actual.numel(), golden.numel()) << name << ": " << shape_str(actual.shape()) << " vs golden "
                                            << shape_str(golden.shape());
  switch (golden.dtype()) {
    case DType::I64: {
      ASSERT_EQ(actual.dtype(), DType::I64) << name;
      const Tensor a = actual.contiguous(), g = golden.contiguous();
      for (int64_t i = 0; i < g.numel(); ++i)
        ASSERT_EQ(a.data<int64_t>()[i], g.data<int64_t>()[i]) << name << " differs at " << i;
      break;
    }
    case DType::U8:
      EXPECT_EQ(actual.to_vector(), golden.to_vector()) << name;
      break;
    case DType::BOOL:
      EXPECT_GE(mask_iou(actual, golden), 0.999) << name;
      break;
    default:
      EXPECT_TRUE(close_rel(actual, golden, f32_tol)) << name;
  }
}

std::string middle_characters(const std::string& text, int count) {
  const auto continuation = [&](size_t i) { return i < text.size() && (static_cast<unsigned char>(text[i]) & 0xC0) == 0x80; };
  size_t begin = text.size() / 2;
  while (continuation(begin)) ++begin;
  size_t end = begin;
  for (int chars = 0; chars < count && end < text.size(); ++chars)
    do ++end;
    while (continuation(end));
  return text.substr(begin, end - begin);
}

int run_command(const std::string& command, std::string* output) {
  std::string cmd = command + " 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) return -1;
  std::array<char, 4096> buf{};
  std::string out;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) out.append(buf.data(), n);
  int status = pclose(pipe);
  if (output) *output = out;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

bool gpu_available(std::string* why) {
  if (!cuda_built()) {
    *why = "this build has no CUDA backend (configure with -DSA2VA_CUDA=ON)";
    return false;
  }
  try {
    DeviceScope probe(Device::cuda(0));
  } catch (const Error& e) {
    *why = e.what();
    return false;
  }
  return true;
}

nlohmann::json fixture_case(const std::string& dir, const std::string& name) {
  nlohmann::json meta;
  std::ifstream(dir + "/meta.json") >> meta;
  return meta.at("cases").at(name);
}

Request fixture_request(const std::string& dir, const nlohmann::json& c) {
  Request r;
  if (c.contains("image")) r.image = load_image(dir + "/" + c["image"].get<std::string>());
  r.text = c.at("prompt").get<std::string>();
  if (c.contains("past_text")) r.past_text = c["past_text"].get<std::string>();
  if (c.contains("answer_text")) r.forced_answer = c["answer_text"].get<std::string>();
  if (c.contains("max_new_tokens")) r.generation.max_new_tokens = c["max_new_tokens"].get<int>();
  return r;
}

Tensor strided(const Tensor& t, int64_t n) {
  const int64_t C = t.size(-3), H = t.size(-2), W = t.size(-1);
  Tensor r = Tensor::empty({C, n, n});
  const Tensor c = t.to(DType::F32).contiguous();
  for (int64_t ch = 0; ch < C; ++ch)
    for (int64_t y = 0; y < n; ++y)
      for (int64_t x = 0; x < n; ++x) r.f32()[(ch * n + y) * n + x] = c.f32()[(ch * H + y * (H / n)) * W + x * (W / n)];
  return r;
}

double conformance_tolerance(const std::string& stage) {
  return stage == "llm.hidden_states" || stage == "llm.last_hidden_state" ? 5e-4 : 1e-4;
}

void expect_stages_match_goldens(const std::string& golden_file, const StageRecorder& rec,
                                 const std::function<double(const std::string&)>& f32_tol) {
  std::map<std::string, Tensor> stages;
  for (const auto& [stage, tensor] : rec.stages()) stages.emplace(stage, tensor);  // the first of a name
  const auto golden = SafetensorsFile::open(golden_file);
  const std::string sub16 = ".sub16";
  for (const auto& [tensor, info] : golden->tensors()) {
    const bool subsampled = tensor.size() > sub16.size() && tensor.ends_with(sub16);
    const std::string stage = subsampled ? tensor.substr(0, tensor.size() - sub16.size()) : tensor;
    const auto it = stages.find(stage);
    if (it == stages.end()) {
      ADD_FAILURE() << golden_file << ": stage " << stage << " was not recorded";
      continue;
    }
    SCOPED_TRACE(golden_file + ": " + tensor);
    expect_matches_golden(tensor, subsampled ? strided(it->second, 16) : it->second, golden->get(tensor), f32_tol(stage));
  }
}

}  // namespace sa2va::test
