// Built-in stage profiler: wall time and call count per named stage (vision encoder, LLM prefill
// and decode, SAM2 image encoder, memory attention, ...), off unless enabled (`sa2va --profile`).
// Stages are timed on the thread that runs them; a stage that contains others includes their
// time. When disabled a scope costs one relaxed atomic load. On a GPU, enabled profiling waits for
// each stage's kernels at its end (the stages' sum is then the whole, at the price of the overlap).
#pragma once
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace sa2va::profile {

void set_enabled(bool on);
bool enabled();
void reset();

struct Entry {
  std::string stage;
  int64_t calls = 0;
  double seconds = 0;
};
// Every stage seen since the last reset, in order of first appearance.
std::vector<Entry> entries();
// A table of entries() for people: stage, calls, total seconds, milliseconds per call.
std::string report();

void add(const char* stage, double seconds);
// Adds the time since `start` under `stage`; on a GPU it first waits for the thread's queued kernels,
// so that a stage's time is its kernels' and not only their launches'.
void finish(const char* stage, std::chrono::steady_clock::time_point start);

// Times its own lifetime under `stage` (a string literal) when profiling is enabled.
class Scope {
 public:
  explicit Scope(const char* stage) : stage_(enabled() ? stage : nullptr) {
    if (stage_) start_ = std::chrono::steady_clock::now();
  }
  ~Scope() {
    if (stage_) finish(stage_, start_);
  }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  const char* stage_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace sa2va::profile
