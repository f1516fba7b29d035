// SAM2 video tracking: memory-bank selection against a literal transcription of upstream's rules
// (conditioning frames 0 … F−1 and spread over the video), bounded state over a long run, the order
// in which frames are read and masks handed out, and the tiny fixture's "video" case in f32 (and
// bf16) mode.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <iostream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "io/config.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "io/weights.h"
#include "models/preprocess.h"
#include "models/sam2/sam2_image.h"
#include "models/sam2/video_tracker.h"
#include "test_util.h"

namespace sa2va::sam2 {
namespace {

// ---- memory-bank selection ------------------------------------------------------------------

// Upstream `_prepare_memory_conditioned_features` (r = 1, forward tracking) over a dictionary of
// every frame's output, with nothing ever dropped.
MemorySelection reference_selection(int t, const std::vector<int>& cond, const std::vector<int>& tracked,
                                    int num_frames, int num_maskmem = 7, int max_obj_ptrs = 16) {
  auto is_tracked = [&](int f) { return std::find(tracked.begin(), tracked.end(), f) != tracked.end(); };
  MemorySelection s;
  for (int c : cond) s.memories.push_back({c, num_maskmem - 1});
  for (int t_pos = 1; t_pos < num_maskmem; ++t_pos) {
    const int t_rel = num_maskmem - t_pos;
    const int prev = t_rel == 1 ? t - 1 : (t - 2) - (t_rel - 2);
    if (is_tracked(prev)) s.memories.push_back({prev, num_maskmem - t_pos - 1});
  }
  for (int c : cond)
    if (c <= t) s.pointers.push_back(c);
  const int max_ptrs = std::min(num_frames, max_obj_ptrs);
  for (int d = 1; d < max_ptrs; ++d) {
    const int prev = t - d;
    if (prev < 0 || prev >= num_frames) break;
    if (is_tracked(prev)) s.pointers.push_back(prev);
  }
  return s;
}

Tensor dummy_memory() { return Tensor::zeros({16, 64}, DType::BF16); }
Tensor dummy_pointer(int frame) { return Tensor::from_vector(std::vector<float>(256, static_cast<float>(frame)), {256}); }

TEST(Sam2VideoMemoryBank, SelectionMatchesUpstreamRules) {
  const int T = 20, F = 5;
  MemoryBank bank(7, 16, T);
  std::vector<int> cond, tracked;
  for (int f = 0; f < F; ++f) {
    bank.add_conditioning(f, dummy_memory(), dummy_pointer(f));
    cond.push_back(f);
  }
  for (int t = F; t < T; ++t) {
    const MemorySelection got = bank.select(t);
    const MemorySelection want = reference_selection(t, cond, tracked, T);
    EXPECT_EQ(got.memories, want.memories) << "frame " << t;
    EXPECT_EQ(got.pointers, want.pointers) << "frame " << t;
    for (int p : got.pointers) EXPECT_EQ(bank.pointer(p).f32()[0], static_cast<float>(p));
    bank.add_tracked(t, dummy_memory(), dummy_pointer(t));
    tracked.push_back(t);
  }

  // Spot checks written out by hand (frame, temporal-encoding index).
  MemoryBank b(7, 16, T);
  for (int f = 0; f < F; ++f) b.add_conditioning(f, dummy_memory(), dummy_pointer(f));
  const MemorySelection first = b.select(5);
  EXPECT_EQ(first.memories, (std::vector<MemoryRef>{{0, 6}, {1, 6}, {2, 6}, {3, 6}, {4, 6}}));
  EXPECT_EQ(first.pointers, (std::vector<int>{0, 1, 2, 3, 4}));
  for (int t = F; t < 12; ++t) b.add_tracked(t, dummy_memory(), dummy_pointer(t));
  const MemorySelection mid = b.select(12);
  EXPECT_EQ(mid.memories, (std::vector<MemoryRef>{{0, 6}, {1, 6}, {2, 6}, {3, 6}, {4, 6}, {6, 5}, {7, 4}, {8, 3},
                                                  {9, 2}, {10, 1}, {11, 0}}));
  EXPECT_EQ(mid.pointers, (std::vector<int>{0, 1, 2, 3, 4, 11, 10, 9, 8, 7, 6, 5}));
  for (int t = 12; t < 19; ++t) b.add_tracked(t, dummy_memory(), dummy_pointer(t));
  const MemorySelection last = b.select(19);
  EXPECT_EQ(last.memories.size(), 11u);
  EXPECT_EQ(last.memories[5], (MemoryRef{13, 5}));
  EXPECT_EQ(last.memories[10], (MemoryRef{18, 0}));
  // 15 pointer slots reach back to frame 4, a conditioning frame: 14 tracked pointers (18 … 5).
  EXPECT_EQ(last.pointers.size(), 5u + 14u);
  EXPECT_EQ(last.pointers[5], 18);
  EXPECT_EQ(last.pointers.back(), 5);
}

TEST(Sam2VideoMemoryBank, ShortVideoLimitsPointers) {
  // P = min(num_frames, 16): with 8 frames pointers reach back 7 frames.
  const int T = 8;
  MemoryBank bank(7, 16, T);
  bank.add_conditioning(0, dummy_memory(), dummy_pointer(0));
  std::vector<int> tracked;
  for (int t = 1; t < T; ++t) {
    const MemorySelection want = reference_selection(t, {0}, tracked, T);
    const MemorySelection got = bank.select(t);
    EXPECT_EQ(got.memories, want.memories) << "frame " << t;
    EXPECT_EQ(got.pointers, want.pointers) << "frame " << t;
    bank.add_tracked(t, dummy_memory(), dummy_pointer(t));
    tracked.push_back(t);
  }
}

TEST(Sam2VideoMemoryBank, SelectionWithConditioningFramesSpreadOverTheVideo) {
  // Key frames spread over the video: tracking starts at frame 0, before the first of them.
  const int T = 20;
  const std::vector<int> cond = {2, 7, 12, 17};
  MemoryBank bank(7, 16, T);
  for (int c : cond) bank.add_conditioning(c, dummy_memory(), dummy_pointer(c));
  std::vector<int> tracked;
  std::map<int, MemorySelection> seen;
  for (int t = 0; t < T; ++t) {
    if (std::find(cond.begin(), cond.end(), t) != cond.end()) continue;
    const MemorySelection got = bank.select(t);
    const MemorySelection want = reference_selection(t, cond, tracked, T);
    EXPECT_EQ(got.memories, want.memories) << "frame " << t;
    EXPECT_EQ(got.pointers, want.pointers) << "frame " << t;
    for (int p : got.pointers) EXPECT_EQ(bank.pointer(p).f32()[0], static_cast<float>(p));
    seen[t] = got;
    bank.add_tracked(t, dummy_memory(), dummy_pointer(t));
    tracked.push_back(t);
  }
  // Written out by hand: (frame, temporal-encoding index). Every conditioning memory is attended
  // to, even those still ahead; pointers only of conditioning frames already reached.
  const std::vector<MemoryRef> all_cond = {{2, 6}, {7, 6}, {12, 6}, {17, 6}};
  auto with_cond = [&](std::vector<MemoryRef> tail) {
    std::vector<MemoryRef> m = all_cond;
    m.insert(m.end(), tail.begin(), tail.end());
    return m;
  };
  EXPECT_EQ(seen[0].memories, all_cond);
  EXPECT_TRUE(seen[0].pointers.empty());
  EXPECT_EQ(seen[1].memories, with_cond({{0, 0}}));
  EXPECT_EQ(seen[1].pointers, (std::vector<int>{0}));
  // Frame 2 is a conditioning frame: it is not counted again among the recent frames.
  EXPECT_EQ(seen[3].memories, with_cond({{0, 2}, {1, 1}}));
  EXPECT_EQ(seen[3].pointers, (std::vector<int>{2, 1, 0}));
  EXPECT_EQ(seen[8].memories, with_cond({{3, 4}, {4, 3}, {5, 2}, {6, 1}}));
  EXPECT_EQ(seen[8].pointers, (std::vector<int>{2, 7, 6, 5, 4, 3, 1, 0}));
  EXPECT_EQ(seen[19].memories, with_cond({{13, 5}, {14, 4}, {15, 3}, {16, 2}, {18, 0}}));
  EXPECT_EQ(seen[19].pointers, (std::vector<int>{2, 7, 12, 17, 18, 16, 15, 14, 13, 11, 10, 9, 8, 6, 5, 4}));
}

TEST(Sam2VideoMemoryBank, StateStaysBoundedOnLongVideos) {
  const int T = 1000, F = 5;
  MemoryBank bank(7, 16, T);
  std::vector<int> cond, tracked;
  for (int f = 0; f < F; ++f) {
    bank.add_conditioning(f, dummy_memory(), dummy_pointer(f));
    cond.push_back(f);
  }
  int64_t max_bytes = 0;
  for (int t = F; t < T; ++t) {
    // Eviction never drops anything upstream would still select.
    if (t % 97 == 0 || t < 40) {
      const MemorySelection want = reference_selection(t, cond, tracked, T);
      const MemorySelection got = bank.select(t);
      ASSERT_EQ(got.memories, want.memories) << "frame " << t;
      ASSERT_EQ(got.pointers, want.pointers) << "frame " << t;
    }
    bank.add_tracked(t, dummy_memory(), dummy_pointer(t));
    tracked.push_back(t);
    EXPECT_LE(bank.num_memories(), F + 6) << "frame " << t;
    EXPECT_LE(bank.num_pointers(), F + 15) << "frame " << t;
    if (t >= 40) {
      EXPECT_EQ(bank.bytes(), max_bytes) << "frame " << t;
    }
    max_bytes = std::max(max_bytes, bank.bytes());
  }
  EXPECT_EQ(bank.num_memories(), F + 6);
  EXPECT_EQ(bank.num_pointers(), F + 15);
}

TEST(Sam2VideoMemoryBank, RejectsOutOfOrderFrames) {
  MemoryBank bank(7, 16, 10);
  bank.add_conditioning(0, dummy_memory(), dummy_pointer(0));
  bank.add_tracked(3, dummy_memory(), dummy_pointer(3));
  EXPECT_THROW(bank.add_tracked(2, dummy_memory(), dummy_pointer(2)), Error);
  EXPECT_THROW(bank.add_conditioning(0, dummy_memory(), dummy_pointer(0)), Error);
  // Conditioning frames come first, in increasing order.
  EXPECT_THROW(bank.add_conditioning(5, dummy_memory(), dummy_pointer(5)), Error);
  MemoryBank b(7, 16, 10);
  b.add_conditioning(4, dummy_memory(), dummy_pointer(4));
  EXPECT_THROW(b.add_conditioning(2, dummy_memory(), dummy_pointer(2)), Error);
  EXPECT_THROW(b.add_tracked(4, dummy_memory(), dummy_pointer(4)), Error);
}

// ---- tiny fixture --------------------------------------------------------------------------------

const Tensor* find_stage(const StageRecorder& rec, const std::string& name) {
  for (const auto& [n, t] : rec.stages())
    if (n == name) return &t;
  return nullptr;
}

struct VideoRun {
  std::vector<Tensor> low_res;  // per frame [256, 256]
  std::vector<int> requested;   // frames in the order the tracker read them
  StageRecorder rec;
  double seconds = 0;
};

const std::vector<int> kFirstFiveFrames = {0, 1, 2, 3, 4};

VideoRun run_fixture_video(const std::string& dir, Precision precision,
                           const std::vector<int>& conditioning = kFirstFiveFrames) {
  const Checkpoint ck = Checkpoint::open(dir);
  const ModelConfig cfg = load_config(dir);
  Weights w(ck, precision);
  const Sam2Image sam = Sam2Image::load(w, cfg);
  const VideoTracker tracker = VideoTracker::load(w, cfg);
  w.finish();
  const std::string golden = dir + "/goldens/video.safetensors";
  const Tensor lang = test::load_golden(golden, "seg.embeds");
  VideoRun run;
  const int T = 6;
  auto frames = [&](int t) {
    run.requested.push_back(t);
    return preprocess::sam2_input(load_image(dir + "/inputs/video_frame" + std::to_string(t) + ".png"));
  };
  int expected_frame = 0;
  auto sink = [&](int frame, int object, const Tensor& low_res) {
    EXPECT_EQ(frame, expected_frame++);
    EXPECT_EQ(object, 0);
    run.low_res.push_back(low_res);
  };
  const auto start = std::chrono::steady_clock::now();
  ExecContext ctx;
  ctx.recorder = &run.rec;
  tracker.track(sam, lang, T, conditioning, frames, sink, ctx);
  run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return run;
}

TEST(Sam2VideoConformance, TinyVideoF32) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  const std::string golden = dir + "/goldens/video.safetensors";
  const VideoRun run = run_fixture_video(dir, Precision::F32);
  std::cout << "video tracking (6 frames, f32): " << run.seconds << " s\n";
  EXPECT_EQ(run.requested, (std::vector<int>{0, 1, 2, 3, 4, 5}));

