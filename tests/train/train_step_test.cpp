// `sa2va train-step` on the training fixture: every loss term, every raw gradient (full tensors,
// sampled entries, embedding rows, and the whole-tensor statistics), the clipped norm, the parameters
// after the AdamW step and the merged weights, against upstream's step.
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "test_util.h"
#include "train/gradient_check.h"

namespace sa2va {
namespace {

using test::rel_l2;

// The stored part of a tensor: all of it, the entries at idx.<name>, or the rows at rows.<name>.
std::vector<float> stored_part(const Tensor& full, const std::string& name, const SafetensorsFile& grads) {
  const std::vector<float> all = full.to_vector();
  if (grads.has("idx." + name)) {
    const Tensor idx = grads.get("idx." + name);
    std::vector<float> out;
    for (int64_t i = 0; i < idx.numel(); ++i) out.push_back(all[static_cast<size_t>(idx.data<int64_t>()[i])]);
    return out;
  }
  if (grads.has("rows." + name)) {
    const Tensor rows = grads.get("rows." + name);
    const int64_t width = full.size(1);
    std::vector<float> out;
    for (int64_t r = 0; r < rows.numel(); ++r)
      for (int64_t c = 0; c < width; ++c) out.push_back(all[static_cast<size_t>(rows.data<int64_t>()[r] * width + c)]);
    return out;
  }
  return all;
}

TEST(TrainStep, TheCommandReproducesTheUpstreamStep) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny-train");
  SA2VA_REQUIRE_FIXTURE(model, "sa2va-tiny");
  const std::string out = test::temp_dir("train-step") + "/step.safetensors";
  std::string log;
  ASSERT_EQ(test::run_command(test::cli_path() + " train-step --model " + model + " --fixture " + dir + " --out " + out, &log), 0)
      << log;
  const auto mine = SafetensorsFile::open(out);
  const auto forward = SafetensorsFile::open(dir + "/forward.safetensors");
  const auto grads = SafetensorsFile::open(dir + "/grads.safetensors");
  const auto step1 = SafetensorsFile::open(dir + "/step1.safetensors");
  const auto meta = nlohmann::json::parse(std::ifstream(dir + "/meta.json"));

  for (const char* loss : {"loss.total", "loss.mask", "loss.dice", "loss.llm", "loss.dice_per_mask"})
    EXPECT_LE(rel_l2(mine->get(loss).to_vector(), forward->get(loss).to_vector()), 1e-5) << loss;
  EXPECT_LE(rel_l2(mine->get("optim.grad_norm").to_vector(), grads->get("optim.grad_norm").to_vector()), 1e-5);
  EXPECT_LE(rel_l2(mine->get("optim.clip_coef").to_vector(), grads->get("optim.clip_coef").to_vector()), 1e-5);

  int checked = 0;
  for (const auto& entry : meta["trainable"]) {
    const std::string name = entry["name"];
    const Tensor grad = mine->get("grad." + name);
    const std::vector<float> g = stored_part(grad, name, *grads), e = grads->get("grad." + name).to_vector();
    if (name.find("k_proj.bias") != std::string::npos) {  // analytically zero: rounding noise only
      for (float v : g) EXPECT_LE(std::fabs(v), 1e-5f) << name;
    } else {
      EXPECT_LE(rel_l2(g, e), 1e-4) << name;
      // The whole tensor through upstream's statistics: sum of squares (the norm's share).
      const Tensor stat = grads->get("gradstat." + name);
      double squares = 0;
      for (float v : grad.to_vector()) squares += static_cast<double>(v) * v;
      EXPECT_NEAR(std::sqrt(squares), std::sqrt(stat.data<double>()[1]), 1e-4 * std::sqrt(stat.data<double>()[1]) + 1e-12)
          << name;
    }
    // One AdamW step moves each element by about lr·sign(g): where a gradient is rounding noise (the key
    // biases) its sign is arbitrary, so only the size of the move is checked there.
    const std::vector<float> p = stored_part(mine->get("step1." + name), name, *grads);
    const std::vector<float> q = step1->get("step1." + name).to_vector();
    if (name.find("k_proj.bias") != std::string::npos) {
      for (size_t i = 0; i < p.size() && i < q.size(); ++i) EXPECT_LE(std::fabs(p[i] - q[i]), 2.1e-3f) << name;
    } else {
      EXPECT_LE(rel_l2(p, q), 1e-4) << name;
    }
    ++checked;
  }
  EXPECT_EQ(checked, 170);
  int merged = 0;
  for (const auto& [name, info] : step1->tensors())
    if (name.rfind("merged.", 0) == 0) {
      EXPECT_LE(rel_l2(mine->get(name).to_vector(), step1->get(name).to_vector()), 1e-6) << name;
      ++merged;
    }
  EXPECT_EQ(merged, 14);

  // A folder that is not a training fixture: a clear error and a non-zero exit.
  EXPECT_NE(test::run_command(test::cli_path() + " train-step --model " + model + " --fixture " + model + " --out " + out, &log), 0);
  EXPECT_NE(log.find("meta.json"), std::string::npos) << log;
}

}  // namespace
}  // namespace sa2va
