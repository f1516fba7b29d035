// Clipping and AdamW against the upstream step stored in sa2va-tiny-train: from the initial
// parameters (the tiny checkpoint, the LoRA initialisation) and the raw gradients to the stored
// parameters after one step; LoRA merged into the frozen weights as upstream exports it.
#include "train/optimizer.h"

#include "core/error.h"

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "test_util.h"
#include "train/lora.h"

namespace sa2va {
namespace {

std::vector<float> values(const Tensor& t) { return t.to_vector(); }

TEST(TrainOptimizer, ClippedAdamWReproducesTheStoredStep) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny-train");
  SA2VA_REQUIRE_FIXTURE(model, "sa2va-tiny");
  const auto meta = nlohmann::json::parse(std::ifstream(dir + "/meta.json"));
  const auto grads = SafetensorsFile::open(dir + "/grads.safetensors");
  const auto step1 = SafetensorsFile::open(dir + "/step1.safetensors");
  const auto inputs = SafetensorsFile::open(dir + "/inputs.safetensors");
  const Checkpoint checkpoint = Checkpoint::open(model);

  // The global norm from the per-tensor sums of squares of the full gradients.
  double squares = 0;
  for (const auto& entry : meta["trainable"])
    squares += grads->get("gradstat." + entry["name"].get<std::string>()).data<double>()[1];
  const double norm = std::sqrt(squares);
  EXPECT_NEAR(norm, grads->get("optim.grad_norm").f32()[0], 1e-5 * norm);
  const float coef = train::clip_coefficient(norm, 1.0f);
  // Upstream reduces the 9.7M-element embedding gradient in f32: its norm is a few 1e-6 off the exact one.
  EXPECT_NEAR(coef, grads->get("optim.clip_coef").f32()[0], 1e-5 * coef);
  EXPECT_EQ(train::clip_coefficient(0.5, 1.0f), 1.0f);  // below the limit: unchanged

  const auto& hyper = meta["hyper"];
  train::AdamWOptions options;
  options.lr = hyper["lr"].get<float>();
  options.beta1 = hyper["betas"][0].get<float>();
  options.beta2 = hyper["betas"][1].get<float>();
  options.eps = hyper["eps"].get<float>();
  options.weight_decay = hyper["weight_decay"].get<float>();

  int checked = 0;
  for (const auto& entry : meta["trainable"]) {
    const std::string name = entry["name"], storage = entry["storage"];
    const Tensor initial = name.rfind("lora.", 0) == 0 ? inputs->get(name) : checkpoint.get(name);
    const std::vector<float> all = values(initial);
    std::vector<float> param;
    if (storage == "full") {
      param = all;
    } else if (storage.rfind("sampled", 0) == 0) {  // the stored flat indices
      const Tensor idx = grads->get("idx." + name);
      for (int64_t i = 0; i < idx.numel(); ++i) param.push_back(all[static_cast<size_t>(idx.data<int64_t>()[i])]);
    } else {  // rows of the embedding
      const Tensor rows = grads->get("rows." + name);
      const int64_t width = initial.size(1);
      for (int64_t r = 0; r < rows.numel(); ++r)
        for (int64_t c = 0; c < width; ++c)
          param.push_back(all[static_cast<size_t>(rows.data<int64_t>()[r] * width + c)]);
    }
    const std::vector<float> grad = values(grads->get("grad." + name));
    ASSERT_EQ(grad.size(), param.size()) << name;
    train::AdamWState state;
    train::adamw_step(param.data(), grad.data(), coef, static_cast<int64_t>(param.size()), state, 1, options);
    const Tensor expected = step1->get("step1." + name);
    EXPECT_TRUE(test::close_rel(Tensor::from_vector(param, {static_cast<int64_t>(param.size())}), expected, 1e-6))
        << name;
    ++checked;
  }
  EXPECT_EQ(checked, static_cast<int>(meta["trainable"].size()));
}

TEST(TrainOptimizer, MomentsCarryOverSteps) {
  // Two steps by hand: m2 = 0.9·m1 + 0.1·g, v2 = 0.999·v1 + 0.001·g², with bias corrections of step 2.
  std::vector<float> p = {1.0f, -2.0f}, g = {0.5f, 0.0f};
  train::AdamWState state;
  train::AdamWOptions o;
  o.lr = 0.01f;
  o.weight_decay = 0.1f;
  train::adamw_step(p.data(), g.data(), 1.0f, 2, state, 1, o);
  train::adamw_step(p.data(), g.data(), 1.0f, 2, state, 2, o);
  double expect = 1.0, m = 0, v = 0;
  for (int step = 1; step <= 2; ++step) {
    expect *= 1 - 0.01 * 0.1;
    m = 0.9 * m + 0.1 * 0.5;
    v = 0.999 * v + 0.001 * 0.25;
    expect -= 0.01 / (1 - std::pow(0.9, step)) * m / (std::sqrt(v) / std::sqrt(1 - std::pow(0.999, step)) + 1e-8);
  }
  EXPECT_NEAR(p[0], expect, 1e-6);
  EXPECT_NEAR(p[1], -2.0 * (1 - 0.001) * (1 - 0.001), 1e-6);  // no gradient: decayed only
}

TEST(TrainLora, MergedWeightsMatchTheExportedOnes) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny-train");
  SA2VA_REQUIRE_FIXTURE(model, "sa2va-tiny");
  const auto step1 = SafetensorsFile::open(dir + "/step1.safetensors");
  const Checkpoint checkpoint = Checkpoint::open(model);
  int merged = 0;
  for (const auto& [name, info] : step1->tensors()) {
    if (name.rfind("merged.", 0) != 0) continue;
    const std::string weight = name.substr(7);                        // language_model...q_proj.weight
    const std::string module = weight.substr(0, weight.size() - 7);   // without ".weight"
    const Tensor result = train::merge_lora(checkpoint.get(weight), step1->get("step1.lora." + module + ".A"),
                                            step1->get("step1.lora." + module + ".B"), 2.0f);
    EXPECT_TRUE(test::close_rel(result, step1->get(name), 1e-6)) << name;
    ++merged;
  }
  EXPECT_EQ(merged, 14);  // 7 linears x 2 layers
  EXPECT_THROW(train::merge_lora(Tensor::zeros({3, 4}), Tensor::zeros({2, 5}), Tensor::zeros({3, 2}), 1.0f), Error);
}

}  // namespace
}  // namespace sa2va
