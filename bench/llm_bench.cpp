// Language-model throughput at the Sa2VA-1B size (Qwen2: D 896, 24 layers, 14 heads / 2 KV,
// FFN 4864, vocabulary 151679, tied head) in bf16: prefill tokens/s of a 2048-token prompt and
// decode tokens/s, beside the memory-bandwidth bound of reading every weight once per token.
//
// The checkpoint is random: load() in declaring mode lists every name and shape, the bench fills
// them with bf16 values and writes a model.safetensors into a temporary folder.
#include <benchmark/benchmark.h>

#include "bench_util.h"

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <unistd.h>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/threadpool.h"
#include "io/config.h"
#include "io/safetensors.h"
#include "io/weights.h"
#include "models/generation.h"
#include "models/llm.h"
#include "ops/ops.h"

namespace {

using namespace sa2va;

constexpr double kBandwidthGBs = 44.0;  // the bound quoted beside decode (sustained DRAM read)

ModelConfig config_1b() {
  ModelConfig c;
  LlmConfig& l = c.llm;
  l.arch = LlmArch::Qwen2;
  l.architecture = "Qwen2ForCausalLM";
  l.hidden_size = 896;
  l.num_layers = 24;
  l.num_heads = 14;
  l.num_kv_heads = 2;
  l.head_dim = 64;
  l.intermediate_size = 4864;
  l.vocab_size = 151679;
  l.tie_word_embeddings = true;
  return c;
}

struct Model1b {
  std::string dir;
  Checkpoint checkpoint;
  std::unique_ptr<Weights> weights;
  LanguageModel lm;
  double weight_bytes = 0;  // bytes read per decoded token (all layers + head)

