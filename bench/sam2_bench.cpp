// SAM2 image encoder (Hiera-L trunk + FPN neck + conv_s0/conv_s1) at 1024×1024, the size every
// Sa2VA checkpoint uses: time of one encode() in f32 and bf16 mode with the achieved GFLOP/s;
// the mask decoder (two-way transformer + upscaling) for one [SEG] prompt; and the video
// tracker's memory attention (4 layers) of one tracked frame over a full memory bank (5
// conditioning + 6 tracked memories of 64x64 tokens and 16 object pointers). Peer in the same run:
// one ops::linear of the trunk's dominant shape (stage-3 MLP, 4096 x 576 -> 2304), f32 and bf16.
// CPU times are of the whole process (all threads).
//
// The checkpoint is random: Sam2Image::load() in declaring mode lists every image-path name and
// shape (default Sam2Config = Hiera-L), the bench fills them with bf16 values and writes a
// model.safetensors into a temporary folder.
#include <benchmark/benchmark.h>

#include "bench_util.h"
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/profile.h"
#include "core/threadpool.h"
#include "io/config.h"
#include "io/safetensors.h"
#include "io/weights.h"
#include "models/sam2/memory_attention.h"
#include "models/sam2/sam2_image.h"
#include "ops/ops.h"

namespace {

using namespace sa2va;

struct HieraL {
  std::string dir;
  ModelConfig config;  // default Sam2Config: the Hiera-L geometry of every released Sa2VA
  Checkpoint checkpoint;
  std::unique_ptr<Weights> weights_f32, weights_bf16;
  sam2::Sam2Image f32, bf16;
  sam2::MemoryAttention memory_f32, memory_bf16;

  static constexpr const char* kPrefix = "grounding_encoder.sam2_model.";

