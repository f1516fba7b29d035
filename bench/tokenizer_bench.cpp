// Tokenizer throughput: encode MB/s on a mixed corpus (tests/data/tokenizer/corpus.jsonl: English,
// code, numbers, many scripts, emoji, whitespace, byte edge cases) and on a Sa2VA image prompt.
// Usage: tokenizer_bench [--model DIR] [benchmark flags]   (run from the repository root; DIR
// defaults to the Qwen2 tokenizer.json that make-model ships, data/qwen2-sa2va-tokenizer.json).
#include <benchmark/benchmark.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>

#include <nlohmann/json.hpp>

#include "models/make_model.h"
#include "text/template.h"
#include "text/tokenizer.h"

namespace {

std::string g_model_dir;  // empty: the project's Qwen2 tokenizer
const std::string kCorpus = "tests/data/tokenizer/corpus.jsonl";

const sa2va::Tokenizer& tokenizer() {
  static const std::unique_ptr<sa2va::Tokenizer> t = [] {
    if (!g_model_dir.empty()) return sa2va::Tokenizer::load(g_model_dir);
    const auto dir = std::filesystem::temp_directory_path() / "sa2va-tokenizer-bench";
    std::filesystem::create_directories(dir);
    std::filesystem::remove(dir / "tokenizer.json");
    std::filesystem::create_symlink(std::filesystem::absolute(sa2va::data_file("qwen2-sa2va-tokenizer.json")),
                                    dir / "tokenizer.json");
    return sa2va::Tokenizer::load(dir.string());
  }();
  return *t;
}

// The corpus strings, each once, in file order.
const std::vector<std::string>& corpus() {
  static const std::vector<std::string> lines = [] {
    std::vector<std::string> out;
    std::ifstream file(kCorpus);
    for (std::string line; std::getline(file, line);)
      if (!line.empty()) out.push_back(nlohmann::json::parse(line)["text"].get<std::string>());
    if (out.empty()) throw std::runtime_error(kCorpus + ": missing or empty (run from the repository root)");
    return out;
  }();
  return lines;
}

size_t total_bytes(const std::vector<std::string>& lines) {
  size_t n = 0;
  for (const auto& s : lines) n += s.size();
  return n;
}

// Warm: the per-piece cache is filled by earlier iterations (steady state of a server).
void BM_EncodeCorpusWarm(benchmark::State& state) {
  const auto& lines = corpus();
  for (const auto& s : lines) tokenizer().encode(s);  // load and fill the cache outside the timing
  for (auto _ : state)
    for (const auto& s : lines) benchmark::DoNotOptimize(tokenizer().encode(s));
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(total_bytes(lines)));
}
BENCHMARK(BM_EncodeCorpusWarm)->Unit(benchmark::kMillisecond);

// Cold: each iteration sees text it has never seen (a number makes every line unique), so most
// pieces miss the cache and go through BPE merging.
void BM_EncodeCorpusCold(benchmark::State& state) {
  const auto& lines = corpus();
  tokenizer();
  size_t bytes = 0;
  int64_t round = 0;
  for (auto _ : state) {
    state.PauseTiming();
    std::vector<std::string> fresh;
    for (const auto& s : lines) fresh.push_back(s + "x" + std::to_string(round) + "qz" + s);
    ++round;
    state.ResumeTiming();
    for (const auto& s : fresh) benchmark::DoNotOptimize(tokenizer().encode(s));
    bytes += total_bytes(fresh);
  }
  state.SetBytesProcessed(int64_t(bytes));
}
BENCHMARK(BM_EncodeCorpusCold)->Unit(benchmark::kMillisecond);

// The prompt of a 3-tile image question: 768 <IMG_CONTEXT> added tokens plus template text.
void BM_EncodeImagePrompt(benchmark::State& state) {
  const std::string prompt = sa2va::build_prompt(sa2va::chat_template("qwen_chat"),
                                                 "<image>Please segment the red circle.", sa2va::image_token_string(3));
  for (auto _ : state) benchmark::DoNotOptimize(tokenizer().encode(prompt));
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(prompt.size()));
}
BENCHMARK(BM_EncodeImagePrompt)->Unit(benchmark::kMicrosecond);

void BM_DecodeCorpus(benchmark::State& state) {
  std::vector<std::vector<int32_t>> ids;
  for (const auto& s : corpus()) ids.push_back(tokenizer().encode(s));
  for (auto _ : state)
    for (const auto& v : ids) benchmark::DoNotOptimize(tokenizer().decode(v));
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(total_bytes(corpus())));
}
BENCHMARK(BM_DecodeCorpus)->Unit(benchmark::kMillisecond);

void BM_Load(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(sa2va::Tokenizer::load(g_model_dir));
}
BENCHMARK(BM_Load)->Unit(benchmark::kMillisecond)->Iterations(3);

}  // namespace

int main(int argc, char** argv) {
  // Take --model DIR out before Google Benchmark parses its own flags.
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    if (std::strcmp(argv[i], "--model") == 0 && i + 1 < argc) g_model_dir = argv[++i];
    else rest.push_back(argv[i]);
  }
  int rest_count = static_cast<int>(rest.size());
  benchmark::Initialize(&rest_count, rest.data());
  try {
    benchmark::RunSpecifiedBenchmarks();
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  benchmark::Shutdown();
  return 0;
}
