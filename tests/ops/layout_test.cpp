// Layout, data-movement, generated-table and 8-bit image ops (the loops that moved out of the
// model code): each against a plain reference loop on odd shapes, with 1 and 2 threads, plus a
// bad-shape case per front.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numbers>
#include <utility>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "core/random.h"
#include "ops/ops.h"
#include "ops_test_util.h"

namespace sa2va {
namespace {

using ops_test::random_tensor;
using ops_test::random_vector;

class LayoutOpsTest : public ops_test::ThreadedTest {};

std::vector<uint8_t> random_bytes(int64_t n, uint32_t seed) {
  std::vector<uint8_t> v(static_cast<size_t>(n));
  SplitMix64 rng{seed};
  for (auto& b : v) b = static_cast<uint8_t>(rng.next() & 0xff);
  return v;
}

// ---- transposes and gathers ----------------------------------------------------------------

TEST_P(LayoutOpsTest, Transpose2dRawAndTensor) {
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{37, 53}, {1, 7}, {70, 33}, {64, 1}}) {
    const Tensor x = random_tensor({rows, cols}, 3);
    const float* xp = x.f32();
    std::vector<float> ref(static_cast<size_t>(rows * cols));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) ref[c * rows + r] = xp[r * cols + c];
    std::vector<float> raw(ref.size(), -1.f);
    ops::transpose_2d(xp, rows, cols, raw.data());
    EXPECT_EQ(raw, ref) << rows << "x" << cols;
    const Tensor y = ops::transpose_2d(x);
    EXPECT_EQ(y.shape(), (Shape{cols, rows}));
    EXPECT_EQ(y.to_vector(), ref);
  }
  // A non-contiguous input (a transposed view) is read through its strides.
  const Tensor x = random_tensor({9, 5}, 4);
  EXPECT_EQ(ops::transpose_2d(x.transpose(0, 1)).to_vector(), x.to_vector());
}

TEST_P(LayoutOpsTest, Transpose2dRejectsBadShapes) {
  EXPECT_THROW(ops::transpose_2d(random_tensor({2, 3, 4}, 1)), Error);
  EXPECT_THROW(ops::transpose_2d(Tensor::zeros({2, 3}, DType::BF16)), Error);
  float buf[4];
  EXPECT_THROW(ops::transpose_2d(buf, -1, 4, buf), Error);
  EXPECT_THROW(ops::transpose_2d(nullptr, 2, 2, buf), Error);
}

TEST_P(LayoutOpsTest, Transpose01) {
  for (Shape s : {Shape{5, 7, 3}, Shape{3, 4, 1}, Shape{129, 2, 16}}) {
    const Tensor x = random_tensor(s, 5);
    const int64_t A = s[0], B = s[1], D = s[2];
    const auto xv = x.to_vector();
    std::vector<float> ref(xv.size());
    for (int64_t a = 0; a < A; ++a)
      for (int64_t b = 0; b < B; ++b)
        for (int64_t d = 0; d < D; ++d) ref[(b * A + a) * D + d] = xv[(a * B + b) * D + d];
    const Tensor y = ops::transpose_01(x);
    EXPECT_EQ(y.shape(), (Shape{B, A, D}));
    EXPECT_EQ(y.to_vector(), ref) << shape_str(s);
  }
  EXPECT_THROW(ops::transpose_01(random_tensor({4, 4}, 1)), Error);
}

TEST_P(LayoutOpsTest, GatherRowsF32AndBf16) {
  const Tensor src = random_tensor({11, 7}, 6);
  const std::vector<int64_t> rows = {3, 0, 10, 3, 7};
  const auto sv = src.to_vector();
  std::vector<float> ref;
  for (int64_t r : rows) ref.insert(ref.end(), sv.begin() + r * 7, sv.begin() + (r + 1) * 7);
  const Tensor y = ops::gather_rows(src, rows);
  EXPECT_EQ(y.shape(), (Shape{5, 7}));
  EXPECT_EQ(y.to_vector(), ref);

  const Tensor bf = src.to(DType::BF16);
  const auto bv = bf.to_vector();  // exact f32 values of the bf16 entries
  std::vector<float> bref;
  for (int64_t r : rows) bref.insert(bref.end(), bv.begin() + r * 7, bv.begin() + (r + 1) * 7);
  EXPECT_EQ(ops::gather_rows(bf, rows).to_vector(), bref);
  EXPECT_EQ(ops::gather_rows(src, {}).shape(), (Shape{0, 7}));
}

