// LoRA linear layers: forward against the merged weight, backward against finite differences on
// odd shapes, with one and two threads.
#include "train/lora.h"

#include <cmath>
#include <random>

#include "core/threadpool.h"
#include "core/error.h"
#include "test_util.h"
#include "train/gradient_check.h"

namespace sa2va {
namespace {

Tensor random_tensor(const Shape& shape, uint32_t seed) { return test::random_normal(shape, seed); }

train::LoraLinear random_layer(int64_t out, int64_t in, int64_t r) {
  train::LoraLinear layer;
  layer.weight = random_tensor({out, in}, 1);
  layer.bias = random_tensor({out}, 2);
  layer.a = random_tensor({r, in}, 3);
  layer.b = random_tensor({out, r}, 4);
  layer.scale = 1.5f;
  return layer;
}

TEST(TrainLora, ForwardEqualsTheMergedWeight) {
  const train::LoraLinear layer = random_layer(7, 5, 3);
  const Tensor x = random_tensor({4, 5}, 5);
  const Tensor y = train::lora_forward(layer, x);
  const Tensor merged = train::merge_lora(layer.weight, layer.a, layer.b, layer.scale);
  for (int64_t i = 0; i < 4; ++i)
    for (int64_t o = 0; o < 7; ++o) {
      double expect = layer.bias.f32()[o];
      for (int64_t k = 0; k < 5; ++k) expect += static_cast<double>(x.f32()[i * 5 + k]) * merged.f32()[o * 5 + k];
      EXPECT_NEAR(y.f32()[i * 7 + o], expect, 1e-4) << i << "," << o;
    }
}

TEST(TrainLora, BackwardMatchesFiniteDifferences) {
  const int saved_threads = num_threads();
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    train::LoraLinear layer = random_layer(9, 6, 2);
    const Tensor x = random_tensor({5, 6}, 6);
    const Tensor dy = random_tensor({5, 9}, 7);  // the loss is <y, dy>
    train::LoraSaved saved;
    (void)train::lora_forward(layer, x, &saved);
    const train::LoraGrads g = train::lora_backward(layer, saved, dy);
    const auto loss = [&](const train::LoraLinear& l, const Tensor& input) {
      const Tensor y = train::lora_forward(l, input);
      double s = 0;
      for (int64_t i = 0; i < y.numel(); ++i) s += static_cast<double>(y.f32()[i]) * dy.f32()[i];
      return s;
    };
    const auto check_grad = [&](Tensor& param, const Tensor& grad, const char* what, auto&& eval) {
      test::expect_gradient(param, grad, eval, what, 1e-2f, 1e-2);
    };
    Tensor xc = x.clone();
    check_grad(xc, g.dx, "dx", [&] { return loss(layer, xc); });
    check_grad(layer.a, g.da, "dA", [&] { return loss(layer, x); });
    check_grad(layer.b, g.db, "dB", [&] { return loss(layer, x); });
  }
  set_num_threads(saved_threads);
  train::LoraLinear bad = random_layer(4, 3, 2);
  bad.b = Tensor::zeros({4, 3});
  EXPECT_THROW(train::lora_forward(bad, random_tensor({2, 3}, 8)), Error);
}

}  // namespace
}  // namespace sa2va
