// A Qwen2 decoder layer with LoRA: the backward pass against finite differences of the forward
// one (input and every LoRA tensor), on a tiny layer with grouped heads.
#include "train/decoder_layer.h"

#include <cmath>
#include <random>

#include "test_util.h"
#include "train/gradient_check.h"

namespace sa2va {
namespace {

Tensor random_tensor(const Shape& shape, uint32_t seed, float stddev) { return test::random_normal(shape, seed, stddev); }

train::LoraLinear lora(int64_t out, int64_t in, bool bias, uint32_t seed) {
  train::LoraLinear l;
  l.weight = random_tensor({out, in}, seed, 0.4f);
  if (bias) l.bias = random_tensor({out}, seed + 1, 0.2f);
  l.a = random_tensor({2, in}, seed + 2, 0.3f);
  l.b = random_tensor({out, 2}, seed + 3, 0.3f);
  l.scale = 2.0f;
  return l;
}

TEST(TrainDecoderLayer, BackwardMatchesFiniteDifferences) {
  const int64_t d = 8, heads = 2, kv_heads = 1, head_dim = 4, inter = 12, n = 5;
  train::DecoderLayerWeights w;
  w.input_norm = random_tensor({d}, 1, 0.3f);
  w.post_norm = random_tensor({d}, 2, 0.3f);
  for (int64_t i = 0; i < d; ++i) w.input_norm.f32()[i] += 1, w.post_norm.f32()[i] += 1;
  w.q = lora(heads * head_dim, d, true, 10);
  w.k = lora(kv_heads * head_dim, d, true, 20);
  w.v = lora(kv_heads * head_dim, d, true, 30);
  w.o = lora(d, heads * head_dim, false, 40);
  w.gate = lora(inter, d, false, 50);
  w.up = lora(inter, d, false, 60);
  w.down = lora(d, inter, false, 70);
  w.heads = heads;
  w.kv_heads = kv_heads;
  w.head_dim = head_dim;
  w.rope_theta = 10000.0f;
  const std::vector<int64_t> positions = {0, 1, 2, 3, 4};
  Tensor x = random_tensor({n, d}, 80, 1.0f);
  const Tensor dy = random_tensor({n, d}, 81, 1.0f);

  const auto loss = [&] {
    const Tensor y = train::decoder_layer_forward(w, x, positions, nullptr);
    double s = 0;
    for (int64_t i = 0; i < y.numel(); ++i) s += static_cast<double>(y.f32()[i]) * dy.f32()[i];
    return s;
  };
  train::DecoderLayerSaved saved;
  (void)train::decoder_layer_forward(w, x, positions, &saved);
  const train::DecoderLayerGrads g = train::decoder_layer_backward(w, saved, positions, dy);
  const auto expect_gradient = [&](Tensor& param, const Tensor& grad, const std::string& what) {
    test::expect_gradient(param, grad, loss, what, 5e-3f, 5e-3);
  };
  expect_gradient(x, g.dx, "dx");
  train::LoraLinear* layers[] = {&w.q, &w.k, &w.v, &w.o, &w.gate, &w.up, &w.down};
  const char* names[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                         "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};
  for (int i = 0; i < 7; ++i) {
    expect_gradient(layers[i]->a, g.lora.at(names[i]).da, std::string(names[i]) + ".A");
    expect_gradient(layers[i]->b, g.lora.at(names[i]).db, std::string(names[i]) + ".B");
  }
}

// InternLM2's layout: one LoRA layer on the fused q/k/v projection (no biases).
TEST(TrainDecoderLayer, FusedQkvBackwardMatchesFiniteDifferences) {
  const int64_t d = 8, heads = 4, kv_heads = 2, head_dim = 2, inter = 10, n = 4;
  train::DecoderLayerWeights w;
  w.input_norm = random_tensor({d}, 3, 0.3f);
  w.post_norm = random_tensor({d}, 4, 0.3f);
  for (int64_t i = 0; i < d; ++i) w.input_norm.f32()[i] += 1, w.post_norm.f32()[i] += 1;
  w.fused_qkv = true;
  w.names = train::internlm2_module_names();
  w.qkv = lora((heads + 2 * kv_heads) * head_dim, d, false, 110);
  w.o = lora(d, heads * head_dim, false, 140);
  w.gate = lora(inter, d, false, 150);
  w.up = lora(inter, d, false, 160);
  w.down = lora(d, inter, false, 170);
  w.heads = heads;
  w.kv_heads = kv_heads;
  w.head_dim = head_dim;
  w.rope_theta = 10000.0f;
  const std::vector<int64_t> positions = {3, 4, 5, 6};
  Tensor x = random_tensor({n, d}, 180, 1.0f);
  const Tensor dy = random_tensor({n, d}, 181, 1.0f);
  const auto loss = [&] {
    const Tensor y = train::decoder_layer_forward(w, x, positions, nullptr);
    double s = 0;
    for (int64_t i = 0; i < y.numel(); ++i) s += static_cast<double>(y.f32()[i]) * dy.f32()[i];
    return s;
  };
  train::DecoderLayerSaved saved;
  (void)train::decoder_layer_forward(w, x, positions, &saved);
  const train::DecoderLayerGrads g = train::decoder_layer_backward(w, saved, positions, dy);
  EXPECT_EQ(g.lora.size(), 5u);
  test::expect_gradient(x, g.dx, loss, "dx", 5e-3f, 5e-3);
  train::LoraLinear* layers[] = {&w.qkv, &w.o, &w.gate, &w.up, &w.down};
  for (int i = 0; i < 5; ++i) {
    const std::string name = i == 0 ? w.names.qkv : i == 1 ? w.names.o : i == 2 ? w.names.gate : i == 3 ? w.names.up : w.names.down;
    test::expect_gradient(layers[i]->a, g.lora.at(name).da, loss, name + ".A", 5e-3f, 5e-3);
    test::expect_gradient(layers[i]->b, g.lora.at(name).db, loss, name + ".B", 5e-3f, 5e-3);
  }
}

}  // namespace
}  // namespace sa2va