TEST_P(LayoutOpsTest, GatherRowsRejectsBadIndices) {
  const Tensor src = random_tensor({4, 3}, 1);
  EXPECT_THROW(ops::gather_rows(src, {0, 4}), Error);
  EXPECT_THROW(ops::gather_rows(src, {-1}), Error);
  EXPECT_THROW(ops::gather_rows(random_tensor({2, 2, 2}, 1), {0}), Error);
}

// ---- token maps ----------------------------------------------------------------------------

TEST_P(LayoutOpsTest, MaxPoolTokensStridedRows) {
  const int64_t maps = 3, h = 7, w = 9, c = 5, stride = 8;
  for (int64_t s : {1, 2, 3}) {
    const auto x = random_vector(maps * h * w * stride, 7);
    const int64_t ho = h / s, wo = w / s;
    std::vector<float> ref(static_cast<size_t>(maps * ho * wo * c));
    for (int64_t m = 0; m < maps; ++m)
      for (int64_t oy = 0; oy < ho; ++oy)
        for (int64_t ox = 0; ox < wo; ++ox)
          for (int64_t k = 0; k < c; ++k) {
            float best = -INFINITY;
            for (int64_t dy = 0; dy < s; ++dy)
              for (int64_t dx = 0; dx < s; ++dx)
                best = std::max(best, x[((m * h + oy * s + dy) * w + ox * s + dx) * stride + k]);
            ref[((m * ho + oy) * wo + ox) * c + k] = best;
          }
    std::vector<float> y(ref.size(), 0.f);
    ops::max_pool_tokens(x.data(), stride, maps, h, w, c, s, y.data());
    EXPECT_EQ(y, ref) << "stride " << s;
  }
  float buf[8];
  EXPECT_THROW(ops::max_pool_tokens(buf, 4, 1, 2, 2, 5, 2, buf), Error);  // token stride < channels
  EXPECT_THROW(ops::max_pool_tokens(buf, 4, 1, 2, 2, 4, 0, buf), Error);  // zero pooling stride
}

TEST_P(LayoutOpsTest, WindowPartitionPadsAndUnpartitionCrops) {
  const int64_t h = 7, w = 10, c = 3;
  for (auto [wh, ww] : {std::pair<int64_t, int64_t>{4, 3}, {7, 10}, {1, 1}, {8, 16}}) {
    const auto x = random_vector(h * w * c, 8);
    const int64_t nr = (h + wh - 1) / wh, nc = (w + ww - 1) / ww;
    std::vector<float> ref(static_cast<size_t>(nr * nc * wh * ww * c), 0.f);
    for (int64_t y = 0; y < h; ++y)
      for (int64_t xx = 0; xx < w; ++xx)
        for (int64_t k = 0; k < c; ++k)
          ref[((((y / wh) * nc + xx / ww) * wh + y % wh) * ww + xx % ww) * c + k] = x[(y * w + xx) * c + k];
    std::vector<float> windows(ref.size(), 42.f);
    ops::window_partition(x.data(), h, w, c, wh, ww, windows.data());
    EXPECT_EQ(windows, ref) << wh << "x" << ww;

    std::vector<float> back(x.size(), -1.f);
    ops::window_unpartition(windows.data(), wh, ww, h, w, c, back.data());
    EXPECT_EQ(back, x);

    const auto residual = random_vector(h * w * c, 9);
    std::vector<float> sum(x.size());
    ops::window_unpartition(windows.data(), wh, ww, h, w, c, sum.data(), residual.data());
    for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(sum[i], residual[i] + x[i]);
  }
  float buf[4];
  EXPECT_THROW(ops::window_partition(buf, 2, 2, 1, 0, 2, buf), Error);
  EXPECT_THROW(ops::window_unpartition(buf, 2, -1, 2, 2, 1, buf), Error);
  EXPECT_THROW(ops::window_partition(nullptr, 2, 2, 1, 2, 2, buf), Error);
}

TEST_P(LayoutOpsTest, AddUpsampledNearest2x) {
  const int64_t H = 6, W = 10, C = 5;
  const Tensor x = random_tensor({H, W, C}, 10);
  const Tensor src = random_tensor({H / 2, W / 2, C}, 11);
  const auto xv = x.to_vector(), sv = src.to_vector();
  std::vector<float> ref(xv.size());
  for (int64_t y = 0; y < H; ++y)
    for (int64_t xx = 0; xx < W; ++xx)
      for (int64_t k = 0; k < C; ++k)
        ref[(y * W + xx) * C + k] = xv[(y * W + xx) * C + k] + sv[((y / 2) * (W / 2) + xx / 2) * C + k];
  ops::add_upsampled_nearest_2x(x, src);
  EXPECT_EQ(x.to_vector(), ref);
  EXPECT_THROW(ops::add_upsampled_nearest_2x(x, random_tensor({3, 4, 5}, 1)), Error);
  EXPECT_THROW(ops::add_upsampled_nearest_2x(x, random_tensor({3, 5, 4}, 1)), Error);
  EXPECT_THROW(ops::add_upsampled_nearest_2x(x.view({H * W, C}), src), Error);
}

