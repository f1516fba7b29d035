#include "core/threadpool.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace sa2va {
namespace {

class ThreadPool {
 public:
  explicit ThreadPool(int n) { resize(n); }
  ~ThreadPool() { stop(); }

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  void resize(int n) {
    stop();
    stopping_ = false;
    // New workers wait for the next task, not for the ones already run.
    const uint64_t current = generation_;
    for (int i = 1; i < n; ++i) workers_.emplace_back([this, i, current] { loop(i, current); });
  }

  // Runs task(worker_index) on every thread (the caller is index 0) and waits for all.
  void run(const std::function<void(int)>& task) {
    std::unique_lock<std::mutex> lock(mutex_);
    task_ = &task;
    pending_ = static_cast<int>(workers_.size());
    error_ = nullptr;
    ++generation_;
    lock.unlock();
    start_cv_.notify_all();
    try {
      task(0);
    } catch (...) {
      std::lock_guard<std::mutex> g(mutex_);
      if (!error_) error_ = std::current_exception();
    }
    lock.lock();
    done_cv_.wait(lock, [this] { return pending_ == 0; });
    task_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void loop(int index, uint64_t seen) {
    for (;;) {
      std::unique_lock<std::mutex> lock(mutex_);
      start_cv_.wait(lock, [&] { return stopping_ || generation_ != seen; });
      if (stopping_) return;
      seen = generation_;
      const auto* task = task_;
      lock.unlock();
      try {
        (*task)(index);
      } catch (...) {
        std::lock_guard<std::mutex> g(mutex_);
        if (!error_) error_ = std::current_exception();
      }
      lock.lock();
      if (--pending_ == 0) done_cv_.notify_one();
    }
  }

  void stop() {
    {
      std::lock_guard<std::mutex> g(mutex_);
      stopping_ = true;
    }
    start_cv_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable start_cv_, done_cv_;
  const std::function<void(int)>* task_ = nullptr;
  int pending_ = 0;
  uint64_t generation_ = 0;
  bool stopping_ = false;
  std::exception_ptr error_;
};

int default_threads() {
  unsigned hw = std::thread::hardware_concurrency();
  return hw ? static_cast<int>(hw) : 1;
}

std::mutex g_pool_mutex;  // one parallel region at a time (requests from several threads queue here)
int g_threads = default_threads();
ThreadPool& pool() {
  static ThreadPool p(g_threads);
  return p;
}
thread_local bool t_inside_parallel = false;

}  // namespace

void set_num_threads(int n) {
  n = std::max(1, n);
  std::lock_guard<std::mutex> g(g_pool_mutex);
  g_threads = n;
  pool().resize(n);
}

int num_threads() { return g_threads; }

void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  int64_t chunks = std::min<int64_t>(g_threads, (n + grain - 1) / grain);
  if (chunks <= 1 || t_inside_parallel) {
    fn(0, n);
    return;
  }
  std::lock_guard<std::mutex> g(g_pool_mutex);
  ThreadPool& p = pool();
  const int64_t workers = std::min<int64_t>(chunks, p.size());
  p.run([&](int index) {
    if (index >= workers) return;
    const int64_t begin = n * index / workers, end = n * (index + 1) / workers;
    t_inside_parallel = true;
    try {
      if (begin < end) fn(begin, end);
    } catch (...) {
      t_inside_parallel = false;
      throw;
    }
    t_inside_parallel = false;
  });
}

}  // namespace sa2va