  const Tensor* maskmem = find_stage(run.rec, "sam.maskmem_features_frame0");
  ASSERT_NE(maskmem, nullptr);
  // Both sides are rounded to bf16 from f32 values that agree to ~1e-5: a value near a rounding
  // boundary may land one bf16 step away, so allow |a − e| <= 1e-4·rms + one step, on few elements.
  const Tensor got_mem = test::strided(*maskmem, 16);
  const Tensor want_mem = test::load_golden(golden, "sam.maskmem_features_frame0.sub16");
  const double rms = test::compare(want_mem, want_mem).ref_rms;
  int64_t rounded_apart = 0;
  for (int64_t i = 0; i < want_mem.numel(); ++i) {
    const float a = got_mem.f32()[i], e = want_mem.f32()[i];
    ASSERT_EQ(a, round_to_bf16(a)) << "memory features must hold bf16 values";
    if (a == e) continue;
    ++rounded_apart;
    const float step = std::ldexp(1.f, std::ilogb(std::max(std::fabs(a), std::fabs(e))) - 7);
    EXPECT_LE(std::fabs(a - e), step + 1e-4 * rms) << "element " << i << ": " << a << " vs " << e;
  }
  std::cout << "maskmem features frame 0: " << rounded_apart << " of " << want_mem.numel()
            << " sampled values rounded to a neighbouring bf16 value\n";
  EXPECT_LE(rounded_apart, want_mem.numel() / 100);
  const Tensor* with_mem = find_stage(run.rec, "sam.frame5.pix_feat_with_mem");
  ASSERT_NE(with_mem, nullptr);
  // Tight: the memory features' bf16 rounding flips above alone move this by ~1e-4 (a random 0.3%
  // one-step perturbation of the conditioning memories changes it by 2e-4).
  const Tensor want_with_mem = test::load_golden(golden, "sam.frame5.pix_feat_with_mem.sub16");
  std::cout << "frame 5 pix_feat_with_mem: max|diff|/rms " << test::compare(test::strided(*with_mem, 16), want_with_mem).rel() << "\n";
  EXPECT_TRUE(test::close_rel(test::strided(*with_mem, 16), want_with_mem, 1e-4));