TEST_P(LayoutOpsTest, AddTiled) {
  const int64_t C = 3, H = 7, W = 9, th = 3, tw = 4;  // the tile does not divide the plane
  const Tensor x = random_tensor({C, H, W}, 12);
  const Tensor tile = random_tensor({C, th, tw}, 13);
  const auto xv = x.to_vector(), tv = tile.to_vector();
  std::vector<float> ref(xv.size());
  for (int64_t c = 0; c < C; ++c)
    for (int64_t y = 0; y < H; ++y)
      for (int64_t xx = 0; xx < W; ++xx)
        ref[(c * H + y) * W + xx] = xv[(c * H + y) * W + xx] + tv[(c * th + y % th) * tw + xx % tw];
  ops::add_tiled(x, tile);
  EXPECT_EQ(x.to_vector(), ref);
  EXPECT_THROW(ops::add_tiled(x, random_tensor({2, th, tw}, 1)), Error);
  EXPECT_THROW(ops::add_tiled(x, random_tensor({th, tw}, 1)), Error);
}

// ---- element-wise --------------------------------------------------------------------------

TEST_P(LayoutOpsTest, ScaleShiftAddScaledRoundBf16) {
  const int64_t n = 40'001;  // several tasks with two threads
  const auto a = random_vector(n, 14, -50.f, 50.f), b = random_vector(n, 15);
  std::vector<float> x = a;
  ops::scale_shift(x.data(), 20.f, -10.f, n);
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(x[i], a[i] * 20.f + -10.f);
  x = a;
  ops::add_scaled(x.data(), b.data(), 0.1f, n);
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(x[i], a[i] + 0.1f * b[i]);
  x = a;
  ops::round_bf16(x.data(), n);
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(x[i], round_to_bf16(a[i]));
  EXPECT_THROW(ops::scale_shift(x.data(), 1.f, 0.f, -1), Error);
  EXPECT_THROW(ops::add_scaled(x.data(), nullptr, 1.f, 4), Error);
  EXPECT_THROW(ops::round_bf16(nullptr, 4), Error);
}

// ---- batched attention ---------------------------------------------------------------------

TEST_P(LayoutOpsTest, AttentionBatchedMatchesOneCallPerProblem) {
  const int64_t count = 5, q_len = 4, kv_len = 9, heads = 2, hd = 4, d = heads * hd, qkv = 3 * d;
  // Hiera's layout: q, k, v interleaved in rows of 3d; q pooled into its own buffer.
  const auto kv = random_vector(count * kv_len * qkv, 16);
  const auto q = random_vector(count * q_len * d, 17);
  ops::AttentionArgs a;
  a.q = q.data(), a.q_stride = d;
  a.k = kv.data() + d, a.k_stride = qkv;
  a.v = kv.data() + 2 * d, a.v_stride = qkv;
  a.q_len = q_len, a.kv_len = kv_len, a.q_heads = a.kv_heads = heads, a.head_dim = hd;
  a.scale = 0.5f;
  a.out_stride = d;
  std::vector<float> ref(static_cast<size_t>(count * q_len * d)), got(ref.size(), -1.f);
  for (int64_t b = 0; b < count; ++b) {
    ops::AttentionArgs one = a;
    one.q = a.q + b * q_len * d;
    one.k = a.k + b * kv_len * qkv;
    one.v = a.v + b * kv_len * qkv;
    one.out = ref.data() + b * q_len * d;
    ops::attention(one);
  }
  a.out = got.data();
  ops::AttentionBatch batch;
  batch.count = count;
  batch.q = q_len * d;
  batch.k = batch.v = kv_len * qkv;
  batch.out = q_len * d;
  ops::attention_batched(a, batch);
  EXPECT_EQ(got, ref);

  batch.out = q_len * d - 1;  // problems would overwrite each other
  EXPECT_THROW(ops::attention_batched(a, batch), Error);
  batch.out = q_len * d;
  batch.count = -1;
  EXPECT_THROW(ops::attention_batched(a, batch), Error);
}

// ---- generated tables ----------------------------------------------------------------------

