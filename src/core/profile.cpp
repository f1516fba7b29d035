#include "core/profile.h"

#include <atomic>
#include <cstdio>
#include <mutex>

#include "core/allocator.h"
#include "core/device.h"

namespace sa2va::profile {
namespace {

std::atomic<bool> g_enabled{false};
std::mutex g_mutex;
std::vector<Entry> g_entries;  // few stages: a linear search is cheaper than a map

}  // namespace

void set_enabled(bool on) { g_enabled.store(on, std::memory_order_relaxed); }
bool enabled() { return g_enabled.load(std::memory_order_relaxed); }

void reset() {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_entries.clear();
}

void add(const char* stage, double seconds) {
  std::lock_guard<std::mutex> lock(g_mutex);
  for (Entry& e : g_entries)
    if (e.stage == stage) {
      ++e.calls;
      e.seconds += seconds;
      return;
    }
  g_entries.push_back({stage, 1, seconds});
}

void finish(const char* stage, std::chrono::steady_clock::time_point start) {
  if (!kernels_run_on_host()) allocator_for(current_device()).synchronize();
  add(stage, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
}

std::vector<Entry> entries() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_entries;
}

std::string report() {
  std::string out = "stage                      calls     total s    ms/call\n";
  char line[160];
  for (const Entry& e : entries()) {
    std::snprintf(line, sizeof(line), "%-26s %5lld %11.3f %10.2f\n", e.stage.c_str(), static_cast<long long>(e.calls),
                  e.seconds, 1e3 * e.seconds / static_cast<double>(e.calls));
    out += line;
  }
  return out;
}

}  // namespace sa2va::profile