  ASSERT_EQ(run.low_res.size(), 6u);
  const Tensor want_low = test::load_golden(golden, "seg0.mask_logits_lowres");
  const Tensor want_logits = test::load_golden(golden, "seg0.mask_logits");
  const Tensor want_mask = test::load_golden(golden, "seg0.mask");
  const int64_t H = want_mask.size(1), W = want_mask.size(2);
  for (int t = 0; t < 6; ++t) {
    EXPECT_TRUE(test::close_rel(run.low_res[t], want_low.select(0, t), 1e-4)) << "frame " << t;
    const Tensor logits = preprocess::postprocess_mask_logits(run.low_res[t], static_cast<int>(H), static_cast<int>(W));
    EXPECT_TRUE(test::close_rel(logits, want_logits.select(0, t), 1e-4)) << "frame " << t;
    const double iou = test::mask_iou(preprocess::threshold_mask(logits), want_mask.select(0, t).contiguous());
    EXPECT_GE(iou, 0.999) << "frame " << t;
    std::cout << "f32 frame " << t << ": low-res max|diff|/rms " << test::compare(run.low_res[t], want_low.select(0, t)).rel()
              << ", logits " << test::compare(logits, want_logits.select(0, t)).rel() << ", mask IoU " << iou << "\n";
  }
}

TEST(Sam2VideoConformance, TinyVideoBf16) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  const std::string golden = dir + "/goldens/video.safetensors";
  const VideoRun run = run_fixture_video(dir, Precision::BF16);
  const Tensor want_low = test::load_golden(golden, "seg0.mask_logits_lowres");
  const Tensor want_mask = test::load_golden(golden, "seg0.mask");
  const int64_t H = want_mask.size(1), W = want_mask.size(2);
  ASSERT_EQ(run.low_res.size(), 6u);
  for (int t = 0; t < 6; ++t) {
    const test::Diff diff = test::compare(run.low_res[t], want_low.select(0, t));
    const Tensor mask = preprocess::threshold_mask(
        preprocess::postprocess_mask_logits(run.low_res[t], static_cast<int>(H), static_cast<int>(W)));
    const double iou = test::mask_iou(mask, want_mask.select(0, t).contiguous());
    std::cout << "bf16 frame " << t << ": low-res max|diff|/rms " << diff.rel() << ", mask IoU " << iou << "\n";
    RecordProperty("frame" + std::to_string(t) + "_iou", std::to_string(iou));
    EXPECT_GE(iou, 0.95) << "frame " << t;
  }
  std::cout << "video tracking (6 frames, bf16): " << run.seconds << " s\n";
}

