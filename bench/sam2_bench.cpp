// SAM2 image encoder (Hiera-L trunk + FPN neck + conv_s0/conv_s1) at 1024×1024, the size every
// Sa2VA checkpoint uses: time of one encode() in f32 and bf16 mode with the achieved GFLOP/s;
// and the mask decoder (two-way transformer + upscaling) for one [SEG] prompt.
//
// The checkpoint is random: Sam2Image::load() in declaring mode lists every image-path name and
// shape (default Sam2Config = Hiera-L), the bench fills them with bf16 values and writes a
// model.safetensors into a temporary folder.
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/threadpool.h"
#include "io/config.h"
#include "io/safetensors.h"
#include "io/weights.h"
#include "models/sam2/sam2_image.h"

namespace {

using namespace sa2va;

// xorshift64*: fills the weights quickly.
struct FastRandom {
  uint64_t s;
  float uniform_pm1() {  // U(-1, 1)
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return static_cast<float>((s * 0x2545F4914F6CDD1Dull) >> 40) * 0x1.0p-23f - 1.f;
  }
};

// Uniform values with the standard deviation make-model uses for each Init.
Tensor random_bf16(const DeclaredTensor& d, FastRandom& rng) {
  Tensor t = Tensor::empty(d.shape, DType::BF16);
  const double fan_in = d.shape.size() > 1 ? static_cast<double>(shape_numel(d.shape) / d.shape[0]) : 1.0;
  float mean = 0.f, std = 0.02f;
  if (d.init == Init::Linear) std = static_cast<float>(1.0 / std::sqrt(fan_in));
  if (d.init == Init::NormWeight || d.init == Init::Ones) mean = 1.f;
  if (d.init == Init::Ones) std = 0.f;
  if (d.init == Init::Small) std = 0.1f;
  if (d.init == Init::Embedding || d.init == Init::Gaussian) std = 1.f;
  const float half_width = std * std::sqrt(3.f);
  uint16_t* p = t.bf16();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = f32_to_bf16(mean + half_width * rng.uniform_pm1());
  return t;
}

struct HieraL {
  std::string dir;
  ModelConfig config;  // default Sam2Config: the Hiera-L geometry of every released Sa2VA
  Checkpoint checkpoint;
  std::unique_ptr<Weights> weights_f32, weights_bf16;
  sam2::Sam2Image f32, bf16;

  HieraL() {
    Weights declaring = Weights::declaring(Precision::BF16);
    sam2::Sam2Image::load(declaring, config);
    dir = (std::filesystem::temp_directory_path() / ("sa2va_sam2_bench_" + std::to_string(::getpid()))).string();
    std::filesystem::create_directories(dir);
    {
      std::vector<std::pair<std::string, Tensor>> tensors;
      FastRandom rng{0x9E3779B97F4A7C15ull};
      for (const DeclaredTensor& d : declaring.declared()) tensors.emplace_back(d.name, random_bf16(d, rng));
      write_safetensors(dir + "/model.safetensors", tensors);
    }
    checkpoint = Checkpoint::open(dir);
    weights_f32 = std::make_unique<Weights>(checkpoint, Precision::F32);
    f32 = sam2::Sam2Image::load(*weights_f32, config);
    weights_f32->finish();
    weights_bf16 = std::make_unique<Weights>(checkpoint, Precision::BF16);
    bf16 = sam2::Sam2Image::load(*weights_bf16, config);
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
  FastRandom rng{12345};
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = 2.f * rng.uniform_pm1();
  return t;
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

void BM_Sam2EncodeF32(benchmark::State& state) { run_encode(state, false); }
void BM_Sam2EncodeBf16(benchmark::State& state) { run_encode(state, true); }
void BM_Sam2DecodeF32(benchmark::State& state) { run_decode(state, false); }
BENCHMARK(BM_Sam2EncodeF32)->Iterations(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Sam2EncodeBf16)->Iterations(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Sam2DecodeF32)->Iterations(5)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
