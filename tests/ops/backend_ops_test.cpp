// One harness for every op that has a GPU kernel, after ggml's test-backend-ops: each case builds
// its inputs on the host (odd shapes, strides, every weight format), runs the op on the CPU, which
// is the reference, then on the GPU with copies of the same inputs, and compares what the op wrote.
// Without a GPU (or in a CPU-only build) the cases skip, saying why.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"
#include "ops/ops.h"
#include "ops_test_util.h"
#include "test_util.h"

namespace sa2va {
namespace {

using ops_test::random_vector;

// The tensors of one case live on one device; `f` and `w` hand out their memory to the op.
struct Args {
  std::vector<Tensor> tensors;
  std::vector<WeightMatrix> weights;
  float* f(size_t i) const { return static_cast<float*>(tensors.at(i).device_data()); }
  uint8_t* u8(size_t i) const { return static_cast<uint8_t*>(tensors.at(i).device_data()); }
  const Tensor& t(size_t i) const { return tensors.at(i); }
  // Writes a Tensor front's result into tensor i (same number of elements), on the current device.
  void store(size_t i, const Tensor& result) const {
    ASSERT_EQ(result.numel(), tensors.at(i).numel());
    ASSERT_EQ(result.device(), tensors.at(i).device());
    ops::copy_rows(static_cast<const float*>(result.device_data()), result.numel(), f(i), result.numel(), 1,
                   result.numel());
  }
  const int64_t* i64(size_t i) const { return static_cast<const int64_t*>(tensors.at(i).device_data()); }
};

struct OpCase {
  std::string name;
  std::vector<Tensor> tensors;        // host tensors: inputs, and the outputs' initial contents
  std::vector<WeightMatrix> weights;  // host weight matrices
  std::vector<size_t> outputs;        // tensors the op writes
  std::function<void(const Args&)> run;
  double tolerance = 1e-5;            // max |gpu − cpu| / max(1, max |cpu|)
};

Tensor host(const std::vector<float>& v) { return Tensor::from_vector(v, {static_cast<int64_t>(v.size())}); }
Tensor host_random(int64_t n, uint32_t seed, float lo = -1.f, float hi = 1.f) { return host(random_vector(n, seed, lo, hi)); }
Tensor host_u8(int64_t n, uint32_t seed) {
  Tensor t = Tensor::empty({n}, DType::U8);
  const std::vector<float> v = random_vector(n, seed, 0.f, 255.99f);
  for (int64_t i = 0; i < n; ++i) t.data<uint8_t>()[i] = static_cast<uint8_t>(v[static_cast<size_t>(i)]);
  return t;
}
Tensor host_i64(const std::vector<int64_t>& v) {
  Tensor t = Tensor::empty({static_cast<int64_t>(v.size())}, DType::I64);
  std::copy(v.begin(), v.end(), t.data<int64_t>());
  return t;
}

std::vector<OpCase> elementwise_cases() {
  std::vector<OpCase> cases;
  const int64_t n = 1031;
  using Unary = void (*)(float*, int64_t);
  const std::vector<std::pair<const char*, Unary>> unary = {
      {"gelu_erf", ops::gelu_erf}, {"gelu_tanh", ops::gelu_tanh}, {"silu", ops::silu}, {"relu", ops::relu},
      {"sigmoid", ops::sigmoid},   {"round_bf16", ops::round_bf16}};
  for (const auto& [name, fn] : unary)
    cases.push_back({name, {host_random(n, 1, -6.f, 6.f)}, {}, {0}, [fn = fn](const Args& a) { fn(a.f(0), n); }});
  cases.push_back({"softmax_rows 3x1031", {host_random(3 * n, 2, -20.f, 20.f)}, {}, {0},
                   [](const Args& a) { ops::softmax_rows(a.f(0), 3, n); }});
  std::vector<float> masked = random_vector(2 * 40, 2);
  std::fill(masked.begin() + 40, masked.end(), -INFINITY);  // a row with nothing finite
  cases.push_back({"softmax_rows fully masked row", {host(masked)}, {}, {0},
                   [](const Args& a) { ops::softmax_rows(a.f(0), 2, 40); }});
  cases.push_back({"add", {host_random(n, 3), host_random(n, 4), host_random(n, 5)}, {}, {2},
                   [](const Args& a) { ops::add(a.f(0), a.f(1), a.f(2), n); }});
  cases.push_back({"add into the second operand", {host_random(n, 3), host_random(n, 4)}, {}, {1},
                   [](const Args& a) { ops::add(a.f(0), a.f(1), a.f(1), n); }});
  cases.push_back({"add_rows 5x37", {host_random(5 * 37, 6), host_random(37, 7)}, {}, {0},
                   [](const Args& a) { ops::add_rows(a.f(0), a.f(1), 5, 37); }});
  cases.push_back({"mul_rows 5x37", {host_random(5 * 37, 8), host_random(37, 9)}, {}, {0},
                   [](const Args& a) { ops::mul_rows(a.f(0), a.f(1), 5, 37); }});
  cases.push_back({"add_scaled_rows 5x37", {host_random(5 * 37, 20), host_random(5 * 37, 21), host_random(37, 22)},
                   {}, {0}, [](const Args& a) { ops::add_scaled_rows(a.f(0), a.f(1), a.f(2), 5, 37); }});
  cases.push_back({"add_per_row 5x37", {host_random(5 * 37, 10), host_random(5, 11)}, {}, {0},
                   [](const Args& a) { ops::add_per_row(a.f(0), a.f(1), 5, 37); }});
  cases.push_back({"scale", {host_random(n, 12)}, {}, {0}, [](const Args& a) { ops::scale(a.f(0), -1.7f, n); }});
  cases.push_back({"scale_shift", {host_random(n, 13)}, {}, {0},
                   [](const Args& a) { ops::scale_shift(a.f(0), 0.3f, -2.f, n); }});
  cases.push_back({"add_scaled", {host_random(n, 14), host_random(n, 15)}, {}, {0},
                   [](const Args& a) { ops::add_scaled(a.f(0), a.f(1), 0.25f, n); }});
  cases.push_back({"silu_mul", {host_random(n, 16, -5.f, 5.f), host_random(n, 17)}, {}, {0},
                   [](const Args& a) { ops::silu_mul(a.f(0), a.f(1), n); }});
  cases.push_back({"copy_rows strided", {host_random(7 * 40, 18), host_random(7 * 33, 19)}, {}, {1},
                   [](const Args& a) { ops::copy_rows(a.f(0) + 3, 40, a.f(1), 33, 7, 31); }});
  return cases;
}

std::vector<OpCase> norm_and_rope_cases() {
  std::vector<OpCase> cases;
  cases.push_back({"layer_norm 7x129", {host_random(7 * 129, 20, -3.f, 5.f), host_random(129, 21), host_random(129, 22),
                                        host_random(7 * 129, 23)}, {}, {3},
                   [](const Args& a) { ops::layer_norm(a.f(0), a.f(1), a.f(2), a.f(3), 7, 129, 1e-6f); }});
  cases.push_back({"layer_norm no affine", {host_random(4 * 1000, 24), host_random(4 * 1000, 25)}, {}, {1},
                   [](const Args& a) { ops::layer_norm(a.f(0), nullptr, nullptr, a.f(1), 4, 1000, 1e-5f); }});
  cases.push_back({"rms_norm 5x896", {host_random(5 * 896, 26), host_random(896, 27), host_random(5 * 896, 28)}, {}, {2},
                   [](const Args& a) { ops::rms_norm(a.f(0), a.f(1), a.f(2), 5, 896, 1e-6f); }});
  cases.push_back({"layer_norm_2d 33x77", {host_random(33 * 77, 29), host_random(33, 30), host_random(33, 31),
                                           host_random(33 * 77, 32)}, {}, {3},
                   [](const Args& a) { ops::layer_norm_2d(a.f(0), a.f(1), a.f(2), a.f(3), 33, 77, 1e-6f); }});
  std::vector<int64_t> positions;
  for (int64_t t = 0; t < 9; ++t) positions.push_back(t * 211 + 5);
  cases.push_back({"rope_rotate_half", {host_random(9 * 200, 33), host_i64(positions)}, {}, {0},
                   [](const Args& a) { ops::rope_rotate_half(a.f(0), 9, 3, 64, 200, a.i64(1), 1e6f); },
                   2e-5});
  cases.push_back({"rope_axial_2d", {host_random(70 * 32, 34)}, {}, {0},
                   [](const Args& a) { ops::rope_axial_2d(a.f(0), 70, 32, 8, 8, 10000.f, 66); }});
  return cases;
}

std::vector<OpCase> matrix_cases() {
  std::vector<OpCase> cases;
  for (bool transpose_b : {false, true}) {
    const int64_t M = 37, N = 45, K = 29;
    cases.push_back({std::string("gemm") + (transpose_b ? " Bᵀ" : ""),
                     {host_random(M * 31, 40), host_random((transpose_b ? N * 33 : K * 50), 41), host_random(M * 47, 42)},
                     {}, {2},
                     [=](const Args& a) {
                       ops::gemm(a.f(0), 31, a.f(1), transpose_b ? 33 : 50, a.f(2), 47, M, N, K, transpose_b, 0.5f, 2.f);
                     },
                     1e-5});
  }
  // Operands starting mid-buffer (4-byte aligned only): the product must not assume more.
  cases.push_back({"gemm at unaligned offsets", {host_random(40 * 33, 60), host_random(29 * 50, 61), host_random(40 * 47, 62)},
                   {}, {2},
                   [](const Args& a) { ops::gemm(a.f(0) + 1, 33, a.f(1) + 3, 50, a.f(2) + 5, 47, 37, 45, 29, false, 1.f, 0.f); },
                   1e-5});
  cases.push_back({"gemm with K = 0 zeroes C", {host_random(4, 63), host_random(4, 64), host_random(5 * 7, 65)}, {}, {2},
                   [](const Args& a) { ops::gemm(a.f(0), 1, a.f(1), 7, a.f(2), 7, 5, 7, 0, false, 1.f, 0.f); }});
  cases.push_back({"gemm_at", {host_random(29 * 40, 43), host_random(29 * 45, 44), host_random(37 * 45, 45)}, {}, {2},
                   [](const Args& a) { ops::gemm_at(a.f(0), 40, a.f(1), 45, a.f(2), 45, 37, 45, 29, 1.f, 1.f); },
                   1e-5});
  const int64_t K = 100, N = 133;
  for (WeightFormat format : {WeightFormat::F32, WeightFormat::BF16, WeightFormat::Q8_0, WeightFormat::Q4_0}) {
    const WeightMatrix w = WeightMatrix::prepare(ops_test::random_tensor({N, K}, 46), format);
    for (int64_t M : {1, 3, 8, 9, 70}) {
      // The two sides round the activations differently except with F32 weights: the GPU keeps them in
      // f32 for small M and takes bf16 for larger M; the CPU quantizes them to 8 bits in its Q8_0 / Q4_0
      // kernels and rounds them to bf16 in its bf16 kernels (for small M too on AVX-512 BF16).
      const bool coarse = format != WeightFormat::F32;
      cases.push_back({std::string("linear ") + weight_format_name(format) + " M=" + std::to_string(M),
                       {host_random(M * K, 47), host_random(N, 48), host_random(M * N, 49)}, {w}, {2},
                       [M](const Args& a) { ops::linear(a.f(0), M, K, a.weights[0], a.f(1), a.f(2)); },
                       coarse ? 2e-2 : 1e-5});
    }
  }
  {  // BF16 rows read 16 bytes at a time (K a multiple of 8; 17 reads per row, not a multiple of 32 lanes)
    const int64_t K8 = 136;
    const WeightMatrix w = WeightMatrix::prepare(ops_test::random_tensor({N, K8}, 75), WeightFormat::BF16);
    for (int64_t M : {1, 5, 8})
      cases.push_back({"linear bf16 K=136 M=" + std::to_string(M),
                       {host_random(M * K8, 76), host_random(N, 77), host_random(M * N, 78)}, {w}, {2},
                       [M](const Args& a) { ops::linear(a.f(0), M, K8, a.weights[0], a.f(1), a.f(2)); }, 2e-2});
  }
  {  // one row of activations (decode) starting and ending mid-buffer, 4-byte aligned only, with K a
     // multiple of 8: the 16-byte reads of the one-row kernel must not be taken for this x
    const int64_t K8 = 136;
    const WeightMatrix w = WeightMatrix::prepare(ops_test::random_tensor({N, K8}, 79), WeightFormat::BF16);
    cases.push_back({"linear bf16 M=1 at unaligned offsets", {host_random(K8 + 1, 80), host_random(N, 81),
                                                             host_random(N + 3, 82)},
                     {w}, {2},
                     [](const Args& a) { ops::linear(a.f(0) + 1, 1, K8, a.weights[0], a.f(1), a.f(2) + 3); }, 2e-2});
  }
  {  // the gate and up projections of a gated MLP as one call
    const WeightMatrix up = WeightMatrix::prepare(ops_test::random_tensor({72, K}, 70), WeightFormat::Q4_0);
    const WeightMatrix gate = WeightMatrix::prepare(ops_test::random_tensor({136, K}, 71), WeightFormat::Q4_0);
    cases.push_back({"linear_pair q4_0", {host_random(K, 72), host_random(136, 73), host_random(72, 74)}, {gate, up},
                     {1, 2},
                     [](const Args& a) { ops::linear_pair(a.f(0), 1, K, a.weights[0], a.f(1), a.weights[1], a.f(2)); },
                     2e-2});
  }
  // A quantized matrix larger than one dequantized panel (64 MiB of bf16): several panels.
  {
    const int64_t big_k = 4096, big_n = 8256, M = 9;
    const WeightMatrix big = WeightMatrix::prepare(ops_test::random_tensor({big_n, big_k}, 66), WeightFormat::Q4_0);
    cases.push_back({"linear q4_0 in several panels", {host_random(M * big_k, 67), host_random(big_n, 68),
                                                       host_random(M * big_n, 69)},
                     {big}, {2},
                     [=](const Args& a) { ops::linear(a.f(0), M, big_k, a.weights[0], a.f(1), a.f(2)); }, 2e-2});
  }
  return cases;
}

std::vector<OpCase> attention_cases() {
  std::vector<OpCase> cases;
  struct Shape_ {
    const char* name;
    int64_t sq, sk, hq, hkv, d, dv, offset;
    bool causal, mask;
  };
  const Shape_ shapes[] = {Shape_{"causal GQA offset", 5, 37, 4, 2, 64, 64, 32, true, false},
                           Shape_{"masked", 7, 300, 2, 2, 32, 32, 0, false, true},
                           Shape_{"Dv != D", 6, 129, 3, 1, 32, 48, 0, false, false},
                           Shape_{"prefill causal", 260, 260, 2, 1, 64, 64, 0, true, false},
                           Shape_{"one query, long keys", 1, 1500, 2, 2, 128, 128, 1499, true, false},
                           Shape_{"SAM2 head 256", 3, 70, 1, 1, 256, 256, 0, false, false},
                           Shape_{"Hiera head 72, odd rows", 131, 131, 2, 2, 72, 72, 0, false, false},
                           Shape_{"odd head 20, masked", 70, 90, 3, 3, 20, 6, 0, false, true},
                           Shape_{"prefill causal offset, GQA 7", 150, 190, 14, 2, 64, 64, 40, true, false},
                           Shape_{"head 256, 70 rows", 70, 90, 1, 1, 256, 256, 0, false, false},
                           Shape_{"head 256, Dv 136 (a partial second chunk)", 20, 33, 1, 1, 256, 136, 0, false, true},
                           // Few rows over keys the GPU splits in blocks of 256, causal with a small offset:
                           // rows see 4-11 keys, so every block after the first has nothing visible to merge.
                           Shape_{"8 causal rows over 600 keys, offset 3", 8, 600, 4, 2, 64, 64, 3, true, false}};
  // bf16_operands: the GPU's flash kernel rounds q, k, v and the probabilities as the CPU does, but
  // sums in another order (and a CPU without AVX-512 BF16 computes this mode in f32): 1e-2.
  for (bool bf16 : {false, true})
  for (const Shape_& s : shapes) {
    const int64_t qs = s.hq * s.d + 3, ks = s.hkv * s.d + 5, vs = s.hkv * s.dv + 1, os = s.hq * s.dv + 2;
    std::vector<float> mask = random_vector(s.sq * s.sk, 53, -2.f, 0.f);
    if (s.mask) {
      for (int64_t i = 0; i < s.sq; ++i) mask[static_cast<size_t>(i * s.sk + (i * 7) % s.sk)] = -INFINITY;
      // Row 1 sees nothing: its output must be zeros.
      std::fill(mask.begin() + s.sk, mask.begin() + 2 * s.sk, -INFINITY);
    }
    cases.push_back({std::string(bf16 ? "attention bf16 " : "attention ") + s.name,
                     {host_random(s.sq * qs, 50), host_random(s.sk * ks, 51), host_random(s.sk * vs, 52),
                      host_random(s.sq * os, 54), host(mask)},
                     {}, {3},
                     [s, qs, ks, vs, os, bf16](const Args& a) {
                       ops::AttentionArgs args;
                       args.q = a.f(0); args.q_stride = qs;
                       args.k = a.f(1); args.k_stride = ks;
                       args.v = a.f(2); args.v_stride = vs;
                       args.out = a.f(3); args.out_stride = os;
                       args.q_len = s.sq; args.kv_len = s.sk; args.q_heads = s.hq; args.kv_heads = s.hkv;
                       args.head_dim = s.d; args.v_head_dim = s.dv; args.scale = 1.f / std::sqrt(float(s.d));
                       args.causal = s.causal; args.q_offset = s.offset;
                       args.mask = s.mask ? a.f(4) : nullptr;
                       args.bf16_operands = bf16;
                       ops::attention(args);
                     },
                     bf16 ? 1e-2 : 1e-5});
  }
  // Hiera-like windows: 3 problems of 16 tokens, 2 heads of 24.
  for (bool bf16 : {false, true})
  cases.push_back({bf16 ? "attention_batched bf16 windows" : "attention_batched windows",
                   {host_random(3 * 16 * 48, 55), host_random(3 * 16 * 48, 56), host_random(3 * 16 * 48, 57),
                    host_random(3 * 16 * 48, 58)},
                   {}, {3},
                   [bf16](const Args& a) {
                     ops::AttentionArgs args;
                     args.q = a.f(0); args.k = a.f(1); args.v = a.f(2); args.out = a.f(3);
                     args.q_stride = args.k_stride = args.v_stride = args.out_stride = 48;
                     args.q_len = args.kv_len = 16; args.q_heads = args.kv_heads = 2; args.head_dim = 24;
                     args.scale = 0.2f;
                     args.bf16_operands = bf16;
                     ops::attention_batched(args, ops::AttentionBatch{3, 16 * 48, 16 * 48, 16 * 48, 16 * 48});
                   },
                   bf16 ? 1e-2 : 1e-5});
  return cases;
}

std::vector<OpCase> layout_cases() {
  std::vector<OpCase> cases;
  cases.push_back({"transpose_2d 37x45", {host_random(37 * 45, 60), host_random(37 * 45, 61)}, {}, {1},
                   [](const Args& a) { ops::transpose_2d(a.f(0), 37, 45, a.f(1)); }});
  cases.push_back({"window_partition 13x11x3 win 4x4", {host_random(13 * 11 * 3, 62), host_random(4 * 3 * 16 * 3, 63)},
                   {}, {1}, [](const Args& a) { ops::window_partition(a.f(0), 13, 11, 3, 4, 4, a.f(1)); }});
  cases.push_back({"window_unpartition + residual",
                   {host_random(4 * 3 * 16 * 3, 64), host_random(13 * 11 * 3, 65), host_random(13 * 11 * 3, 66)}, {},
                   {1}, [](const Args& a) { ops::window_unpartition(a.f(0), 4, 4, 13, 11, 3, a.f(1), a.f(2)); }});
  return cases;
}

std::vector<OpCase> image_cases() {
  std::vector<OpCase> cases;
  struct Conv {
    const char* name;
    int64_t cin, cout, h, w, kh, kw;
    ops::Conv2dArgs args;
  };
  for (const Conv& c : {Conv{"conv2d 3x3 stride 2 pad 1", 5, 7, 13, 11, 3, 3, {2, 2, 1, 1, 1, 1, 1}},
                        Conv{"conv2d 7x7 stride 4 pad 3 (patch embed)", 3, 8, 29, 31, 7, 7, {4, 4, 3, 3, 1, 1, 1}},
                        Conv{"conv2d dilated, 2 groups", 4, 6, 12, 10, 3, 3, {1, 1, 2, 2, 2, 2, 2}},
                        Conv{"conv2d depthwise 7x7", 6, 6, 15, 14, 7, 7, {1, 1, 3, 3, 1, 1, 6}},
                        Conv{"conv2d pointwise", 9, 5, 8, 7, 1, 1, {}}}) {
    const ConvWeight w = ConvWeight::prepare(
        ops_test::random_tensor({c.cout, c.cin / c.args.groups, c.kh, c.kw}, 80));
    const int64_t ho = (c.h + 2 * c.args.pad_h - c.args.dilation_h * (c.kh - 1) - 1) / c.args.stride_h + 1;
    const int64_t wo = (c.w + 2 * c.args.pad_w - c.args.dilation_w * (c.kw - 1) - 1) / c.args.stride_w + 1;
    cases.push_back({c.name, {host_random(c.cin * c.h * c.w, 81), host_random(c.cout, 82), host_random(c.cout * ho * wo, 83)},
                     {w.matrix}, {2},
                     [c, w](const Args& a) {
                       ConvWeight wd = w;
                       wd.matrix = a.weights[0];
                       a.store(2, ops::conv2d(a.t(0).view({c.cin, c.h, c.w}), wd, a.t(1), c.args));
                     }});
  }
  {
    const ConvWeight w = ConvWeight::prepare_transposed_2x2(ops_test::random_tensor({6, 4, 2, 2}, 84));
    cases.push_back({"conv_transpose_2x2", {host_random(6 * 5 * 7, 85), host_random(4, 86), host_random(4 * 10 * 14, 87)},
                     {w.matrix}, {2},
                     [w](const Args& a) {
                       ConvWeight wd = w;
                       wd.matrix = a.weights[0];
                       a.store(2, ops::conv_transpose_2x2(a.t(0).view({6, 5, 7}), wd, a.t(1)));
                     }});
  }
  cases.push_back({"max_pool2d 3 stride 2", {host_random(4 * 11 * 9, 88), host_random(4 * 5 * 4, 89)}, {}, {1},
                   [](const Args& a) { a.store(1, ops::max_pool2d(a.t(0).view({4, 11, 9}), 3, 2)); }});
  struct Resize {
    const char* name;
    int64_t h, w, oh, ow;
    int kind;  // 0 bilinear, 1 bilinear align_corners, 2 bicubic, 3 nearest
  };
  for (const Resize& r : {Resize{"bilinear up", 7, 9, 16, 21, 0}, Resize{"bilinear down", 33, 31, 10, 12, 0},
                          Resize{"bilinear align_corners", 7, 9, 16, 21, 1}, Resize{"bicubic", 13, 11, 28, 9, 2},
                          Resize{"nearest odd", 7, 9, 10, 4, 3}, Resize{"nearest 2x", 5, 6, 10, 12, 3}}) {
    cases.push_back({std::string("interpolate ") + r.name, {host_random(3 * r.h * r.w, 90), host_random(3 * r.oh * r.ow, 91)},
                     {}, {1},
                     [r](const Args& a) {
                       const Tensor x = a.t(0).view({3, r.h, r.w});
                       a.store(1, r.kind == 2   ? ops::interpolate_bicubic(x, r.oh, r.ow)
                                  : r.kind == 3 ? ops::interpolate_nearest(x, r.oh, r.ow)
                                                : ops::interpolate_bilinear(x, r.oh, r.ow, r.kind == 1));
                     },
                     0.0});  // the same taps summed in the same order: the same float32 results
  }
  cases.push_back({"max_pool_tokens strided", {host_random(2 * 9 * 8 * 10, 92), host_random(2 * 3 * 2 * 7, 93)}, {}, {1},
                   [](const Args& a) { ops::max_pool_tokens(a.f(0), 10, 2, 9, 8, 7, 3, a.f(1)); }});
  cases.push_back({"add_upsampled_nearest_2x", {host_random(10 * 8 * 3, 94), host_random(5 * 4 * 3, 95)}, {}, {0},
                   [](const Args& a) { ops::add_upsampled_nearest_2x(a.t(0).view({10, 8, 3}), a.t(1).view({5, 4, 3})); }});
  cases.push_back({"add_tiled", {host_random(3 * 10 * 9, 96), host_random(3 * 4 * 4, 97)}, {}, {0},
                   [](const Args& a) { ops::add_tiled(a.t(0).view({3, 10, 9}), a.t(1).view({3, 4, 4})); }});
  cases.push_back({"position_embedding_sine", {host_random(16 * 5 * 7, 98)}, {}, {0},
                   [](const Args& a) { a.store(0, ops::position_embedding_sine(16, 5, 7)); }});
  cases.push_back({"position_embedding_random", {host_random(2 * 8, 99), host_random(16 * 6 * 6, 100)}, {}, {1},
                   [](const Args& a) { a.store(1, ops::position_embedding_random(a.t(0).view({2, 8}), 6)); }});
  cases.push_back({"fill_random_normal", {host_random(70000, 101)}, {}, {0},
                   [](const Args& a) { ops::fill_random_normal(a.t(0), 0.5f, 2.f, 7); }});
  // Pillow-style fixed-point taps: three taps per output, weights summing past one (clipping).
  ops::FixedPointTaps taps;
  taps.ksize = 3;
  for (int i = 0; i < 9; ++i) {
    taps.first.push_back(std::min(2 * i, 14));
    taps.count.push_back(i % 4 == 3 ? 2 : 3);
    for (int32_t k : {1 << 20, 3 << 20, 1 << 19}) taps.weights.push_back(k);
  }
  cases.push_back({"resample_rgb8_horizontal", {host_u8(4 * 17 * 3, 102), host_u8(4 * 9 * 3, 103)}, {}, {1},
                   [taps](const Args& a) { ops::resample_rgb8_horizontal(a.u8(0), 17, 4, taps, a.u8(1)); }, 0.0});
  ops::FixedPointTaps rows = taps;
  for (auto& f : rows.first) f += 3;  // source rows 3..19
  cases.push_back({"resample_u8_vertical", {host_u8(17 * 20, 104), host_u8(9 * 20, 105)}, {}, {1},
                   [rows](const Args& a) { ops::resample_u8_vertical(a.u8(0), 17, 20, 3, rows, a.u8(1)); }, 0.0});
  cases.push_back({"normalize_rgb8_chw", {host_u8(6 * 7 * 3, 106), host_random(3 * 6 * 7, 107)}, {}, {1},
                   [](const Args& a) {
                     const float mean[3] = {0.485f, 0.456f, 0.406f}, stdev[3] = {0.229f, 0.224f, 0.225f};
                     ops::normalize_rgb8_chw(a.u8(0), 6, 7, mean, stdev, a.f(1));
                   },
                   0.0});
  return cases;
}

std::vector<OpCase> all_cases() {
  std::vector<OpCase> all;
  for (auto part : {elementwise_cases(), norm_and_rope_cases(), matrix_cases(), attention_cases(), layout_cases(),
                    image_cases()})
    for (auto& c : part) all.push_back(std::move(c));
  return all;
}

double compare(const Tensor& expected, const Tensor& got) {
  const std::vector<float> e = expected.to_vector(), g = got.to_vector();
  double scale = 1, worst = 0;
  for (float v : e)
    if (std::isfinite(v)) scale = std::max(scale, static_cast<double>(std::fabs(v)));
  for (size_t i = 0; i < e.size(); ++i) {
    const double d = e[i] == g[i] ? 0.0 : std::fabs(static_cast<double>(e[i]) - g[i]);  // equal infinities agree
    if (!(d <= worst)) worst = d;  // NaN counts as the worst
  }
  return worst / scale;
}

// Every case on `device` (inside a DeviceScope for it) against the CPU; returns nothing, the
// comparisons are the test's expectations. exact: every output must equal the CPU's.
void run_against_cpu(Device device, bool exact) {
  for (const OpCase& c : all_cases()) {
    SCOPED_TRACE(c.name);
    Args cpu_args;
    for (const Tensor& t : c.tensors) cpu_args.tensors.push_back(t.clone());
    cpu_args.weights = c.weights;
    c.run(cpu_args);
    Args device_args;
    {
      DeviceScope on_device(device);
      for (const Tensor& t : c.tensors) device_args.tensors.push_back(t.to(device));
      for (const WeightMatrix& w : c.weights) device_args.weights.push_back(w.to(device));
      c.run(device_args);
      for (size_t o : c.outputs) {
        ASSERT_EQ(device_args.tensors[o].device(), device) << c.name;
        const Tensor back = device_args.tensors[o].to(Device::cpu());
        const double err = compare(cpu_args.tensors[o], back);
        EXPECT_LE(err, exact ? 0.0 : c.tolerance) << c.name << ": output " << o << " differs from the CPU by " << err;
      }
    }
  }
}

TEST(BackendOps, EveryGpuKernelMatchesTheCpu) {
  std::string why;
  if (!test::gpu_available(&why)) GTEST_SKIP() << "no GPU to compare with the CPU: " << why;
  run_against_cpu(Device::cuda(0), /*exact=*/false);
}

// The fronts' device plumbing on every machine: a host-memory stand-in for cuda:0 runs the CPU
// kernels on tensors labelled cuda:0, so outputs must come back bit for bit, and any front that
// allocated on the wrong device or read device memory on the host would throw.
TEST(BackendOps, FrontsKeepEveryOpOnItsDevice) {
  test::FakeDeviceAllocator stand_in;
  register_allocator(DeviceType::CUDA, &stand_in);
  struct Restore {
    ~Restore() { register_allocator(DeviceType::CUDA, nullptr); }
  } restore;
  run_against_cpu(Device::cuda(0), /*exact=*/true);
}

// The harness's cases are well formed: on the CPU every case runs, writes its outputs, and a
// second run on fresh copies gives the same numbers (what the GPU run is compared with).
TEST(BackendOps, CasesRunOnTheCpu) {
  for (const OpCase& c : all_cases()) {
    SCOPED_TRACE(c.name);
    Args first, second;
    for (const Tensor& t : c.tensors) {
      first.tensors.push_back(t.clone());
      second.tensors.push_back(t.clone());
    }
    first.weights = second.weights = c.weights;
    c.run(first);
    c.run(second);
    for (size_t o : c.outputs) {
      EXPECT_EQ(compare(first.tensors[o], second.tensors[o]), 0.0);
      EXPECT_GT(compare(c.tensors[o], first.tensors[o]), 0.0) << "the op did not write output " << o;
    }
  }
}

TEST(BackendOps, TensorFrontsKeepDataOnTheGpu) {
  std::string why;
  if (!test::gpu_available(&why)) GTEST_SKIP() << "no GPU: " << why;
  DeviceScope on_gpu(Device::cuda(0));
  const Tensor x = ops_test::random_tensor({6, 7, 5}, 70);
  const Tensor t = ops::transpose_01(x.to(Device::cuda(0)));
  EXPECT_EQ(t.device(), Device::cuda(0));
  const std::vector<float> a = t.to_vector(), b = [&] {
    DeviceScope on_cpu(Device::cpu());
    return ops::transpose_01(x).to_vector();
  }();
  EXPECT_EQ(a, b);
  const Tensor table = ops_test::random_tensor({11, 9}, 71).to(DType::BF16);
  const std::vector<int64_t> rows = {3, 0, 10, 3};
  const Tensor g = ops::gather_rows(table.to(Device::cuda(0)), rows);
  EXPECT_EQ(g.device(), Device::cuda(0));
  const std::vector<float> gathered = g.to_vector();
  const std::vector<float> expected = [&] {
    DeviceScope on_cpu(Device::cpu());
    return ops::gather_rows(table, rows).to_vector();
  }();
  EXPECT_EQ(gathered, expected);
  const Tensor shuffled = ops::pixel_shuffle_v2(ops_test::random_tensor({36, 5}, 72).to(Device::cuda(0)), 6);
  EXPECT_EQ(shuffled.device(), Device::cuda(0));
  const WeightMatrix w = WeightMatrix::prepare(ops_test::random_tensor({13, 7}, 73), WeightFormat::BF16);
  const Tensor y = ops::linear(ops_test::random_tensor({2, 7}, 74).to(Device::cuda(0)), w.to(Device::cuda(0)));
  EXPECT_EQ(y.device(), Device::cuda(0));
  EXPECT_EQ(y.shape(), (Shape{2, 13}));
}

}  // namespace
}  // namespace sa2va