// Key frames spread over the video ({0, 2, 4} of 6): those frames are decoded exactly as in the
// reference (where they are conditioning frames too), the others are tracked with that memory.
TEST(Sam2VideoConformance, TinyVideoSpreadKeyFrames) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  const std::string golden = dir + "/goldens/video.safetensors";
  const VideoRun run = run_fixture_video(dir, Precision::F32, {0, 2, 4});
  std::cout << "video tracking (6 frames, key frames {0, 2, 4}, f32): " << run.seconds << " s\n";
  EXPECT_EQ(run.requested, (std::vector<int>{0, 2, 4, 1, 3, 5}));
  ASSERT_EQ(run.low_res.size(), 6u);
  const Tensor want_low = test::load_golden(golden, "seg0.mask_logits_lowres");
  const Tensor want_mask = test::load_golden(golden, "seg0.mask");
  const int64_t H = want_mask.size(1), W = want_mask.size(2);
  for (int t = 0; t < 6; ++t) {
    ASSERT_EQ(run.low_res[t].shape(), (Shape{256, 256}));
    for (float v : run.low_res[t].to_vector()) ASSERT_TRUE(std::isfinite(v)) << "frame " << t;
    const Tensor mask = preprocess::threshold_mask(
        preprocess::postprocess_mask_logits(run.low_res[t], static_cast<int>(H), static_cast<int>(W)));
    const double iou = test::mask_iou(mask, want_mask.select(0, t).contiguous());
    const double rel = test::compare(run.low_res[t], want_low.select(0, t)).rel();
    std::cout << "frame " << t << (t % 2 == 0 ? " (key)" : " (tracked)") << ": low-res max|diff|/rms vs 5-key-frame golden "
              << rel << ", mask IoU " << iou << "\n";
    if (t % 2 == 0) {
      EXPECT_TRUE(test::close_rel(run.low_res[t], want_low.select(0, t), 1e-4)) << "frame " << t;
    }
  }
  // Frame 1 is tracked here but a conditioning frame in the reference: its logits must differ.
  EXPECT_GT(test::compare(run.low_res[1], want_low.select(0, 1)).rel(), 1e-3);
  // Memories of the key frames, and of tracked frames 1 and 3 (a later frame is tracked); frame 5 is last.
  for (int t : {0, 1, 2, 3, 4}) EXPECT_NE(find_stage(run.rec, "sam.maskmem_features_frame" + std::to_string(t)), nullptr);
  EXPECT_EQ(find_stage(run.rec, "sam.maskmem_features_frame5"), nullptr);
  for (int t : {1, 3, 5}) EXPECT_NE(find_stage(run.rec, "sam.frame" + std::to_string(t) + ".pix_feat_with_mem"), nullptr);
}