  HieraL() {
    Weights declaring = Weights::declaring(Precision::BF16);
    sam2::Sam2Image::load(declaring, config);
    sam2::MemoryAttention::load(declaring, config.sam2, kPrefix);
    dir = (std::filesystem::temp_directory_path() / ("sa2va_sam2_bench_" + std::to_string(::getpid()))).string();
    std::filesystem::create_directories(dir);
    bench::write_random_model(dir, declaring.declared());
    checkpoint = Checkpoint::open(dir);
    weights_f32 = std::make_unique<Weights>(checkpoint, Precision::F32);
    f32 = sam2::Sam2Image::load(*weights_f32, config);
    memory_f32 = sam2::MemoryAttention::load(*weights_f32, config.sam2, kPrefix);
    weights_f32->finish();
    weights_bf16 = std::make_unique<Weights>(checkpoint, Precision::BF16);
    bf16 = sam2::Sam2Image::load(*weights_bf16, config);
    memory_bf16 = sam2::MemoryAttention::load(*weights_bf16, config.sam2, kPrefix);
    weights_bf16->finish();
  }
  ~HieraL() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
};

HieraL& model() {
  static HieraL m;
  return m;
}

Tensor random_image(int64_t size) {
  Tensor t = Tensor::empty({3, size, size});
  return bench::fill_uniform(t, 2.f);
}

void run_encode(benchmark::State& state, bool use_bf16) {
  HieraL& m = model();
  const sam2::Sam2Image& sam = use_bf16 ? m.bf16 : m.f32;
  const Tensor image = random_image(m.config.sam2.image_size);
  for (auto _ : state) benchmark::DoNotOptimize(sam.encode(image).fpn2.f32());
  const double gflop = sam.encoder_flops() / 1e9;
  state.counters["GFLOP_per_image"] = gflop;
  state.counters["GFLOP/s"] = benchmark::Counter(gflop * static_cast<double>(state.iterations()),
                                                 benchmark::Counter::kIsRate);
  state.counters["threads"] = num_threads();
}

void run_decode(benchmark::State& state, bool use_bf16) {
  HieraL& m = model();
  const sam2::Sam2Image& sam = use_bf16 ? m.bf16 : m.f32;
  const sam2::FrameFeatures f = sam.encode(random_image(m.config.sam2.image_size));
  const Tensor embedding = sam.conditioning_embedding(f);
  std::vector<float> language(static_cast<size_t>(m.config.sam2.hidden_dim), 0.1f);
  for (auto _ : state) benchmark::DoNotOptimize(sam.decode(embedding, f, language.data()).low_res_mask.f32());
  state.counters["threads"] = num_threads();
}

// One tracked frame's memory attention over the fullest bank Sa2VA builds (the default 5 key
// frames as conditioning memories, the last 6 tracked frames, 16 object pointers of 4 tokens).
void run_memory_attention(benchmark::State& state, bool use_bf16) {
  HieraL& m = model();
  const sam2::MemoryAttention& attention = use_bf16 ? m.memory_bf16 : m.memory_f32;
  const int64_t grid = m.config.sam2.image_size / 16, S = grid * grid, d = attention.d_model;
  const int64_t pointer_tokens = 16 * (d / attention.kv_dim), M = 11 * S + pointer_tokens;
  const Tensor curr = bench::fill_uniform(Tensor::empty({S, d}), 1.f);
  const Tensor curr_pos = bench::fill_uniform(Tensor::empty({S, d}), 1.f);
  const Tensor memory = bench::fill_uniform(Tensor::empty({M, attention.kv_dim}), 1.f);
  const Tensor memory_pos = bench::fill_uniform(Tensor::empty({M, attention.kv_dim}), 1.f);
  // Its sub-stages (self- and cross-attention, feed-forward) from the built-in profiler, on stderr.
  profile::reset();
  profile::set_enabled(true);
  for (auto _ : state)
    benchmark::DoNotOptimize(attention.forward(curr, curr_pos, memory, memory_pos, pointer_tokens, grid, grid).f32());
  state.counters["memory_tokens"] = static_cast<double>(M);
  profile::set_enabled(false);
  std::fputs(profile::report().c_str(), stderr);
  profile::reset();
  state.counters["threads"] = num_threads();
}

void run_gemm_peer(benchmark::State& state, DType weight_type) {
  const int64_t M = 4096, K = 576, N = 2304;
  const Tensor x = bench::fill_uniform(Tensor::empty({M, K}), 1.f);
  const WeightMatrix weight = WeightMatrix::prepare(bench::fill_uniform(Tensor::empty({N, K}), 1.f / 24.f),
                                                    weight_type == DType::BF16 ? WeightFormat::BF16 : WeightFormat::F32);
  Tensor y = Tensor::empty({M, N});
  for (auto _ : state) {
    ops::linear(x.f32(), M, K, weight, nullptr, y.f32());
    benchmark::ClobberMemory();
  }
  const double gflop = 2.0 * M * N * K / 1e9;
  state.counters["GFLOP/s"] = benchmark::Counter(gflop * static_cast<double>(state.iterations()),
                                                 benchmark::Counter::kIsRate);
}

void BM_GemmPeerF32(benchmark::State& state) { run_gemm_peer(state, DType::F32); }
void BM_GemmPeerBf16(benchmark::State& state) { run_gemm_peer(state, DType::BF16); }
BENCHMARK(BM_GemmPeerF32)->Iterations(10)->Unit(benchmark::kMillisecond)->UseRealTime()->MeasureProcessCPUTime();
BENCHMARK(BM_GemmPeerBf16)->Iterations(10)->Unit(benchmark::kMillisecond)->UseRealTime()->MeasureProcessCPUTime();

void BM_Sam2EncodeF32(benchmark::State& state) { run_encode(state, false); }
void BM_Sam2EncodeBf16(benchmark::State& state) { run_encode(state, true); }
void BM_Sam2DecodeF32(benchmark::State& state) { run_decode(state, false); }
BENCHMARK(BM_Sam2EncodeF32)->Iterations(2)->Unit(benchmark::kMillisecond)->UseRealTime()->MeasureProcessCPUTime();
BENCHMARK(BM_Sam2EncodeBf16)->Iterations(2)->Unit(benchmark::kMillisecond)->UseRealTime()->MeasureProcessCPUTime();
void BM_MemoryAttentionBf16(benchmark::State& state) { run_memory_attention(state, true); }
BENCHMARK(BM_MemoryAttentionBf16)->Iterations(3)->Unit(benchmark::kMillisecond)->UseRealTime()->MeasureProcessCPUTime();
BENCHMARK(BM_Sam2DecodeF32)->Iterations(5)->Unit(benchmark::kMillisecond)->UseRealTime()->MeasureProcessCPUTime();

}  // namespace

BENCHMARK_MAIN();
