// This machine's arithmetic peaks, the ceilings the image encoders and prefill are quoted against:
// bf16 dot products (vdpbf16ps, AVX-512 BF16) and fp32 FMA (vfmadd231ps on 512-bit and on 256-bit
// registers), each on the pool's threads (default: every core). Every thread runs 24 independent
// accumulator chains, enough to cover the instruction latency on the cores measured so far (12
// chains read about half the peak on one of them). Run it in the same minutes as the benchmark it
// bounds: shared machines drift by up to 20% within minutes.
//
//   build/bench/peak_bench [--benchmark_filter=...]   (SA2VA_PEAK_GFLOPS takes the bf16 result)
#include <benchmark/benchmark.h>
#include <immintrin.h>

#include <atomic>
#include <cstdint>

#include "core/threadpool.h"
#include "ops/cpu/simd.h"

#pragma GCC diagnostic ignored "-Wuninitialized"  // GCC 12's reduce intrinsics read an undefined vector

namespace sa2va {
namespace {

constexpr int kChains = 24;
constexpr int64_t kSteps = 1 << 20;  // per thread and iteration

#define SA2VA_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#define SA2VA_F32_512_TARGET __attribute__((target("avx512f,fma")))
#define SA2VA_F32_256_TARGET __attribute__((target("avx2,fma")))

// Each loop step: kChains instructions, each 2 flops per multiply-add x lanes.
SA2VA_BF16_TARGET float bf16_chains(int64_t steps) {
  __m512 acc[kChains];
  for (auto& a : acc) a = _mm512_setzero_ps();
  const __m512bh x = (__m512bh)_mm512_set1_epi32(0x3f803f80), y = (__m512bh)_mm512_set1_epi32(0x3f003f00);
  for (int64_t s = 0; s < steps; ++s) {
#pragma GCC unroll 24
    for (int c = 0; c < kChains; ++c) acc[c] = _mm512_dpbf16_ps(acc[c], x, y);
  }
  __m512 sum = acc[0];
  for (int c = 1; c < kChains; ++c) sum = _mm512_add_ps(sum, acc[c]);
  return _mm512_reduce_add_ps(sum);
}

SA2VA_F32_512_TARGET float f32_512_chains(int64_t steps) {
  __m512 acc[kChains];
  for (auto& a : acc) a = _mm512_setzero_ps();
  const __m512 x = _mm512_set1_ps(1.0001f), y = _mm512_set1_ps(0.9999f);
  for (int64_t s = 0; s < steps; ++s) {
#pragma GCC unroll 24
    for (int c = 0; c < kChains; ++c) acc[c] = _mm512_fmadd_ps(x, y, acc[c]);
  }
  __m512 sum = acc[0];
  for (int c = 1; c < kChains; ++c) sum = _mm512_add_ps(sum, acc[c]);
  return _mm512_reduce_add_ps(sum);
}

SA2VA_F32_256_TARGET float f32_256_chains(int64_t steps) {
  __m256 acc[kChains / 2];  // 16 ymm registers on AVX2: 12 chains and the two operands
  for (auto& a : acc) a = _mm256_setzero_ps();
  const __m256 x = _mm256_set1_ps(1.0001f), y = _mm256_set1_ps(0.9999f);
  for (int64_t s = 0; s < 2 * steps; ++s) {
#pragma GCC unroll 12
    for (int c = 0; c < kChains / 2; ++c) acc[c] = _mm256_fmadd_ps(x, y, acc[c]);
  }
  __m256 sum = acc[0];
  for (int c = 1; c < kChains / 2; ++c) sum = _mm256_add_ps(sum, acc[c]);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, sum);
  return lanes[0];
}

// flops per instruction: bf16 dot product 2 x 32 pairs' halves = 64; fp32 FMA 2 x lanes.
template <float (*Chains)(int64_t)>
void run_peak(benchmark::State& state, double flops_per_instruction, int64_t instructions_per_step) {
  const int threads = num_threads();
  for (auto _ : state) {
    std::atomic<int> sink{0};
    parallel_for(threads, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) sink.fetch_add(static_cast<int>(Chains(kSteps)), std::memory_order_relaxed);
    });
    benchmark::DoNotOptimize(sink.load());
  }
  const double flops = flops_per_instruction * static_cast<double>(instructions_per_step) *
                       static_cast<double>(kSteps) * threads;
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["threads"] = threads;
}

void BM_PeakBf16DotProducts(benchmark::State& state) {
  if (ops::simd::isa() != ops::simd::Isa::Avx512) return state.SkipWithError("this CPU lacks AVX-512 BF16");
  run_peak<bf16_chains>(state, 64, kChains);
}
void BM_PeakF32Fma512(benchmark::State& state) {
  if (!__builtin_cpu_supports("avx512f")) return state.SkipWithError("this CPU lacks AVX-512");
  run_peak<f32_512_chains>(state, 32, kChains);
}
void BM_PeakF32Fma256(benchmark::State& state) {
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return state.SkipWithError("no AVX2 FMA");
  run_peak<f32_256_chains>(state, 16, kChains);  // 2 x steps of 12 chains
}

BENCHMARK(BM_PeakBf16DotProducts)->UseRealTime()->Unit(benchmark::kMillisecond)->Repetitions(3);
BENCHMARK(BM_PeakF32Fma512)->UseRealTime()->Unit(benchmark::kMillisecond)->Repetitions(3);
BENCHMARK(BM_PeakF32Fma256)->UseRealTime()->Unit(benchmark::kMillisecond)->Repetitions(3);

}  // namespace
}  // namespace sa2va

BENCHMARK_MAIN();