// The tiny checkpoint's SAM2 image path and tracker at a 256² input (g = 16), bf16 mode.
struct SmallTracker {
  Checkpoint checkpoint;
  Sam2Image sam;
  VideoTracker tracker;
  explicit SmallTracker(const std::string& dir) : checkpoint(Checkpoint::open(dir)) {
    ModelConfig cfg = load_config(dir);
    cfg.sam2.image_size = 256;
    Weights w(checkpoint, Precision::BF16);
    sam = Sam2Image::load(w, cfg);
    tracker = VideoTracker::load(w, cfg);
    w.finish();
  }
};

// A long run of the real tracker at a small input size (the tiny checkpoint at 256², g = 16):
// every frame goes through memory attention, memory encoding and the bank, whose size must stop
// growing once the windows are full.
TEST(Sam2VideoTracker, LongRunStaysBounded) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  const SmallTracker small(dir);
  const Sam2Image& sam = small.sam;
  const VideoTracker& tracker = small.tracker;
  const Tensor lang = test::load_golden(dir + "/goldens/video.safetensors", "seg.embeds");

  std::mt19937 rng(7);
  std::normal_distribution<float> noise(0.f, 1.f);
  const int T = 40, F = 5;
  TrackerState state = tracker.new_state(lang, T, {0, 1, 2, 3, 4});
  ASSERT_EQ(state.objects(), 1);
  const MemoryBank& bank = state.banks[0];
  auto frames = [&](int) {
    std::vector<float> pixels(3 * 256 * 256);
    for (float& p : pixels) p = noise(rng);
    return Tensor::from_vector(pixels, {3, 256, 256});
  };
  int masks_out = 0;
  auto sink = [&](int frame, int object, const Tensor& low) {
    EXPECT_EQ(frame, masks_out++);
    EXPECT_EQ(object, 0);
    EXPECT_EQ(low.shape(), (Shape{64, 64}));
    for (float v : low.to_vector()) ASSERT_TRUE(std::isfinite(v)) << "frame " << frame;
  };
  int64_t plateau = -1;
  for (int t = 0; t < T; ++t) {
    ASSERT_EQ(state.next_frame(), t);
    tracker.step(state, sam, frames, sink);
    ASSERT_EQ(masks_out, t + 1);
    EXPECT_LE(bank.num_memories(), F + 6);
    EXPECT_LE(bank.num_pointers(), F + 15);
    if (t == 30) plateau = bank.bytes();
    if (t > 30 && t + 1 < T) {
      EXPECT_EQ(bank.bytes(), plateau) << "frame " << t;
    }
  }
  EXPECT_TRUE(state.done());
  EXPECT_THROW(tracker.step(state, sam, frames, sink), Error);
}

