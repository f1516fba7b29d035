// Every backward pass against central finite differences of the inference op it inverts
// (ops/ops.h), on odd shapes: the loss is <op(x), dy> for a random dy.
#include "train/backward.h"

#include <cmath>
#include <functional>
#include <random>

#include "core/error.h"
#include "ops/ops.h"
#include "test_util.h"
#include "train/gradient_check.h"

namespace sa2va {
namespace {

using test::expect_gradient;
Tensor random_tensor(const Shape& shape, uint32_t seed, float stddev = 1.0f) { return test::random_normal(shape, seed, stddev); }

double dot(const Tensor& a, const Tensor& b) {
  double s = 0;
  for (int64_t i = 0; i < a.numel(); ++i) s += static_cast<double>(a.f32()[i]) * b.f32()[i];
  return s;
}

TEST(TrainBackward, Linear) {
  Tensor x = random_tensor({5, 7}, 1), w = random_tensor({3, 7}, 2), b = random_tensor({3}, 3);
  const Tensor dy = random_tensor({5, 3}, 4);
  const auto loss = [&] {
    Tensor y = Tensor::empty({5, 3});
    ops::gemm(x.f32(), 7, w.f32(), 7, y.f32(), 3, 5, 3, 7, /*transpose_b=*/true);
    ops::add_rows(y.f32(), b.f32(), 5, 3);
    return dot(y, dy);
  };
  const train::LinearGrads g = train::linear_backward(x, w, true, dy);
  expect_gradient(x, g.dx, loss, "dx");
  expect_gradient(w, g.dw, loss, "dW");
  expect_gradient(b, g.db, loss, "db");
  EXPECT_FALSE(train::linear_backward(x, w, false, dy).db.defined());
  EXPECT_THROW(train::linear_backward(x, w, true, random_tensor({4, 3}, 5)), Error);
}

TEST(TrainBackward, LayerNormAndRmsNorm) {
  Tensor x = random_tensor({3, 9}, 6, 2.0f), w = random_tensor({9}, 7), b = random_tensor({9}, 8);
  const Tensor dy = random_tensor({3, 9}, 9);
  const auto ln = [&] {
    Tensor y = Tensor::empty({3, 9});
    ops::layer_norm(x.f32(), w.f32(), b.f32(), y.f32(), 3, 9, 1e-6f);
    return dot(y, dy);
  };
  const train::NormGrads g = train::layer_norm_backward(x, w, 1e-6f, dy);
  expect_gradient(x, g.dx, ln, "layer_norm dx", 1e-2f, 5e-3);
  expect_gradient(w, g.dw, ln, "layer_norm dw");
  expect_gradient(b, g.db, ln, "layer_norm db");
  const auto rms = [&] {
    Tensor y = Tensor::empty({3, 9});
    ops::rms_norm(x.f32(), w.f32(), y.f32(), 3, 9, 1e-6f);
    return dot(y, dy);
  };
  const train::NormGrads r = train::rms_norm_backward(x, w, 1e-6f, dy);
  expect_gradient(x, r.dx, rms, "rms_norm dx", 1e-2f, 5e-3);
  expect_gradient(w, r.dw, rms, "rms_norm dw");
}

TEST(TrainBackward, Activations) {
  Tensor x = random_tensor({4, 5}, 10, 2.0f);
  x.f32()[0] = 0.3f;  // keep clear of relu's kink at 0 for the difference quotient
  const Tensor dy = random_tensor({4, 5}, 11);
  const auto apply = [&](void (*op)(float*, int64_t)) {
    Tensor y = x.clone();
    op(y.f32(), y.numel());
    return dot(y, dy);
  };
  expect_gradient(x, train::gelu_erf_backward(x, dy), [&] { return apply(ops::gelu_erf); }, "gelu", 1e-3f);
  for (int64_t i = 0; i < x.numel(); ++i)
    if (std::fabs(x.f32()[i]) < 0.05f) x.f32()[i] = 0.5f;
  expect_gradient(x, train::relu_backward(x, dy), [&] { return apply(ops::relu); }, "relu", 1e-3f);
  Tensor up = random_tensor({4, 5}, 12);
  Tensor dgate, dup;
  train::silu_mul_backward(x, up, dy, dgate, dup);
  const auto swiglu = [&] {
    Tensor gate = x.clone();
    ops::silu_mul(gate.f32(), up.f32(), gate.numel());
    return dot(gate, dy);
  };
  expect_gradient(x, dgate, swiglu, "silu_mul gate", 1e-3f);
  expect_gradient(up, dup, swiglu, "silu_mul up", 1e-3f);
}

TEST(TrainBackward, CausalGroupedAttentionAndRope) {
  // 5 queries after 2 cached keys (q_offset 2), 4 query heads over 2 key/value heads, head size 3,
  // value size 2, rows with padding between tokens.
  const int64_t sq = 5, sk = 7, hq = 4, hkv = 2, d = 3, dv = 2;
  Tensor q = random_tensor({sq, hq * d + 1}, 20), k = random_tensor({sk, hkv * d + 2}, 21), v = random_tensor({sk, hkv * dv}, 22);
  const Tensor dout = random_tensor({sq, hq * dv}, 23);
  ops::AttentionArgs args;
  args.q_len = sq;
  args.kv_len = sk;
  args.q_heads = hq;
  args.kv_heads = hkv;
  args.head_dim = d;
  args.v_head_dim = dv;
  args.scale = 0.7f;
  args.causal = true;
  args.q_offset = 2;
  const auto loss = [&] {
    ops::AttentionArgs a = args;
    Tensor out = Tensor::empty({sq, hq * dv});
    a.q = q.f32(), a.q_stride = hq * d + 1;
    a.k = k.f32(), a.k_stride = hkv * d + 2;
    a.v = v.f32(), a.v_stride = hkv * dv;
    a.out = out.f32(), a.out_stride = hq * dv;
    ops::attention(a);
    return dot(out, dout);
  };
  Tensor dq = Tensor::zeros(q.shape()), dk = Tensor::zeros(k.shape()), dvv = Tensor::zeros(v.shape());
  ops::AttentionArgs a = args;
  a.q = q.f32(), a.q_stride = hq * d + 1;
  a.k = k.f32(), a.k_stride = hkv * d + 2;
  a.v = v.f32(), a.v_stride = hkv * dv;
  train::attention_backward(a, dout.f32(), hq * dv, {dq.f32(), dk.f32(), dvv.f32()});
  // The padding columns get no gradient, as the difference quotient finds.
  expect_gradient(q, dq, loss, "dq", 1e-2f, 3e-3);
  expect_gradient(k, dk, loss, "dk", 1e-2f, 3e-3);
  expect_gradient(v, dvv, loss, "dv", 1e-2f, 3e-3);

  // RoPE: <rope(x), dy> differentiated in x.
  Tensor x = random_tensor({3, 2 * 4}, 24);
  const Tensor dy = random_tensor({3, 2 * 4}, 25);
  const std::vector<int64_t> positions = {0, 5, 11};
  const auto rope = [&] {
    Tensor y = x.clone();
    ops::rope_rotate_half(y.f32(), 3, 2, 4, 8, positions.data(), 10000.0f);
    return dot(y, dy);
  };
  Tensor dx = dy.clone();
  train::rope_rotate_half_backward(dx.f32(), 3, 2, 4, 8, positions.data(), 10000.0f);
  expect_gradient(x, dx, rope, "rope", 1e-2f);
}

}  // namespace
}  // namespace sa2va
