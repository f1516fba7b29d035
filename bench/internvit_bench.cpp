// InternViT-300M + mlp1 at the Sa2VA-1B size (C 1024, 24 layers, 16 heads, MLP 4096, projector
// 4096 -> 896 -> 896): forward time of one 448x448 tile in f32 and bf16 mode, with the achieved
// GFLOP/s, and its share of the CPU's bf16 peak when SA2VA_PEAK_GFLOPS gives it (machines differ:
// measure the peak of the machine at hand).
//
// The checkpoint is random: load() in declaring mode lists every vision_model.* / mlp1.* name and
// shape, the bench fills them with bf16 values and writes a model.safetensors into a temporary folder.
#include <benchmark/benchmark.h>

#include "bench_util.h"
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/threadpool.h"
#include "io/config.h"
#include "io/safetensors.h"
#include "io/weights.h"
#include "models/internvit.h"
#include "models/make_model.h"

namespace {

using namespace sa2va;

constexpr int kTile = 448;

// Multiply-adds x 2 of one tile's forward (matrix products, attention, patch conv, projector).
double flops_per_tile(const ModelConfig& c, int layers_run) {
  const double C = c.vision.hidden_size, F = c.vision.intermediate_size, P = c.vision.patch_size;
  const double g = kTile / P, N = 1 + g * g, T = g * g / 4, D = c.llm.hidden_size;
  const double per_layer = 2 * N * C * (3 * C + C + 2 * F) + 4 * N * N * C;
  return 2 * g * g * C * 3 * P * P + layers_run * per_layer + 2 * T * (4 * C * D + D * D);
}

struct Encoder1b {
  std::string dir;
  ModelConfig config;
  Checkpoint checkpoint;
  std::unique_ptr<Weights> weights_f32, weights_bf16;
  VisionEncoder f32, bf16;

  Encoder1b() : config(preset_config("1b")) {
    Weights declaring = Weights::declaring(Precision::BF16);
    VisionEncoder::load(declaring, config);
    dir = (std::filesystem::temp_directory_path() / ("sa2va_internvit_bench_" + std::to_string(::getpid())))
              .string();
    std::filesystem::create_directories(dir);
    bench::write_random_model(dir, declaring.declared());
    checkpoint = Checkpoint::open(dir);
    weights_f32 = std::make_unique<Weights>(checkpoint, Precision::F32);
    f32 = VisionEncoder::load(*weights_f32, config);
    weights_f32->finish();
    weights_bf16 = std::make_unique<Weights>(checkpoint, Precision::BF16);
    bf16 = VisionEncoder::load(*weights_bf16, config);
    weights_bf16->finish();
  }
  ~Encoder1b() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
};

Encoder1b& encoder() {
  static Encoder1b e;
  return e;
}

// A normalised-looking input: values of the order of ImageNet-normalised pixels.
Tensor random_tiles(int64_t n) {
  Tensor t = Tensor::empty({n, 3, kTile, kTile});
  return bench::fill_uniform(t, 2.f);
}

void run_tile(benchmark::State& state, bool use_bf16) {
  // Default thread count (all cores); set_num_threads() is not called between runs on purpose.
  Encoder1b& e = encoder();
  const VisionEncoder& enc = use_bf16 ? e.bf16 : e.f32;
  const Tensor pixels = random_tiles(1);
  const std::clock_t cpu_start = std::clock();  // CPU time of all threads of the process
  const auto wall_start = std::chrono::steady_clock::now();
  for (auto _ : state) benchmark::DoNotOptimize(enc.forward(pixels).f32());
  const double cpu_seconds = static_cast<double>(std::clock() - cpu_start) / CLOCKS_PER_SEC;
  const double wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count();
  const double gflop = flops_per_tile(e.config, enc.layers_to_run) / 1e9;
  // Per CPU-second of this process: what each core achieves, less sensitive to other load on the machine.
  state.counters["GFLOP_per_cpu_s"] = gflop * static_cast<double>(state.iterations()) / cpu_seconds;
  state.counters["GFLOP_per_tile"] = gflop;
  state.counters["GFLOP/s"] = benchmark::Counter(gflop * static_cast<double>(state.iterations()),
                                                 benchmark::Counter::kIsRate);
  if (const char* peak = std::getenv("SA2VA_PEAK_GFLOPS"); peak && std::atof(peak) > 0)
    state.counters["share_of_peak"] = gflop * static_cast<double>(state.iterations()) / wall_seconds / std::atof(peak);
  state.counters["threads"] = num_threads();
}

void BM_InternVitTileF32(benchmark::State& state) { run_tile(state, false); }
void BM_InternVitTileBf16(benchmark::State& state) { run_tile(state, true); }
BENCHMARK(BM_InternVitTileF32)->Iterations(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_InternVitTileBf16)->Iterations(2)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
