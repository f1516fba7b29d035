#include "train/backward.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/threadpool.h"
#include "ops/ops.h"

namespace sa2va::train {
namespace {

void check_rows(const Tensor& t, int64_t cols, const char* what) {
  check(t.defined() && t.dim() == 2 && t.dtype() == DType::F32 && t.size(1) == cols && t.is_contiguous(),
        std::string(what) + " must be a contiguous F32 [N, " + std::to_string(cols) + "] tensor");
}

void check_same(const Tensor& a, const Tensor& b, const char* what) {
  check(a.defined() && b.defined() && a.dtype() == DType::F32 && b.dtype() == DType::F32 && a.shape() == b.shape() &&
            a.is_contiguous() && b.is_contiguous(),
        std::string(what) + ": input and gradient must be contiguous F32 tensors of one shape");
}

}  // namespace

Tensor linear_forward(const Tensor& x, const Tensor& w, const Tensor& b) {
  const Tensor xc = x.contiguous();
  const int64_t n = xc.size(0), in = xc.size(1), out = w.size(0);
  check(w.dim() == 2 && w.size(1) == in, "linear: input " + shape_str(x.shape()) + " for weight " + shape_str(w.shape()));
  Tensor y = Tensor::empty({n, out});
  ops::gemm(xc.f32(), in, w.f32(), in, y.f32(), out, n, out, in, /*transpose_b=*/true);
  if (b.defined()) ops::add_rows(y.f32(), b.f32(), n, out);
  return y;
}

void accumulate(std::map<std::string, Tensor>& into, const std::string& name, const Tensor& g) {
  auto it = into.find(name);
  if (it == into.end()) into[name] = g.contiguous().clone();
  else accumulate(it->second, g);
}

void accumulate(Tensor& into, const Tensor& g) {
  check(into.numel() == g.numel(), "gradient sum: sizes differ");
  const Tensor gc = g.contiguous();
  ops::add(into.f32(), gc.f32(), into.f32(), gc.numel());
}

LinearGrads linear_backward(const Tensor& x, const Tensor& weight, bool has_bias, const Tensor& dy) {
  check(weight.defined() && weight.dim() == 2 && weight.dtype() == DType::F32 && weight.is_contiguous(),
        "linear backward: the weight must be a contiguous F32 [out, in] tensor");
  const int64_t out = weight.size(0), in = weight.size(1);
  check_rows(x, in, "linear backward: x");
  check_rows(dy, out, "linear backward: dy");
  const int64_t n = x.size(0);
  check(dy.size(0) == n, "linear backward: x and dy differ in rows");
  LinearGrads g;
  g.dx = Tensor::empty({n, in});
  ops::gemm(dy.f32(), out, weight.f32(), in, g.dx.f32(), in, n, in, out, /*transpose_b=*/false);
  g.dw = Tensor::empty({out, in});
  ops::gemm_at(dy.f32(), out, x.f32(), in, g.dw.f32(), in, out, in, n);
  if (has_bias) {
    g.db = Tensor::zeros({out});
    float* db = g.db.f32();
    const float* rows = dy.f32();
    for (int64_t r = 0; r < n; ++r)
      for (int64_t o = 0; o < out; ++o) db[o] += rows[r * out + o];
  }
  return g;
}

NormGrads layer_norm_backward(const Tensor& x, const Tensor& weight, float eps, const Tensor& dy) {
  const int64_t d = weight.numel();
  check_rows(x, d, "layer_norm backward: x");
  check_rows(dy, d, "layer_norm backward: dy");
  const int64_t n = x.size(0);
  NormGrads g{Tensor::empty({n, d}), Tensor::zeros({d}), Tensor::zeros({d})};
  const Tensor wc = weight.contiguous();
  const float* w = wc.f32();
  float* dw = g.dw.f32();
  float* db = g.db.f32();
  float* dx = g.dx.f32();
  for (int64_t r = 0; r < n; ++r) {
    const float* xr = x.f32() + r * d;
    const float* gr = dy.f32() + r * d;
    double mean = 0, var = 0;
    for (int64_t i = 0; i < d; ++i) mean += xr[i];
    mean /= static_cast<double>(d);
    for (int64_t i = 0; i < d; ++i) var += (xr[i] - mean) * (xr[i] - mean);
    var /= static_cast<double>(d);
    const double inv = 1.0 / std::sqrt(var + eps);
    // With x̂ = (x − mean)·inv and g = dy·w: dx = inv·(g − mean(g) − x̂·mean(g·x̂)).
    double mean_g = 0, mean_gx = 0;
    for (int64_t i = 0; i < d; ++i) {
      const double xhat = (xr[i] - mean) * inv, gi = static_cast<double>(gr[i]) * w[i];
      mean_g += gi;
      mean_gx += gi * xhat;
      dw[i] += static_cast<float>(gr[i] * xhat);
      db[i] += gr[i];
    }
    mean_g /= static_cast<double>(d);
    mean_gx /= static_cast<double>(d);
    for (int64_t i = 0; i < d; ++i) {
      const double xhat = (xr[i] - mean) * inv;
      dx[r * d + i] = static_cast<float>(inv * (static_cast<double>(gr[i]) * w[i] - mean_g - xhat * mean_gx));
    }
  }
  return g;
}

NormGrads rms_norm_backward(const Tensor& x, const Tensor& weight, float eps, const Tensor& dy) {
  const int64_t d = weight.numel();
  check_rows(x, d, "rms_norm backward: x");
  check_rows(dy, d, "rms_norm backward: dy");
  const int64_t n = x.size(0);
  NormGrads g{Tensor::empty({n, d}), Tensor::zeros({d}), Tensor()};
  const Tensor wc = weight.contiguous();
  const float* w = wc.f32();
  float* dw = g.dw.f32();
  float* dx = g.dx.f32();
  for (int64_t r = 0; r < n; ++r) {
    const float* xr = x.f32() + r * d;
    const float* gr = dy.f32() + r * d;
    double ms = 0;
    for (int64_t i = 0; i < d; ++i) ms += static_cast<double>(xr[i]) * xr[i];
    ms /= static_cast<double>(d);
    const double inv = 1.0 / std::sqrt(ms + eps);
    // dx = inv·(g − x̂·mean(g·x̂)) with x̂ = x·inv, g = dy·w.
    double mean_gx = 0;
    for (int64_t i = 0; i < d; ++i) {
      const double xhat = xr[i] * inv;
      mean_gx += static_cast<double>(gr[i]) * w[i] * xhat;
      dw[i] += static_cast<float>(gr[i] * xhat);
    }
    mean_gx /= static_cast<double>(d);
    for (int64_t i = 0; i < d; ++i)
      dx[r * d + i] = static_cast<float>(inv * (static_cast<double>(gr[i]) * w[i] - xr[i] * inv * mean_gx));
  }
  return g;
}

Tensor gelu_erf_backward(const Tensor& x, const Tensor& dy) {
  check_same(x, dy, "gelu backward");
  Tensor dx = Tensor::empty(x.shape());
  constexpr double kInvSqrt2 = 0.70710678118654752440, kInvSqrt2Pi = 0.39894228040143267794;
  const float* xs = x.f32();
  const float* dys = dy.f32();
  float* out = dx.f32();
  parallel_for(x.numel(), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const double v = xs[i];
      const double grad = 0.5 * (1 + std::erf(v * kInvSqrt2)) + v * kInvSqrt2Pi * std::exp(-0.5 * v * v);
      out[i] = static_cast<float>(grad * dys[i]);
    }
  }, 4096);
  return dx;
}

