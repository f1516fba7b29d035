#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <thread>
#include <numeric>

#include "core/dtype.h"
#include "core/error.h"
#include "core/tensor.h"
#include "core/threadpool.h"

namespace sa2va {
namespace {

TEST(ThreadPool, CoversTheRangeOnceWithAnyThreadCount) {
  for (int threads : {1, 2, 3, 1, 2}) {  // resizing after work has run must be safe
    set_num_threads(threads);
    for (int64_t n : {0, 1, 2, 7, 1000}) {
      std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
      parallel_for(n, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)]++;
      });
      for (auto& h : hits) EXPECT_EQ(h.load(), 1);
    }
  }
  set_num_threads(2);
}

// Chunks are handed out in turn: the range goes in more chunks than there are threads, each `grain`
// long but for the last, and while one thread is held inside the first chunk the other runs every
// other chunk (had chunks been dealt to threads beforehand, the held thread's later ones would never
// run and the first chunk would wait out its 20 s).
TEST(ThreadPool, AHeldThreadLeavesTheRestToTheOthers) {
  set_num_threads(2);
  constexpr int64_t n = 64, grain = 4;
  std::atomic<int64_t> others_done{0};
  std::atomic<bool> gave_up{false};
  std::mutex m;
  std::vector<std::pair<int64_t, int64_t>> chunks;
  parallel_for(n, [&](int64_t b, int64_t e) {
    {
      std::lock_guard<std::mutex> g(m);
      chunks.emplace_back(b, e);
    }
    if (b == 0) {
      const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
      while (others_done.load() < n - (e - b)) {
        if (std::chrono::steady_clock::now() > until) {
          gave_up = true;
          return;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    } else {
      others_done += e - b;
    }
  }, grain);
  EXPECT_FALSE(gave_up.load()) << "the rest of the range waited for the held thread";
  int64_t covered = 0;
  for (const auto& [b, e] : chunks) {
    EXPECT_TRUE(e - b >= grain || e == n) << "chunk [" << b << ", " << e << ")";
    EXPECT_LT(e - b, n / 2) << "one share per thread";
    covered += e - b;
  }
  EXPECT_EQ(covered, n);
}

TEST(ThreadPool, ExceptionsReachTheCallerAndNestedCallsRunInline) {
  set_num_threads(2);
  EXPECT_THROW(parallel_for(100, [](int64_t b, int64_t) { if (b > 0) throw Error("boom"); }), Error);
  std::atomic<int> total{0};
  parallel_for(4, [&](int64_t b, int64_t e) {
    parallel_for(10, [&](int64_t bb, int64_t ee) { total += static_cast<int>((ee - bb) * (e - b)); });
  });
  EXPECT_EQ(total.load(), 40);
}

TEST(Tensor, ViewsShareStorageAndCopiesAreContiguous) {
  Tensor t = Tensor::from_vector({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, {3, 4});
  Tensor col = t.select(1, 2);
  EXPECT_EQ(col.to_vector(), (std::vector<float>{2, 6, 10}));
  Tensor tt = t.transpose(0, 1);
  EXPECT_FALSE(tt.is_contiguous());
  EXPECT_EQ(tt.contiguous().to_vector(), (std::vector<float>{0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11}));
  Tensor s = t.slice(1, 1, 3);
  EXPECT_EQ(s.clone().to_vector(), (std::vector<float>{1, 2, 5, 6, 9, 10}));
  s.clone().f32()[0] = 100;  // a clone is independent
  EXPECT_EQ(t.f32()[1], 1);
  t.view({2, 6}).f32()[1] = 42;  // a view is not
  EXPECT_EQ(t.f32()[1], 42);
  EXPECT_EQ(t.view({-1, 2}).shape(), (Shape{6, 2}));
  EXPECT_THROW(t.view({5, 5}), Error);
  EXPECT_THROW(tt.view({12}), Error);
  EXPECT_THROW(t.slice(0, 2, 5), Error);
}

TEST(Tensor, DtypeConversions) {
  Tensor f = Tensor::from_vector({1.f, -2.5f, 3.14159f, 65504.f, 1e-8f}, {5});
  const std::vector<float> back = f.to(DType::BF16).to_vector();
  EXPECT_EQ(back[0], 1.f);
  EXPECT_EQ(back[1], -2.5f);
  EXPECT_NEAR(back[2], 3.140625f, 1e-6);
  EXPECT_EQ(f.to(DType::F16).to_vector()[3], 65504.f);
  EXPECT_EQ(f32_to_bf16(1.00390625f), 0x3f80);  // exactly halfway: rounds to even
  EXPECT_EQ(f32_to_bf16(1.01171875f), 0x3f82);  // halfway above an odd value: rounds up
  EXPECT_EQ(f16_to_f32(f32_to_f16(0.333251953125f)), 0.333251953125f);
  EXPECT_THROW(f.f32() && f.bf16(), Error);
}

}  // namespace
}  // namespace sa2va

namespace sa2va {
namespace {

// Threads that took part in one parallel_for over many chunks on the current pool.
size_t threads_used() {
  std::mutex m;
  std::set<std::thread::id> ids;
  parallel_for(64, [&](int64_t, int64_t) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));  // let every worker take a chunk
    std::lock_guard<std::mutex> g(m);
    ids.insert(std::this_thread::get_id());
  });
  return ids.size();
}

TEST(ThreadPool, EachContextUsesItsOwnPool) {
  ThreadPool one(1), three(3);
  std::atomic<bool> failed{false};
  auto run_on = [&](ThreadPool& pool, size_t expected) {
    const ThreadPool::Use use(pool);
    for (int i = 0; i < 20; ++i) {
      if (num_threads() != static_cast<int>(expected) || threads_used() != expected) failed = true;
    }
  };
  // Two "models" with different thread counts, running at the same time from two threads.
  std::thread a([&] { run_on(one, 1); });
  std::thread b([&] { run_on(three, 3); });
  a.join();
  b.join();
  EXPECT_FALSE(failed.load());
  // Guards nest and restore the previous pool.
  const int outer = num_threads();
  {
    const ThreadPool::Use use(three);
    EXPECT_EQ(num_threads(), 3);
    {
      const ThreadPool::Use inner(one);
      EXPECT_EQ(num_threads(), 1);
    }
    EXPECT_EQ(num_threads(), 3);
  }
  EXPECT_EQ(num_threads(), outer);
}

// A child of fork() has the pool's memory but not its worker threads (a Python multiprocessing
// worker, say): its first region starts a new team instead of waiting for ever. The child runs
// under an alarm, so a hang ends it with a signal the parent reports.
TEST(ThreadPool, AForkedChildRunsRegionsOnANewTeam) {
  ThreadPool pool(3);
  auto* unused = new ThreadPool(2);  // destroyed in the child before it runs a region
  const ThreadPool::Use use(pool);
  ASSERT_EQ(threads_used(), 3u);  // the workers exist and have run before the fork
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    alarm(20);
    delete unused;  // its workers are not in this process: nothing to join
    const bool ok = num_threads() == 3 && threads_used() == 3 && threads_used() == 3;
    _exit(ok ? 0 : 1);
  }
  delete unused;
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status)) << "the child ended by signal " << (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  EXPECT_EQ(WIFEXITED(status) ? WEXITSTATUS(status) : -1, 0) << "the child's regions did not use 3 threads";
  EXPECT_EQ(threads_used(), 3u);  // the parent's team is untouched
}

}  // namespace
}  // namespace sa2va
