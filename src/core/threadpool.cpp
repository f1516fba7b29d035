#include "core/threadpool.h"

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <chrono>
#include <new>
#include <string>

#include "core/error.h"

namespace sa2va {
namespace {

// CPUs this process may run on (its affinity mask, which containers and taskset narrow), not the
// machine's count.
int available_cpus() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
  const unsigned hw = std::thread::hardware_concurrency();
  return hw ? static_cast<int>(hw) : 1;
}

std::atomic<int> g_default_threads{available_cpus()};

ThreadPool& default_pool() {
  static ThreadPool* p = new ThreadPool(g_default_threads.load());  // never destroyed: used until exit
  return *p;
}

// Counts fork() calls in this process's line: a child sees one more than its parent's pools recorded.
std::atomic<uint64_t> g_forks{0};
const bool g_fork_handler = [] {
  pthread_atfork(nullptr, nullptr, [] { g_forks.fetch_add(1, std::memory_order_relaxed); });
  return true;
}();

thread_local ThreadPool* t_current = nullptr;
thread_local bool t_inside_parallel = false;

}  // namespace

ThreadPool::ThreadPool(int threads) { resize(threads); }
ThreadPool::~ThreadPool() { stop(); }

void ThreadPool::resize(int threads) {
  std::lock_guard<std::mutex> region(region_mutex_);
  stop();
  stopping_ = false;
  forks_seen_ = g_forks.load(std::memory_order_relaxed);
  // New workers wait for the next task, not for the ones already run.
  const uint64_t current = generation_;
  try {
    for (int i = 1; i < std::max(1, threads); ++i) workers_.emplace_back([this, i, current] { loop(i, current); });
  } catch (const std::exception& e) {
    stop();  // joins the threads that did start
    stopping_ = false;
    size_ = 1;
    throw Error("cannot start " + std::to_string(threads) + " threads: " + e.what());
  }
  size_ = static_cast<int>(workers_.size()) + 1;
}

namespace {

// How long a thread polls before it sleeps: long enough to bridge the gaps between the regions of
// one decode step, short enough not to burn a core while the caller does serial work.
constexpr auto kSpinTime = std::chrono::microseconds(300);

// How many pieces parallel_for cuts its range into per thread (fewer where `grain` says so).
constexpr int64_t kChunksPerThread = 8;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Polls done() for up to kSpinTime; true when it became true. A pool with more threads than the
// process has CPUs does not poll (spinning threads would take the CPUs of the working ones).
template <typename Done>
bool spin_until(Done done, int pool_size) {
  static const int cpus = available_cpus();
  if (pool_size > cpus) return done();
  const auto deadline = std::chrono::steady_clock::now() + kSpinTime;
  for (int i = 0;; ++i) {
    if (done()) return true;
    cpu_relax();
    if ((i & 63) == 63 && std::chrono::steady_clock::now() > deadline) return done();
  }
}

}  // namespace

void ThreadPool::record_error() {
  std::lock_guard<std::mutex> g(mutex_);
  if (!error_) error_ = std::current_exception();
}

void ThreadPool::run(const std::function<void(int)>& task) {
  error_ = nullptr;  // no worker touches it between regions
  task_.store(&task);
  pending_.store(static_cast<int>(workers_.size()));
  generation_.fetch_add(1);  // seq_cst: pairs with the sleepers_ increment in loop()
  if (sleepers_.load() > 0) {
    std::lock_guard<std::mutex> g(mutex_);
    start_cv_.notify_all();
  }
  try {
    task(0);
  } catch (...) {
    record_error();
  }
  if (!spin_until([this] { return pending_.load(std::memory_order_acquire) == 0; }, size())) {
    std::unique_lock<std::mutex> lock(mutex_);
    caller_sleeping_.store(true);
    done_cv_.wait(lock, [this] { return pending_.load() == 0; });
    caller_sleeping_.store(false);
  }
  task_.store(nullptr);
  std::lock_guard<std::mutex> g(mutex_);
  if (error_) std::rethrow_exception(error_);
}

