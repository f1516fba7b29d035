// The large-block pool: reuse of idle blocks of about the requested size, eviction of blocks that
// stay unused, release at the end of a request, and a flat footprint for a repeating pattern. The
// weight arena beside it: tensors packed back to back in 2 MiB-aligned chunks.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "core/block_pool.h"
#include "core/weight_arena.h"
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

TEST(WeightArena, PacksTensorsBackToBackInHugePageAlignedChunksThatOutliveIt) {
  std::vector<Tensor> kept;
  {
    WeightArena arena;
    kept.push_back(arena.empty({3, 100}, DType::U8));   // 300 bytes
    kept.push_back(arena.empty({1000}, DType::F32));    // next, at the following 64-byte boundary
    kept.push_back(arena.empty({70 * kMiB}, DType::U8));  // more than a chunk holds: one of its own
    kept.push_back(arena.empty({2, 5}, DType::F16));    // back in the first chunk
  }
  const auto address = [](const Tensor& t) { return reinterpret_cast<uintptr_t>(t.raw()); };
  EXPECT_EQ(address(kept[0]) % (2 * kMiB), 0u);  // a chunk starts on a huge page
  EXPECT_EQ(address(kept[1]), address(kept[0]) + 320);
  EXPECT_EQ(address(kept[2]) % (2 * kMiB), 0u);
  EXPECT_EQ(address(kept[3]), address(kept[1]) + 4032);  // 4000 bytes rounded up to 64
  for (const Tensor& t : kept) {
    EXPECT_TRUE(t.device().is_cpu());
    EXPECT_EQ(address(t) % 64, 0u);
    std::memset(t.raw(), 0x5a, t.nbytes());  // the memory stays usable after the arena is gone
  }
  EXPECT_EQ(kept[2].data<uint8_t>()[70 * kMiB - 1], 0x5a);
  EXPECT_EQ(kept[0].shape(), (Shape{3, 100}));
  EXPECT_EQ(kept[3].dtype(), DType::F16);
}

}  // namespace
}  // namespace sa2va
