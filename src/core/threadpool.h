// Thread pools and parallel_for over an index range.
//
// A ThreadPool is a fixed set of worker threads; kernels split their outer loop (rows, heads,
// channels) into contiguous chunks, about eight per thread, which the threads take in order as
// they finish the previous one (a core slowed by other work takes fewer). The workers are a
// persistent team: after a region they spin for a short while before sleeping, so the back-to-back
// regions of a decode step (a few hundred per token, microseconds apart) start without a kernel
// wake-up. Every model owns its pool (ModelOptions::threads), so two models with different thread
// counts in one process do not disturb each other; a request runs its kernels on the pool of the
// execution context it runs in (core/context.h), which a ThreadPool::Use guard makes the calling
// thread's current pool. Without one, the process's default pool is used (sized by
// set_num_threads, all cores by default). A child of fork() has a copy of every pool but none of
// its threads: its first region starts new ones.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace sa2va {

class ThreadPool {
 public:
  explicit ThreadPool(int threads);  // threads >= 1 (the calling thread counts as one)
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return size_.load(std::memory_order_relaxed); }
  // Throws Error (and keeps one thread) when the system cannot start the threads.
  void resize(int threads);

  // Calls fn(begin, end) on disjoint chunks covering [0, n), each `grain` long at least but for the
  // last (about eight per thread, their bounds set by n, grain and the pool size; any thread may run
  // any chunk: a caller wanting one chunk per thread passes a grain of n / size()). Runs inline
  // when n is small, the pool has one thread, or the caller already is inside a parallel region.
  // Regions of one pool run one at a time (callers from several threads queue).
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain = 1);

  // Makes `pool` the calling thread's current pool for the guard's lifetime.
  class Use {
   public:
    explicit Use(ThreadPool& pool);
    ~Use();
    Use(const Use&) = delete;
    Use& operator=(const Use&) = delete;

   private:
    ThreadPool* previous_;
  };

 private:
  void restart_after_fork();
  void forget_parent_threads();
  void run(const std::function<void(int)>& task);  // task(index) on every thread, caller is 0
  void loop(int index, uint64_t seen);
  void stop();
  void record_error();

  std::mutex region_mutex_;  // one parallel region at a time
  std::vector<std::thread> workers_;
  std::mutex mutex_;  // guards the sleeping side: the condition variables, error_
  std::condition_variable start_cv_, done_cv_;
  std::atomic<const std::function<void(int)>*> task_{nullptr};
  std::atomic<int> pending_{0};        // workers still running the current region
  std::atomic<uint64_t> generation_{0};  // bumped to start a region
  std::atomic<int> sleepers_{0};       // workers waiting on start_cv_
  std::atomic<bool> caller_sleeping_{false};
  std::atomic<bool> stopping_{false};
  std::exception_ptr error_;
  std::atomic<int> size_{1};
  uint64_t forks_seen_ = 0;  // the process's fork count when the workers started (see restart_after_fork)
};

// The calling thread's current pool (the default pool when no ThreadPool::Use is active).
ThreadPool& current_thread_pool();

// Sets the size of the process's default pool (>= 1).
void set_num_threads(int n);
// The size the default pool has (or will have when first used), without starting it.
int default_num_threads();
// Threads of the current pool.
int num_threads();

// parallel_for on the current pool.
void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain = 1);

}  // namespace sa2va
