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

// The layer's backward pass against finite differences of <forward(x), dy>: dx and dA, dB of every
// LoRA pair (by module name).
void check_layer_gradients(train::DecoderLayerWeights& w, int64_t n, const std::vector<int64_t>& positions,
                           const std::vector<std::pair<std::string, train::LoraLinear*>>& modules) {
  Tensor x = random_tensor({n, w.input_norm.numel()}, 80, 1.0f);
  const Tensor dy = random_tensor({n, w.input_norm.numel()}, 81, 1.0f);
  const auto loss = [&] {
    const Tensor y = train::decoder_layer_forward(w, x, positions, nullptr);
    double s = 0;
    for (int64_t i = 0; i < y.numel(); ++i) s += static_cast<double>(y.f32()[i]) * dy.f32()[i];
    return s;
  };
  train::DecoderLayerSaved saved;
  (void)train::decoder_layer_forward(w, x, positions, &saved);
  const train::DecoderLayerGrads g = train::decoder_layer_backward(w, saved, positions, dy);
  EXPECT_EQ(g.lora.size(), modules.size());
  test::expect_gradient(x, g.dx, loss, "dx", 5e-3f, 5e-3);
  for (const auto& [name, layer] : modules) {
    test::expect_gradient(layer->a, g.lora.at(name).da, loss, name + ".A", 5e-3f, 5e-3);
    test::expect_gradient(layer->b, g.lora.at(name).db, loss, name + ".B", 5e-3f, 5e-3);
  }
}

TEST(TrainDecoderLayer, BackwardMatchesFiniteDifferences) {
  const int64_t d = 8, heads = 2, kv_heads = 1, head_dim = 4, inter = 12;
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
  check_layer_gradients(w, 5, {0, 1, 2, 3, 4},
                        {{"self_attn.q_proj", &w.q}, {"self_attn.k_proj", &w.k}, {"self_attn.v_proj", &w.v},
                         {"self_attn.o_proj", &w.o}, {"mlp.gate_proj", &w.gate}, {"mlp.up_proj", &w.up},
                         {"mlp.down_proj", &w.down}});
}

// InternLM2's layout: one LoRA layer on the fused q/k/v projection (no biases).
TEST(TrainDecoderLayer, FusedQkvBackwardMatchesFiniteDifferences) {
  const int64_t d = 8, heads = 4, kv_heads = 2, head_dim = 2, inter = 10;
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
  check_layer_gradients(w, 4, {3, 4, 5, 6},
                        {{w.names.qkv, &w.qkv}, {w.names.o, &w.o}, {w.names.gate, &w.gate}, {w.names.up, &w.up},
                         {w.names.down, &w.down}});
}

}  // namespace
}  // namespace sa2va