Tensor relu_backward(const Tensor& x, const Tensor& dy) {
  check_same(x, dy, "relu backward");
  Tensor dx = Tensor::empty(x.shape());
  const float* xs = x.f32();
  const float* dys = dy.f32();
  float* out = dx.f32();
  for (int64_t i = 0; i < x.numel(); ++i) out[i] = xs[i] > 0 ? dys[i] : 0.0f;
  return dx;
}

void silu_mul_backward(const Tensor& gate, const Tensor& up, const Tensor& dy, Tensor& dgate, Tensor& dup) {
  check_same(gate, dy, "silu_mul backward");
  check_same(up, dy, "silu_mul backward");
  dgate = Tensor::empty(gate.shape());
  dup = Tensor::empty(up.shape());
  const float* gs = gate.f32();
  const float* us = up.f32();
  const float* dys = dy.f32();
  float* dg = dgate.f32();
  float* du = dup.f32();
  for (int64_t i = 0; i < gate.numel(); ++i) {
    const double a = gs[i];
    const double s = 1 / (1 + std::exp(-a));
    const double silu = a * s;
    du[i] = static_cast<float>(silu * dys[i]);
    dg[i] = static_cast<float>(dys[i] * us[i] * s * (1 + a * (1 - s)));
  }
}

void attention_backward(const ops::AttentionArgs& a, const float* dout, int64_t dout_stride, const AttentionGrads& grads) {
  check(a.mask == nullptr, "attention backward: additive masks are not supported");
  check(a.q_heads % a.kv_heads == 0, "attention backward: query heads must be a multiple of key/value heads");
  const int64_t sq = a.q_len, sk = a.kv_len, d = a.head_dim, dv = a.v_head_dim ? a.v_head_dim : a.head_dim;
  const int64_t n_rep = a.q_heads / a.kv_heads;
  for (int64_t j = 0; j < sk; ++j) {
    std::fill_n(grads.dk + j * a.k_stride, a.kv_heads * d, 0.0f);
    std::fill_n(grads.dv + j * a.v_stride, a.kv_heads * dv, 0.0f);
  }
  Tensor qh = Tensor::empty({sq, d}), kh = Tensor::empty({sk, d}), vh = Tensor::empty({sk, dv});
  Tensor doh = Tensor::empty({sq, dv}), p = Tensor::empty({sq, sk}), dp = Tensor::empty({sq, sk});
  Tensor dqh = Tensor::empty({sq, d}), dkh = Tensor::empty({sk, d}), dvh = Tensor::empty({sk, dv});
  for (int64_t h = 0; h < a.q_heads; ++h) {
    const int64_t g = h / n_rep;
    ops::copy_rows(a.q + h * d, a.q_stride, qh.f32(), d, sq, d);
    ops::copy_rows(a.k + g * d, a.k_stride, kh.f32(), d, sk, d);
    ops::copy_rows(a.v + g * dv, a.v_stride, vh.f32(), dv, sk, dv);
    ops::copy_rows(dout + h * dv, dout_stride, doh.f32(), dv, sq, dv);
    // P = softmax(scale·q·kᵀ) with the causal mask, recomputed.
    ops::gemm(qh.f32(), d, kh.f32(), d, p.f32(), sk, sq, sk, d, /*transpose_b=*/true, a.scale);
    if (a.causal)
      for (int64_t i = 0; i < sq; ++i)
        for (int64_t j = a.q_offset + i + 1; j < sk; ++j) p.f32()[i * sk + j] = -INFINITY;
    ops::softmax_rows(p.f32(), sq, sk);
    // dP = dO·vᵀ; dS = P ⊙ (dP − rowsum(dP ⊙ P)).
    ops::gemm(doh.f32(), dv, vh.f32(), dv, dp.f32(), sk, sq, sk, dv, /*transpose_b=*/true);
    for (int64_t i = 0; i < sq; ++i) {
      float* pr = p.f32() + i * sk;
      float* dr = dp.f32() + i * sk;
      double row = 0;
      for (int64_t j = 0; j < sk; ++j) row += static_cast<double>(pr[j]) * dr[j];
      for (int64_t j = 0; j < sk; ++j) dr[j] = pr[j] * (dr[j] - static_cast<float>(row));
    }
    // dq = scale·dS·k; dk += scale·dSᵀ·q; dv += Pᵀ·dO.
    ops::gemm(dp.f32(), sk, kh.f32(), d, dqh.f32(), d, sq, d, sk, /*transpose_b=*/false, a.scale);
    ops::copy_rows(dqh.f32(), d, grads.dq + h * d, a.q_stride, sq, d);
    const Tensor dst = ops::transpose_2d(dp), pt = ops::transpose_2d(p);
    ops::gemm(dst.f32(), sq, qh.f32(), d, dkh.f32(), d, sk, d, sq, /*transpose_b=*/false, a.scale);
    ops::gemm(pt.f32(), sq, doh.f32(), dv, dvh.f32(), dv, sk, dv, sq, /*transpose_b=*/false);
    for (int64_t j = 0; j < sk; ++j) {
      ops::add(grads.dk + j * a.k_stride + g * d, dkh.f32() + j * d, grads.dk + j * a.k_stride + g * d, d);
      ops::add(grads.dv + j * a.v_stride + g * dv, dvh.f32() + j * dv, grads.dv + j * a.v_stride + g * dv, dv);
    }
  }
}

void rope_rotate_half_backward(float* dx, int64_t tokens, int64_t heads, int64_t head_dim, int64_t stride,
                               const int64_t* positions, float theta) {
  std::vector<int64_t> back(positions, positions + tokens);
  for (int64_t& p : back) p = -p;  // the rotation by the opposite angle
  ops::rope_rotate_half(dx, tokens, heads, head_dim, stride, back.data(), theta);
}

}  // namespace sa2va::train