TEST_P(LayoutOpsTest, PositionEmbeddingSine) {
  const int64_t C = 12, h = 5, w = 7, half = C / 2;
  const Tensor pe = ops::position_embedding_sine(C, h, w);
  ASSERT_EQ(pe.shape(), (Shape{C, h, w}));
  const float* p = pe.f32();
  const float two_pi = static_cast<float>(2 * std::numbers::pi);
  for (int64_t i = 0; i < half; ++i) {
    const float dim_t = powf(10000.f, (2.f * static_cast<float>(i / 2)) / static_cast<float>(half));
    for (int64_t r = 0; r < h; ++r)
      for (int64_t c = 0; c < w; ++c) {
        const float vy = static_cast<float>(r + 1) / (static_cast<float>(h) + 1e-6f) * two_pi / dim_t;
        const float vx = static_cast<float>(c + 1) / (static_cast<float>(w) + 1e-6f) * two_pi / dim_t;
        ASSERT_EQ(p[(i * h + r) * w + c], i % 2 == 0 ? sinf(vy) : cosf(vy));
        ASSERT_EQ(p[((half + i) * h + r) * w + c], i % 2 == 0 ? sinf(vx) : cosf(vx));
      }
  }
  EXPECT_THROW(ops::position_embedding_sine(6, 4, 4), Error);
  EXPECT_THROW(ops::position_embedding_sine(8, -1, 4), Error);
}

TEST_P(LayoutOpsTest, PositionEmbeddingRandom) {
  const int64_t half = 3, n = 5;
  const Tensor g = random_tensor({2, half}, 18);
  const Tensor pe = ops::position_embedding_random(g, n);
  ASSERT_EQ(pe.shape(), (Shape{2 * half, n, n}));
  const float* gp = g.f32();
  const float* p = pe.f32();
  const float two_pi = static_cast<float>(2 * std::numbers::pi);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < n; ++c) {
      const float v = 2.f * ((static_cast<float>(r) + 0.5f) / static_cast<float>(n)) - 1.f;
      const float u = 2.f * ((static_cast<float>(c) + 0.5f) / static_cast<float>(n)) - 1.f;
      for (int64_t k = 0; k < half; ++k) {
        const float a = two_pi * (u * gp[k] + v * gp[half + k]);
        ASSERT_EQ(p[(k * n + r) * n + c], sinf(a));
        ASSERT_EQ(p[((half + k) * n + r) * n + c], cosf(a));
      }
    }
  EXPECT_THROW(ops::position_embedding_random(random_tensor({3, half}, 1), n), Error);
  EXPECT_THROW(ops::position_embedding_random(random_tensor({2 * half}, 1), n), Error);
}

TEST_P(LayoutOpsTest, FillRandomNormalPerChunkStreams) {
  const int64_t n = 3 * 65536 + 17;  // several chunks and a partial one
  const float mean = 1.f, stddev = 0.02f;
  const uint64_t seed = 12345;
  std::vector<float> ref(static_cast<size_t>(n));
  for (int64_t c = 0; c * 65536 < n; ++c) {
    SplitMix64 rng{seed + static_cast<uint64_t>(c) * 0x632be59bd9b4e019ull};
    for (int64_t i = c * 65536; i < std::min(n, (c + 1) * 65536); ++i) ref[i] = mean + stddev * rng.normal();
  }
  Tensor f = Tensor::empty({n});
  ops::fill_random_normal(f, mean, stddev, seed);
  EXPECT_EQ(f.to_vector(), ref);
  Tensor b = Tensor::empty({n}, DType::BF16);
  ops::fill_random_normal(b, mean, stddev, seed);
  const uint16_t* bp = b.bf16();
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(bp[i], f32_to_bf16(ref[i]));
  EXPECT_THROW(ops::fill_random_normal(Tensor::empty({4}, DType::I32), 0.f, 1.f, 1), Error);
  EXPECT_THROW(ops::fill_random_normal(Tensor::empty({4, 3}).transpose(0, 1), 0.f, 1.f, 1), Error);
}

// ---- 8-bit images --------------------------------------------------------------------------

