// This machine's streaming read rate: the memory-bandwidth bound that decode is measured against
// (every weight read once per token). One buffer, larger than the caches, in huge pages as the
// quantized weights are (core/weight_arena.h), read by the pool's threads (each a contiguous half,
// 64-bit words XORed, as llm_bench's weight-stream peer), with the default thread count; run it in
// the same hour as the decode benchmark (bench/decode_side_by_side.sh does) and quote
// weight bytes / rate as the bound.
//
//   build/bench/read_rate_bench [--benchmark_filter=...]
#include <benchmark/benchmark.h>

#include <atomic>
#include <cstdint>
#include <cstring>

#include "core/threadpool.h"
#include "core/weight_arena.h"

namespace sa2va {
namespace {

void BM_ReadRate(benchmark::State& state) {
  const int64_t bytes = state.range(0) << 20;
  WeightArena arena;
  const Tensor buffer = arena.empty({bytes}, DType::U8);
  std::memset(buffer.raw(), 1, static_cast<size_t>(bytes));
  const auto* words = static_cast<const uint64_t*>(buffer.raw());
  const int64_t count = bytes / 8;
  for (auto _ : state) {
    std::atomic<uint64_t> checksum{0};
    parallel_for(count, [&](int64_t b, int64_t e) {
      uint64_t acc = 0;
      for (int64_t i = b; i < e; ++i) acc ^= words[i];
      checksum.fetch_xor(acc, std::memory_order_relaxed);
    }, count / 2);
    benchmark::DoNotOptimize(checksum.load());
  }
  state.counters["GB_per_s"] =
      benchmark::Counter(static_cast<double>(bytes) * static_cast<double>(state.iterations()) / 1e9,
                         benchmark::Counter::kIsRate);
}
// 1 GiB and 4 GiB: far beyond any cache of these machines (the largest L3 seen is 480 MiB, shared).
BENCHMARK(BM_ReadRate)->Arg(1024)->Arg(4096)->Iterations(6)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace sa2va

BENCHMARK_MAIN();
