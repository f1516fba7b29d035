// The large-block pool: reuse of idle blocks of about the requested size, eviction of blocks that
// stay unused, release at the end of a request, and a flat footprint for a repeating pattern.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "core/block_pool.h"
#include "core/tensor.h"

namespace sa2va {
namespace {

constexpr size_t kMiB = size_t{1} << 20;

TEST(BlockPool, ReusesAnIdleBlockOfAboutTheSameSize) {
  block_pool::release_idle();
  void* first = nullptr;
  {
    auto a = block_pool::acquire(3 * kMiB);
    first = a.get();
    std::memset(a.get(), 1, 3 * kMiB);  // writable over its whole size
  }
  EXPECT_EQ(block_pool::stats().idle_blocks, 1u);
  {
    auto b = block_pool::acquire(3 * kMiB - 1000);  // fits: reused
    EXPECT_EQ(b.get(), first);
    auto c = block_pool::acquire(3 * kMiB);         // the block is taken: a new one
    EXPECT_NE(c.get(), first);
  }
  {
    auto small = block_pool::acquire(kMiB);  // the idle 3 MiB blocks would waste too much
    EXPECT_NE(small.get(), first);
  }
  block_pool::release_idle();
  EXPECT_EQ(block_pool::stats().idle_blocks, 0u);
  EXPECT_EQ(block_pool::stats().idle_bytes, 0u);
}

TEST(BlockPool, BlocksIdleThroughAWholePeriodAreUnmapped) {
  block_pool::release_idle();
  const size_t before = block_pool::stats().mapped_bytes;
  { auto stranded = block_pool::acquire(9 * kMiB); }  // too big to serve 2 MiB (over 4x)
  void* kept_data = nullptr;
  { auto kept = block_pool::acquire(2 * kMiB); kept_data = kept.get(); }
  block_pool::end_of_period();  // both were released during this period: they stay
  EXPECT_EQ(block_pool::stats().mapped_bytes, before + 11 * kMiB);
  { auto again = block_pool::acquire(2 * kMiB); EXPECT_EQ(again.get(), kept_data); }  // reused in the next one
  block_pool::end_of_period();  // the 9 MiB block sat idle through a whole period: unmapped
  EXPECT_EQ(block_pool::stats().mapped_bytes, before + 2 * kMiB);
  block_pool::release_idle();
  EXPECT_EQ(block_pool::stats().mapped_bytes, before);
}

TEST(BlockPool, RepeatingPatternKeepsAFlatFootprint) {
  block_pool::release_idle();
  const size_t before = block_pool::stats().mapped_bytes;
  size_t after_first = 0;
  for (int frame = 0; frame < 50; ++frame) {
    std::vector<std::shared_ptr<void>> live;
    for (size_t mib : {8, 2, 2, 16, 1, 4}) live.push_back(block_pool::acquire(mib * kMiB));
    live.erase(live.begin() + 1);  // freed in a different order than taken
    live.push_back(block_pool::acquire(2 * kMiB));
    live.clear();
    block_pool::end_of_period();
    if (frame == 0) after_first = block_pool::stats().mapped_bytes;
    EXPECT_EQ(block_pool::stats().mapped_bytes, after_first) << "frame " << frame;
  }
  EXPECT_LE(after_first - before, 33 * kMiB + 6 * (64 << 10));
  block_pool::release_idle();
  EXPECT_EQ(block_pool::stats().mapped_bytes, before);
}

#if !defined(__SANITIZE_ADDRESS__)
TEST(BlockPool, LargeTensorsUseThePool) {
  block_pool::release_idle();
  const size_t before = block_pool::stats().mapped_bytes;
  {
    Tensor t = Tensor::zeros({512, 1024});  // 2 MiB
    EXPECT_EQ(block_pool::stats().mapped_bytes, before + 2 * kMiB);
    EXPECT_EQ(t.f32()[512 * 1024 - 1], 0.f);
  }
  EXPECT_EQ(block_pool::stats().idle_bytes, 2 * kMiB);
  Tensor small = Tensor::empty({16});
  EXPECT_EQ(block_pool::stats().idle_bytes, 2 * kMiB);  // small tensors come from malloc
  block_pool::release_idle();
}
#endif

}  // namespace
}  // namespace sa2va
