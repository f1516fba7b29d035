// GEMM throughput on Sa2VA's real linear-layer shapes, with F32 and BF16 weights.
// Counters: GFLOP/s (2·M·N·K per call) and GB/s (weights + activations read, output written).
#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>
#include <vector>

#include "core/tensor.h"
#include "ops/ops.h"

namespace {

void BM_Linear(benchmark::State& state, int64_t M, int64_t K, int64_t N, sa2va::DType weight_type) {
  std::mt19937 gen(1);
  std::uniform_real_distribution<float> dist(-1.f, 1.f);
  std::vector<float> x(static_cast<size_t>(M * K)), w(static_cast<size_t>(N * K)), y(static_cast<size_t>(M * N));
  for (auto& v : x) v = dist(gen);
  for (auto& v : w) v = dist(gen);
  const sa2va::WeightMatrix weight = sa2va::WeightMatrix::prepare(
      sa2va::Tensor::from_vector(w, {N, K}), weight_type == sa2va::DType::BF16 ? sa2va::WeightFormat::BF16 : sa2va::WeightFormat::F32);
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

#define SA2VA_GEMM_SHAPE(name, M, K, N)                                                                        \
  BENCHMARK_CAPTURE(BM_Linear, name##_f32, M, K, N, sa2va::DType::F32)->Unit(benchmark::kMillisecond)->UseRealTime()->MeasureProcessCPUTime(); \
  BENCHMARK_CAPTURE(BM_Linear, name##_bf16, M, K, N, sa2va::DType::BF16)->Unit(benchmark::kMillisecond)->UseRealTime()->MeasureProcessCPUTime()

SA2VA_GEMM_SHAPE(vit_mlp_1025x1024x4096, 1025, 1024, 4096);
SA2VA_GEMM_SHAPE(llm_prefill_2048x896x4864, 2048, 896, 4864);
SA2VA_GEMM_SHAPE(llm_decode_1x896x4864, 1, 896, 4864);
SA2VA_GEMM_SHAPE(llm_decode_1x4864x896, 1, 4864, 896);

}  // namespace

BENCHMARK_MAIN();