void ThreadPool::loop(int index, uint64_t seen) {
  for (;;) {
    auto started = [&] { return stopping_.load() || generation_.load() != seen; };
    if (!spin_until(started, size())) {
      std::unique_lock<std::mutex> lock(mutex_);
      sleepers_.fetch_add(1);  // seq_cst: run() either sees a sleeper or we see its new generation
      start_cv_.wait(lock, started);
      sleepers_.fetch_sub(1);
    }
    if (stopping_.load()) return;
    seen = generation_.load();
    try {
      (*task_.load())(index);
    } catch (...) {
      record_error();
    }
    if (pending_.fetch_sub(1) == 1 && caller_sleeping_.load()) {  // seq_cst, as the caller's side
      std::lock_guard<std::mutex> g(mutex_);
      done_cv_.notify_one();
    }
  }
}

void ThreadPool::stop() {
  if (forks_seen_ != g_forks.load(std::memory_order_relaxed)) {  // a fork child: the workers are the parent's
    forget_parent_threads();
    return;
  }
  {
    std::lock_guard<std::mutex> g(mutex_);
    stopping_ = true;
  }
  start_cv_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
}

// In a child of fork() the workers do not exist (only the forking thread is copied) and the locks and
// condition variables may hold the parent's threads' state: waiting for those workers would hang for
// ever. The copies are abandoned (detached, never joined) and a fresh team started. A fork while a
// region runs in another thread leaves that region's caller behind in the parent only.
void ThreadPool::restart_after_fork() {
  new (&region_mutex_) std::mutex;
  forget_parent_threads();
  t_inside_parallel = false;
  resize(size());
}

// The condition variables count the parent's sleeping workers as waiters (destroying them would wait
// for those for ever), and a lock may be held by a thread that is not here: all are made anew.
void ThreadPool::forget_parent_threads() {
  for (auto& t : workers_) t.detach();
  workers_.clear();
  new (&mutex_) std::mutex;
  new (&start_cv_) std::condition_variable;
  new (&done_cv_) std::condition_variable;
  task_ = nullptr;
  pending_ = 0;
  sleepers_ = 0;
  caller_sleeping_ = false;
  error_ = nullptr;
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain) {
  if (n <= 0) return;
  if (forks_seen_ != g_forks.load(std::memory_order_relaxed)) restart_after_fork();
  grain = std::max<int64_t>(grain, 1);
  const int64_t chunks = std::min<int64_t>(size(), (n + grain - 1) / grain);
  if (chunks <= 1 || t_inside_parallel) {
    fn(0, n);
    return;
  }
  std::lock_guard<std::mutex> region(region_mutex_);
  const int64_t workers = std::min<int64_t>(chunks, size());
  // About kChunksPerThread chunks per thread, taken in order as threads come for them: a core slowed
  // by other work (a neighbour on a shared machine) takes fewer, where equal shares made the other
  // wait for it at the end of every region (bench/README.md). A chunk's bounds depend on n, grain
  // and the pool size only, not on which thread runs it.
  const int64_t chunk = std::max<int64_t>(grain, n / (workers * kChunksPerThread));
  std::atomic<int64_t> next{0};
  run([&](int index) {
    if (index >= workers) return;
    t_inside_parallel = true;
    try {
      for (int64_t begin; (begin = next.fetch_add(chunk, std::memory_order_relaxed)) < n;)
        fn(begin, std::min(n, begin + chunk));
    } catch (...) {
      t_inside_parallel = false;
      throw;
    }
    t_inside_parallel = false;
  });
}

ThreadPool::Use::Use(ThreadPool& pool) : previous_(t_current) { t_current = &pool; }
ThreadPool::Use::~Use() { t_current = previous_; }

ThreadPool& current_thread_pool() { return t_current ? *t_current : default_pool(); }

void set_num_threads(int n) {
  g_default_threads = std::max(1, n);
  default_pool().resize(g_default_threads.load());
}

int default_num_threads() { return g_default_threads.load(); }

int num_threads() { return current_thread_pool().size(); }

void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain) {
  current_thread_pool().parallel_for(n, fn, grain);
}

}  // namespace sa2va
