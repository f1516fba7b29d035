// ops::attention on Sa2VA's real attention shapes: the f32 path (OpenBLAS sgemm per block of
// query rows, full softmax) beside the fused bf16 kernel (bf16 mode), same inputs, same run.
// Counter GFLOP/s = 2·Sq·Sk·(D + Dv)·heads per call over wall time.
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "ops/ops.h"

namespace {

struct Shape {
  int64_t q_len, kv_len, q_heads, kv_heads, head_dim;
  bool causal;
  int64_t v_head_dim = 0;  // 0 = head_dim
};

void BM_Attention(benchmark::State& state, Shape s, bool bf16) {
  std::mt19937 gen(1);
  std::uniform_real_distribution<float> dist(-1.f, 1.f);
  auto random = [&](int64_t n) {
    std::vector<float> v(static_cast<size_t>(n));
    for (auto& x : v) x = dist(gen);
    return v;
  };
  const int64_t dv = s.v_head_dim > 0 ? s.v_head_dim : s.head_dim;
  const std::vector<float> q = random(s.q_len * s.q_heads * s.head_dim), k = random(s.kv_len * s.kv_heads * s.head_dim),
                           v = random(s.kv_len * s.kv_heads * dv);
  std::vector<float> out(static_cast<size_t>(s.q_len * s.q_heads * dv));
  sa2va::ops::AttentionArgs a;
  a.q = q.data(), a.q_stride = s.q_heads * s.head_dim;
  a.k = k.data(), a.k_stride = s.kv_heads * s.head_dim;
  a.v = v.data(), a.v_stride = s.kv_heads * dv;
  a.out = out.data(), a.out_stride = s.q_heads * dv;
  a.v_head_dim = dv;
  a.q_len = s.q_len, a.kv_len = s.kv_len, a.q_heads = s.q_heads, a.kv_heads = s.kv_heads, a.head_dim = s.head_dim;
  a.scale = 1.f / std::sqrt(static_cast<float>(s.head_dim));
  a.causal = s.causal;
  a.bf16_operands = bf16;
  for (auto _ : state) {
    sa2va::ops::attention(a);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  const double pairs = s.causal ? 0.5 * s.q_len * s.kv_len : 1.0 * s.q_len * s.kv_len;
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * pairs * static_cast<double>(s.head_dim + dv) * s.q_heads * 1e-9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
}

#define SA2VA_ATTENTION_SHAPE(name, ...)                                                                    \
  BENCHMARK_CAPTURE(BM_Attention, name##_f32, Shape{__VA_ARGS__}, false)                                    \
      ->Unit(benchmark::kMillisecond)->UseRealTime()->MeasureProcessCPUTime();                              \
  BENCHMARK_CAPTURE(BM_Attention, name##_bf16, Shape{__VA_ARGS__}, true)                                    \
      ->Unit(benchmark::kMillisecond)->UseRealTime()->MeasureProcessCPUTime()

// SAM2 memory attention on a 64x64 map: cross-attention to 5 conditioning + 6 tracked memories,
// and self-attention; the cross-attention again with its values in the memory's own 64 channels
// (projected after the weighted sum). InternViT (1025 tokens, 16 heads of 64) and a Qwen2-0.5B causal prefill.
SA2VA_ATTENTION_SHAPE(sam2_memory_cross_4096x45056x256, 4096, 11 * 4096, 1, 1, 256, false);
SA2VA_ATTENTION_SHAPE(sam2_memory_cross_4096x45056x256_v64, 4096, 11 * 4096, 1, 1, 256, false, 64);
SA2VA_ATTENTION_SHAPE(sam2_memory_self_4096x4096x256, 4096, 4096, 1, 1, 256, false);
SA2VA_ATTENTION_SHAPE(vit_1025x1025_16x64, 1025, 1025, 16, 16, 64, false);
SA2VA_ATTENTION_SHAPE(llm_prefill_causal_2048_14x64_gqa2, 2048, 2048, 14, 2, 64, true);

}  // namespace

BENCHMARK_MAIN();