// Conditioning frames first (ascending), then the rest (ascending); masks leave in frame order,
// objects in order within a frame. Frames before the first key frame get a mask too.
TEST(Sam2VideoTracker, FrameRequestAndMaskOrderWithSpreadKeyFrames) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  const SmallTracker small(dir);
  const Sam2Image& sam = small.sam;
  const VideoTracker& tracker = small.tracker;
  const Tensor one = test::load_golden(dir + "/goldens/video.safetensors", "seg.embeds");
  Tensor lang = Tensor::empty({2, one.size(1)});  // two objects: the [SEG] prompt and its negation
  for (int64_t i = 0; i < one.size(1); ++i) {
    lang.f32()[i] = one.f32()[i];
    lang.f32()[one.size(1) + i] = -one.f32()[i];
  }

  const int T = 8;
  std::vector<int> requested;
  auto frames = [&](int t) {
    requested.push_back(t);
    std::mt19937 rng(static_cast<unsigned>(t));
    std::normal_distribution<float> noise(0.f, 1.f);
    std::vector<float> pixels(3 * 256 * 256);
    for (float& p : pixels) p = noise(rng);
    return Tensor::from_vector(pixels, {3, 256, 256});
  };
  std::vector<std::pair<int, int>> delivered;
  auto sink = [&](int frame, int object, const Tensor& low) {
    delivered.emplace_back(frame, object);
    EXPECT_EQ(low.shape(), (Shape{64, 64}));
    for (float v : low.to_vector()) ASSERT_TRUE(std::isfinite(v)) << "frame " << frame;
  };
  tracker.track(sam, lang, T, {3, 5, 7}, frames, sink);
  EXPECT_EQ(requested, (std::vector<int>{3, 5, 7, 0, 1, 2, 4, 6}));
  std::vector<std::pair<int, int>> in_order;
  for (int t = 0; t < T; ++t)
    for (int k = 0; k < 2; ++k) in_order.emplace_back(t, k);
  EXPECT_EQ(delivered, in_order);

  // Every frame a key frame: nothing is tracked.
  requested.clear();
  delivered.clear();
  tracker.track(sam, one, 3, {0, 1, 2}, frames, sink);
  EXPECT_EQ(requested, (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(delivered, (std::vector<std::pair<int, int>>{{0, 0}, {1, 0}, {2, 0}}));
}

TEST(Sam2VideoTracker, RejectsBadArguments) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  const Checkpoint ck = Checkpoint::open(dir);
  const ModelConfig cfg = load_config(dir);
  Weights w(ck, Precision::BF16);
  const Sam2Image sam = Sam2Image::load(w, cfg);
  const VideoTracker tracker = VideoTracker::load(w, cfg);
  w.finish();
  const Tensor lang = Tensor::zeros({1, 256});
  auto never = [](int) -> Tensor { ADD_FAILURE() << "no frame should be read"; return Tensor(); };
  auto sink = [](int, int, const Tensor&) {};
  EXPECT_THROW(tracker.track(sam, lang, 0, {0}, never, sink), Error);
  EXPECT_THROW(tracker.track(sam, lang, 3, {0, 1, 2, 3}, never, sink), Error);
  EXPECT_THROW(tracker.track(sam, lang, 3, {}, never, sink), Error);
  EXPECT_THROW(tracker.track(sam, lang, 3, {-1}, never, sink), Error);
  EXPECT_THROW(tracker.track(sam, lang, 5, {2, 1}, never, sink), Error);
  EXPECT_THROW(tracker.track(sam, lang, 5, {1, 1}, never, sink), Error);
  EXPECT_THROW(tracker.track(sam, Tensor::zeros({1, 64}), 3, {0}, never, sink), Error);
  auto wrong_size = [](int) { return Tensor::zeros({3, 64, 64}); };
  EXPECT_THROW(tracker.track(sam, lang, 3, {0}, wrong_size, sink), Error);
}

}  // namespace
}  // namespace sa2va::sam2