  Model1b() {
    const ModelConfig cfg = config_1b();
    Weights decl = Weights::declaring(Precision::BF16);
    LanguageModel::load(decl, cfg);
    dir = (std::filesystem::temp_directory_path() / ("sa2va_llm_bench_" + std::to_string(::getpid()))).string();
    std::filesystem::create_directories(dir);
    bench::write_random_model(dir, decl.declared());
    checkpoint = Checkpoint::open(dir);
    weights = std::make_unique<Weights>(checkpoint, Precision::BF16);
    lm = LanguageModel::load(*weights, cfg);
    weights->finish();
    for (const auto& layer : lm.layers)
      for (const WeightMatrix* t : {&layer.wqkv, &layer.wo, &layer.w_gate, &layer.w_up, &layer.w_down})
        weight_bytes += static_cast<double>(t->nbytes());
    weight_bytes += static_cast<double>(lm.lm_head.nbytes());
  }
  ~Model1b() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
};

// Set once per process, before any parallel work (the pool is not re-sized between benchmarks).
void use_two_threads() {
  static const bool done = [] {
    set_num_threads(2);
    return true;
  }();
  (void)done;
}

Model1b& model() {
  static Model1b m;
  return m;
}

Tensor random_embeddings(int64_t n, int64_t d) {
  Tensor t = Tensor::empty({n, d});
  return bench::fill_uniform(t, 1.f);
}

void BM_LlmPrefill(benchmark::State& state) {
  use_two_threads();
  Model1b& m = model();
  const int64_t n = state.range(0);
  const Tensor prompt = random_embeddings(n, m.lm.hidden_size());
  for (auto _ : state) {
    LlmState state = m.lm.new_state(static_cast<int>(n));
    m.lm.forward(prompt, state);
    benchmark::DoNotOptimize(m.lm.last_logits(state));
  }
  state.counters["tokens_per_s"] = benchmark::Counter(static_cast<double>(n * state.iterations()),
                                                      benchmark::Counter::kIsRate);
  // Linear layers (2 flops per weight per token) + causal attention (QKᵀ and PV over half the keys).
  const LlmConfig& c = m.lm.config;
  const double layer_weights = (m.weight_bytes - static_cast<double>(m.lm.lm_head.nbytes())) / 2.0;
  const double attention = 2.0 * 2.0 * c.num_layers * c.num_heads * c.head_dim * (double(n) * n / 2.0);
  state.counters["GFLOP_per_s"] = benchmark::Counter(
      (2.0 * layer_weights * n + attention) * static_cast<double>(state.iterations()) / 1e9, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_LlmPrefill)->Arg(2048)->Iterations(1)->Unit(benchmark::kSecond)->UseRealTime()->MeasureProcessCPUTime();

// One decode step = forward of one token at the end of a cached context + the full lm_head.
void BM_LlmDecode(benchmark::State& state) {
  use_two_threads();
  Model1b& m = model();
  const int64_t context = state.range(0);
  LlmState llm_state = m.lm.new_state(static_cast<int>(context + 4096), static_cast<int>(context));
  m.lm.forward(random_embeddings(context, m.lm.hidden_size()), llm_state);
  int32_t token = 17061;
  for (auto _ : state) {
    m.lm.forward_token(token, llm_state);
    token = static_cast<int32_t>(argmax(m.lm.last_logits(llm_state), m.lm.vocab_size()));
  }
  state.counters["tokens_per_s"] = benchmark::Counter(static_cast<double>(state.iterations()),
                                                      benchmark::Counter::kIsRate);
  state.counters["bound_ms_per_token"] = m.weight_bytes / (kBandwidthGBs * 1e9) * 1e3;
  state.counters["weight_MB"] = m.weight_bytes / 1e6;
}
BENCHMARK(BM_LlmDecode)->Arg(16)->Iterations(32)->Unit(benchmark::kMillisecond)->UseRealTime()->MeasureProcessCPUTime();

// Peer of the decode step, measured in the same run: one streaming read of the same weight bytes
// (what a perfectly bandwidth-bound decoder would cost on this machine right now).
void BM_WeightStreamPeer(benchmark::State& state) {
  use_two_threads();
  Model1b& m = model();
  std::vector<const Tensor*> tensors;
  for (const auto& layer : m.lm.layers)
    for (const WeightMatrix* t : {&layer.wqkv, &layer.wo, &layer.w_gate, &layer.w_up, &layer.w_down})
      tensors.push_back(&t->values());
  tensors.push_back(&m.lm.lm_head.values());
  for (auto _ : state) {
    std::atomic<uint64_t> checksum{0};
    for (const Tensor* t : tensors) {
      const auto* words = static_cast<const uint64_t*>(t->raw());
      parallel_for(static_cast<int64_t>(t->nbytes() / 8), [&](int64_t b, int64_t e) {
        uint64_t acc = 0;
        for (int64_t i = b; i < e; ++i) acc ^= words[i];
        checksum.fetch_xor(acc, std::memory_order_relaxed);
      }, 1 << 16);
    }
    benchmark::DoNotOptimize(checksum.load());
  }
  state.counters["GB_per_s"] = benchmark::Counter(m.weight_bytes * static_cast<double>(state.iterations()) / 1e9,
                                                  benchmark::Counter::kIsRate);
}
BENCHMARK(BM_WeightStreamPeer)->Iterations(8)->Unit(benchmark::kMillisecond)->UseRealTime()->MeasureProcessCPUTime();

// Peer of the prefill: one bf16 linear of the prefill's shape (2048 × 896 → 4864), as GFLOP/s.
void BM_GemmPeer(benchmark::State& state) {
  use_two_threads();
  Model1b& m = model();
  const Tensor x = random_embeddings(2048, m.lm.hidden_size());
  const WeightMatrix& w = m.lm.layers[0].w_gate;
  for (auto _ : state) benchmark::DoNotOptimize(ops::linear(x, w).f32());
  state.counters["GFLOP_per_s"] = benchmark::Counter(
      2.0 * 2048 * static_cast<double>(w.rows() * w.cols()) * static_cast<double>(state.iterations()) / 1e9,
      benchmark::Counter::kIsRate);
}
BENCHMARK(BM_GemmPeer)->Iterations(4)->Unit(benchmark::kMillisecond)->UseRealTime()->MeasureProcessCPUTime();

}  // namespace

BENCHMARK_MAIN();
