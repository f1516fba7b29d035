// GEMM throughput on Sa2VA's real linear-layer shapes, with F32 and BF16 weights (and Q8_0 / Q4_0
// on the decode shapes).
// Counters: GFLOP/s (2·M·N·K per call) and GB/s (weights + activations read, output written).
#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>
#include <vector>

#include "core/tensor.h"
#include "ops/ops.h"

namespace {

void BM_Linear(benchmark::State& state, int64_t M, int64_t K, int64_t N, sa2va::WeightFormat format) {
  std::mt19937 gen(1);
  std::uniform_real_distribution<float> dist(-1.f, 1.f);
  std::vector<float> x(static_cast<size_t>(M * K)), w(static_cast<size_t>(N * K)), y(static_cast<size_t>(M * N));
  for (auto& v : x) v = dist(gen);
  for (auto& v : w) v = dist(gen);
  // In the arrangement a model load gives the kernels (ops::kernel_layout).
  const sa2va::WeightMatrix weight =
      sa2va::ops::kernel_layout(sa2va::WeightMatrix::prepare(sa2va::Tensor::from_vector(w, {N, K}), format));
  for (auto _ : state) {
    sa2va::ops::linear(x.data(), M, K, weight, nullptr, y.data());
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  const double flops = 2.0 * M * N * K;
  const double bytes = static_cast<double>(weight.nbytes()) + 4.0 * (M * K + M * N);
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GB/s"] = benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

// Decode as a model runs it: the weights come from memory, not the cache. `copies` matrices of the
// shape (together far larger than the last-level cache) are used in turn; the time is per matrix.
void BM_LinearFromMemory(benchmark::State& state, int64_t K, int64_t N, sa2va::WeightFormat format, int copies) {
  std::mt19937 gen(1);
  std::uniform_real_distribution<float> dist(-1.f, 1.f);
  std::vector<float> x(static_cast<size_t>(K)), w(static_cast<size_t>(N * K)), y(static_cast<size_t>(N));
  for (auto& v : x) v = dist(gen);
  std::vector<sa2va::WeightMatrix> weights;
  for (int c = 0; c < copies; ++c) {
    for (auto& v : w) v = dist(gen);
    weights.push_back(
        sa2va::ops::kernel_layout(sa2va::WeightMatrix::prepare(sa2va::Tensor::from_vector(w, {N, K}), format)));
  }
  size_t next = 0;
  for (auto _ : state) {
    sa2va::ops::linear(x.data(), 1, K, weights[next], nullptr, y.data());
    next = (next + 1) % weights.size();
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(weights[0].nbytes()) * 1e-9,
                                              benchmark::Counter::kIsIterationInvariantRate);
}

#define SA2VA_GEMM_CASE(name, M, K, N, format, suffix) \
  BENCHMARK_CAPTURE(BM_Linear, name##suffix, M, K, N, sa2va::WeightFormat::format)->Unit(benchmark::kMillisecond)->UseRealTime()->MeasureProcessCPUTime()
#define SA2VA_GEMM_SHAPE(name, M, K, N) \
  SA2VA_GEMM_CASE(name, M, K, N, F32, _f32);  \
  SA2VA_GEMM_CASE(name, M, K, N, BF16, _bf16)
#define SA2VA_GEMM_DECODE_SHAPE(name, M, K, N) \
  SA2VA_GEMM_SHAPE(name, M, K, N);             \
  SA2VA_GEMM_CASE(name, M, K, N, Q8_0, _q8_0); \
  SA2VA_GEMM_CASE(name, M, K, N, Q4_0, _q4_0)

SA2VA_GEMM_SHAPE(vit_mlp_1025x1024x4096, 1025, 1024, 4096);
SA2VA_GEMM_SHAPE(llm_prefill_2048x896x4864, 2048, 896, 4864);
SA2VA_GEMM_SHAPE(llm_prefill_down_2048x4864x896, 2048, 4864, 896);  // few columns: tasks split the rows
SA2VA_GEMM_DECODE_SHAPE(llm_decode_1x896x4864, 1, 896, 4864);
SA2VA_GEMM_DECODE_SHAPE(llm_decode_1x4864x896, 1, 4864, 896);

// 48 matrices of 4864 x 896: 105 MB in Q4_0, 418 MB in BF16.
#define SA2VA_FROM_MEMORY(format, suffix)                                                                     \
  BENCHMARK_CAPTURE(BM_LinearFromMemory, llm_decode_1x896x4864_from_memory##suffix, 896, 4864,              \
                    sa2va::WeightFormat::format, 48)->Unit(benchmark::kMillisecond)->UseRealTime()->MeasureProcessCPUTime()
SA2VA_FROM_MEMORY(BF16, _bf16);
SA2VA_FROM_MEMORY(Q8_0, _q8_0);
SA2VA_FROM_MEMORY(Q4_0, _q4_0);

}  // namespace

BENCHMARK_MAIN();