// Hand-made taps: output i reads a window of up to ksize source indices inside [lo, hi).
ops::FixedPointTaps make_taps(int64_t out, int64_t lo, int64_t hi, int ksize, uint32_t seed) {
  ops::FixedPointTaps t;
  t.ksize = ksize;
  t.precision_bits = 22;
  SplitMix64 rng{seed};
  for (int64_t i = 0; i < out; ++i) {
    const int count = 1 + static_cast<int>(rng.next() % std::min<int64_t>(ksize, hi - lo));
    const int first = static_cast<int>(lo + rng.next() % (hi - lo - count + 1));
    t.first.push_back(first);
    t.count.push_back(count);
    for (int k = 0; k < ksize; ++k) {
      // Weights around 1/count with negative lobes, so sums under- and overflow [0, 255].
      const double w = (k < count ? 1.3 / count : 0.0) - (k % 3 == 1 ? 0.2 : 0.0);
      t.weights.push_back(static_cast<int32_t>(w * (1 << 22)));
    }
  }
  return t;
}

uint8_t ref_clip(int64_t acc) { return acc <= 0 ? 0 : acc >= (255ll << 22) ? 255 : static_cast<uint8_t>(acc >> 22); }

TEST_P(LayoutOpsTest, ResampleRgb8Horizontal) {
  const int64_t in_w = 13, rows = 9, out_w = 11;
  const auto src = random_bytes(rows * in_w * 3, 19);
  const ops::FixedPointTaps taps = make_taps(out_w, 0, in_w, 5, 20);
  std::vector<uint8_t> ref(static_cast<size_t>(rows * out_w * 3)), got(ref.size(), 7);
  for (int64_t y = 0; y < rows; ++y)
    for (int64_t x = 0; x < out_w; ++x)
      for (int ch = 0; ch < 3; ++ch) {
        int64_t acc = 1 << 21;
        for (int t = 0; t < taps.count[x]; ++t)
          acc += src[(y * in_w + taps.first[x] + t) * 3 + ch] * static_cast<int64_t>(taps.taps(x)[t]);
        ref[(y * out_w + x) * 3 + ch] = ref_clip(acc);
      }
  ops::resample_rgb8_horizontal(src.data(), in_w, rows, taps, got.data());
  EXPECT_EQ(got, ref);
  EXPECT_THROW(ops::resample_rgb8_horizontal(src.data(), 4, rows, taps, got.data()), Error);  // reads past row end
  ops::FixedPointTaps bad = taps;
  bad.weights.pop_back();
  EXPECT_THROW(ops::resample_rgb8_horizontal(src.data(), in_w, rows, bad, got.data()), Error);
}

TEST_P(LayoutOpsTest, ResampleU8Vertical) {
  const int64_t in_rows = 10, row0 = 3, row_len = 17, out_rows = 13;
  const auto src = random_bytes(in_rows * row_len, 21);
  const ops::FixedPointTaps taps = make_taps(out_rows, row0, row0 + in_rows, 4, 22);
  std::vector<uint8_t> ref(static_cast<size_t>(out_rows * row_len)), got(ref.size(), 7);
  for (int64_t y = 0; y < out_rows; ++y)
    for (int64_t i = 0; i < row_len; ++i) {
      int64_t acc = 1 << 21;
      for (int t = 0; t < taps.count[y]; ++t)
        acc += src[(taps.first[y] - row0 + t) * row_len + i] * static_cast<int64_t>(taps.taps(y)[t]);
      ref[y * row_len + i] = ref_clip(acc);
    }
  ops::resample_u8_vertical(src.data(), in_rows, row_len, row0, taps, got.data());
  EXPECT_EQ(got, ref);
  // The same taps against a buffer that starts one row later: some outputs read before it.
  EXPECT_THROW(ops::resample_u8_vertical(src.data(), in_rows, row_len, row0 + 4, taps, got.data()), Error);
}

TEST_P(LayoutOpsTest, NormalizeRgb8Chw) {
  const int64_t h = 5, w = 7;
  const auto src = random_bytes(h * w * 3, 23);
  const float mean[3] = {0.485f, 0.456f, 0.406f}, stdev[3] = {0.229f, 0.224f, 0.225f};
  std::vector<float> ref(static_cast<size_t>(3 * h * w)), got(ref.size());
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c)
        ref[(c * h + y) * w + x] = (static_cast<float>(src[(y * w + x) * 3 + c]) / 255.f - mean[c]) / stdev[c];
  ops::normalize_rgb8_chw(src.data(), h, w, mean, stdev, got.data());
  EXPECT_EQ(got, ref);
  EXPECT_THROW(ops::normalize_rgb8_chw(src.data(), -1, w, mean, stdev, got.data()), Error);
  EXPECT_THROW(ops::normalize_rgb8_chw(nullptr, h, w, mean, stdev, got.data()), Error);
}

INSTANTIATE_TEST_SUITE_P(Layout, LayoutOpsTest, ::testing::Values(1, 2));

}  // namespace
}  // namespace sa2va
