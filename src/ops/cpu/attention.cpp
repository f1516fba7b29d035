// CPU kernels for scaled dot-product attention. Long queries: per head and block of query rows,
// scores by sgemm, masked stable softmax, then sgemm with V. Short queries (decode): one task per
// (query, head), dot products and axpy over the visible keys. bf16 operands (fast mode, AVX-512
// BF16): a fused flash-style kernel that never holds more than one block of scores per task.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/threadpool.h"
#include "ops/cpu/kernels.h"
#include "ops/cpu/simd.h"

namespace sa2va::ops::cpu {
namespace {

constexpr int64_t kShortQuery = 4;             // up to this many queries use the per-row path
constexpr int64_t kScoreBudget = int64_t{1} << 20;  // floats in one block of scores (4 MiB)

// Adds the mask, applies the causal limit (keys >= visible get probability 0) and normalises.
void softmax_row(float* s, const float* mask_row, int64_t visible, int64_t total) {
  if (mask_row)
    for (int64_t j = 0; j < visible; ++j) s[j] += mask_row[j];
  simd::softmax_inplace(s, visible, total);
}

void attention_short(const AttentionArgs& a, int64_t Dv) {
  const int64_t n_rep = a.q_heads / a.kv_heads;
  parallel_for(a.q_len * a.q_heads, [&](int64_t t0, int64_t t1) {
    thread_local std::vector<float> scores;  // per-thread, kept between calls (a decode step allocates no buffers)
    scores.resize(static_cast<size_t>(a.kv_len));
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t i = t / a.q_heads, h = t % a.q_heads, hk = h / n_rep;
      const int64_t visible = a.causal ? std::clamp<int64_t>(a.q_offset + i + 1, 0, a.kv_len) : a.kv_len;
      const float* q = a.q + i * a.q_stride + h * a.head_dim;
      simd::dot_rows(q, a.k + hk * a.head_dim, a.k_stride, visible, a.head_dim, a.scale, scores.data());
      softmax_row(scores.data(), a.mask ? a.mask + i * a.kv_len : nullptr, visible, visible);
      simd::weighted_sum_rows(scores.data(), a.v + hk * Dv, a.v_stride, visible, Dv,
                              a.out + i * a.out_stride + h * Dv);
    }
  });
}

void attention_blocked(const AttentionArgs& a, int64_t Dv) {
  const int64_t n_rep = a.q_heads / a.kv_heads;
  const int64_t block = std::clamp<int64_t>(kScoreBudget / a.kv_len, 16, 512);
  const Tensor scores_t = Tensor::empty({std::min(block, a.q_len) * a.kv_len});
  float* const scores = scores_t.f32();
  for (int64_t h = 0; h < a.q_heads; ++h) {
    const int64_t hk = h / n_rep;
    for (int64_t i0 = 0; i0 < a.q_len; i0 += block) {
      const int64_t rows = std::min(block, a.q_len - i0);
      // Keys any row of this block may see; rows see a prefix of them when causal.
      const int64_t keys = a.causal ? std::clamp<int64_t>(a.q_offset + i0 + rows, 0, a.kv_len) : a.kv_len;
      float* out = a.out + i0 * a.out_stride + h * Dv;
      if (keys == 0) {
        for (int64_t r = 0; r < rows; ++r) std::fill(out + r * a.out_stride, out + r * a.out_stride + Dv, 0.f);
        continue;
      }
      gemm(a.q + i0 * a.q_stride + h * a.head_dim, a.q_stride, a.k + hk * a.head_dim, a.k_stride, scores,
           keys, rows, keys, a.head_dim, /*transpose_b=*/true, a.scale, 0.f);
      parallel_for(rows, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          const int64_t i = i0 + r;
          const int64_t visible = a.causal ? std::clamp<int64_t>(a.q_offset + i + 1, 0, keys) : keys;
          softmax_row(scores + r * keys, a.mask ? a.mask + i * a.kv_len : nullptr, visible, keys);
        }
      }, 8);
      gemm(scores, keys, a.v + hk * Dv, a.v_stride, out, a.out_stride, rows, Dv, keys, /*transpose_b=*/false, 1.f,
           0.f);
    }
  }
}

// ---- fused bf16 attention ------------------------------------------------------------------
// Keys and values are rounded to bf16 and packed once per call into the panels of the bf16 tile
// kernel; each task takes one head and kQueryBlock query rows and streams over blocks of
// about kKeyBlock keys with an online softmax (running max m, running sum l, output rescaled when m
// grows), so the scores never exceed kQueryBlock x 1.5·kKeyBlock floats.
constexpr int64_t kQueryBlock = simd::kBf16BlockRows;
constexpr int64_t kKeyBlock = 16 * simd::kBf16PanelCols;  // 512 keys: 3-6% faster than 256 at 4k-45k keys
constexpr int64_t kPanel = simd::kBf16PanelCols;

// Small fixed-size buffers per thread (the task scratch of the fused kernel), kept across calls so
// the many small attention calls (Hiera windows) do not allocate. Contents are undefined on
// return: callers write before they read.
template <int Slot>
uint32_t* thread_scratch(size_t words) {
  thread_local std::vector<uint32_t> buffer;
  if (buffer.size() < words) {
    std::vector<uint32_t>().swap(buffer);  // exactly `words`, not the vector's geometric growth
    buffer.resize(words);
  }
  return buffer.data();
}

struct PackedKv {
  int64_t key_pairs_per_panel = 0;  // head_dim pairs in a key panel
  int64_t key_panels = 0;           // per head
  int64_t value_panels = 0;         // Dv panels per key block
  int64_t key_blocks = 0;
  int64_t key_block = 0;            // keys per block (whole panels): near kKeyBlock, or all of a short sequence
  Tensor key_storage, value_storage;  // large ones come from the buffer pool, reused frame after frame
  uint32_t* keys = nullptr;           // every word is written by pack_kv (padding as zeros)
  uint32_t* values = nullptr;
  size_t key_offset(int64_t head, int64_t panel) const {
    return static_cast<size_t>((head * key_panels + panel) * key_pairs_per_panel * kPanel);
  }
  size_t value_offset(int64_t head, int64_t block, int64_t panel) const {
    return static_cast<size_t>(((head * key_blocks + block) * value_panels + panel) * (key_block / 2) * kPanel);
  }
  const uint32_t* key_panel(int64_t head, int64_t panel) const { return keys + key_offset(head, panel); }
  const uint32_t* value_panel(int64_t head, int64_t block, int64_t panel) const {
    return values + value_offset(head, block, panel);
  }
};

// Rows of q, k and v are a whole token apart (often inside one fused qkv row of several KiB), so a
// walk down one head's column of rows touches a new page at every row and outruns the prefetchers.
// Every pack below therefore walks the rows in order, a few at a time, and serves all heads from
// the rows it has just read (they stay in L1/L2 across the heads).
PackedKv pack_kv(const AttentionArgs& a, int64_t Dv) {
  PackedKv p;
  p.key_pairs_per_panel = simd::bf16_tile_pairs((a.head_dim + 1) / 2);
  p.key_panels = (a.kv_len + kPanel - 1) / kPanel;
  p.value_panels = (Dv + kPanel - 1) / kPanel;
  // Blocks of equal length, as near kKeyBlock as whole panels allow: InternViT's 1025 keys go as two
  // blocks of 544, not 512 + 512 + 1, whose last block costs a whole pass of per-row softmax work
  // and a rescale of the output for one key. A short sequence (a Hiera window: 16-256 keys) is one
  // block of its own length, not a 512-key block mostly of padding.
  constexpr int64_t kBlockPanels = kKeyBlock / kPanel;
  const int64_t blocks = std::max<int64_t>(1, (p.key_panels + kBlockPanels / 2) / kBlockPanels);
  p.key_block = (p.key_panels + blocks - 1) / blocks * kPanel;
  p.key_blocks = (a.kv_len + p.key_block - 1) / p.key_block;
  p.key_storage = Tensor::empty({a.kv_heads * p.key_panels * p.key_pairs_per_panel * kPanel}, DType::I32);
  p.value_storage = Tensor::empty({a.kv_heads * p.key_blocks * p.value_panels * (p.key_block / 2) * kPanel}, DType::I32);
  p.keys = reinterpret_cast<uint32_t*>(p.key_storage.data<int32_t>());
  p.values = reinterpret_cast<uint32_t*>(p.value_storage.data<int32_t>());
  // Keys: a panel of 32 key rows, every head of it.
  parallel_for(p.key_panels * a.kv_heads, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t panel = t / a.kv_heads, h = t % a.kv_heads, j0 = panel * kPanel;
      simd::pack_bf16_panel(a.k + j0 * a.k_stride + h * a.head_dim, a.k_stride, 1,
                            std::min(kPanel, a.kv_len - j0), a.head_dim, p.key_pairs_per_panel,
                            p.keys + p.key_offset(h, panel));
    }
  }, 8);
  // Values: kValueRows rows (padding rows of the last block as zeros), every head and panel of them.
  constexpr int64_t kValueRows = 32;
  const int64_t chunks_per_block = p.key_block / kValueRows, columns = a.kv_heads * p.value_panels;
  parallel_for(p.key_blocks * chunks_per_block * columns, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t chunk = t / columns, column = t % columns, h = column / p.value_panels;
      const int64_t panel = column % p.value_panels, block = chunk / chunks_per_block;
      const int64_t row0 = (chunk % chunks_per_block) * kValueRows, j0 = block * p.key_block + row0, d0 = panel * kPanel;
      simd::pack_bf16_panel(a.v + std::min(j0, a.kv_len - 1) * a.v_stride + h * Dv + d0, 1, a.v_stride,
                            std::min(kPanel, Dv - d0), std::clamp<int64_t>(a.kv_len - j0, 0, kValueRows),
                            kValueRows / 2, p.values + p.value_offset(h, block, panel) + row0 / 2 * kPanel);
    }
  }, 4 * columns);
  return p;
}

// The queries rounded to bf16, head-major: row i of head h at (h·q_len + i)·q_pairs pairs (zeros
// past the head size up to q_pairs), and 16 rows of zeros after the last (AMX loads 16 rows).
Tensor round_queries(const AttentionArgs& a, int64_t q_pairs) {
  const int64_t rows = a.q_heads * a.q_len;
  Tensor rounded = Tensor::empty({(rows + 16) * q_pairs}, DType::I32);
  uint16_t* out = reinterpret_cast<uint16_t*>(rounded.data<int32_t>());
  std::fill(out + 2 * rows * q_pairs, out + 2 * (rows + 16) * q_pairs, uint16_t{0});
  parallel_for(a.q_len, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i)
      for (int64_t h = 0; h < a.q_heads; ++h)
        simd::round_to_bf16(a.q + i * a.q_stride + h * a.head_dim, a.head_dim, 2 * q_pairs,
                            out + 2 * (h * a.q_len + i) * q_pairs);
  }, 16);
  return rounded;
}

void attention_bf16_fused(const AttentionArgs& a, int64_t Dv) {
  const PackedKv kv = pack_kv(a, Dv);
  const int64_t n_rep = a.q_heads / a.kv_heads, q_pairs = kv.key_pairs_per_panel;
  const Tensor queries_t = round_queries(a, q_pairs);
  const uint32_t* const queries = reinterpret_cast<const uint32_t*>(queries_t.data<int32_t>());
  const int64_t q_blocks = (a.q_len + kQueryBlock - 1) / kQueryBlock, key_block = kv.key_block;
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  parallel_for(a.q_heads * q_blocks, [&](int64_t t0, int64_t t1) {
    // Task buffers, one set per thread: scores, bf16 probabilities, the output accumulator and the
    // running max and sum of each row.
    float* const scores = reinterpret_cast<float*>(thread_scratch<0>(static_cast<size_t>(kQueryBlock * key_block)));
    uint32_t* const probs = thread_scratch<1>(static_cast<size_t>(kQueryBlock * key_block / 2));
    float* const acc = reinterpret_cast<float*>(thread_scratch<2>(static_cast<size_t>(kQueryBlock * (Dv + 2))));
    float* const row_max = acc + kQueryBlock * Dv;
    float* const row_sum = row_max + kQueryBlock;
    const simd::Bf16TileScope tiles;  // AMX, where the CPU has it
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t h = t / q_blocks, hk = h / n_rep;
      // Causal blocks grow with the block index: alternate ends so contiguous chunks balance.
      const int64_t nth = t % q_blocks, block = nth % 2 == 0 ? nth / 2 : q_blocks - 1 - nth / 2;
      const int64_t i0 = block * kQueryBlock, rows = std::min(kQueryBlock, a.q_len - i0);
      const uint32_t* const q_packed = queries + (h * a.q_len + i0) * q_pairs;
      std::fill(acc, acc + kQueryBlock * Dv, 0.f);
      std::fill(row_max, row_max + kQueryBlock, kNegInf);
      std::fill(row_sum, row_sum + kQueryBlock, 0.f);
      auto visible_keys = [&](int64_t i) {
        return a.causal ? std::clamp<int64_t>(a.q_offset + i + 1, 0, a.kv_len) : a.kv_len;
      };
      const int64_t keys = visible_keys(i0 + rows - 1);  // the most any row of the block sees
      for (int64_t kb = 0; kb * key_block < keys; ++kb) {
        const int64_t j0 = kb * key_block, block_keys = std::min(key_block, keys - j0);
        const int64_t block_panels = (block_keys + kPanel - 1) / kPanel;
        for (int64_t p = 0; p < block_panels; ++p)
          simd::bf16_tile(rows, q_packed, q_pairs, kv.key_panel(hk, kb * (key_block / kPanel) + p), q_pairs,
                          scores + p * kPanel, key_block, std::min(kPanel, block_keys - p * kPanel), false);
        for (int64_t r = 0; r < rows; ++r) {
          float* s = scores + r * key_block;
          uint16_t* prob_row = reinterpret_cast<uint16_t*>(probs + r * (key_block / 2));
          const int64_t n = std::clamp<int64_t>(visible_keys(i0 + r) - j0, 0, block_keys);
          const float* mask = a.mask ? a.mask + (i0 + r) * a.kv_len + j0 : nullptr;
          // Without a mask the scale is applied inside the exponential (max(scale·s) = scale·max(s)
          // for scale > 0): the scores are only read, not rewritten, before it.
          const bool scale_in_exp = !mask && a.scale > 0.f;
          const float block_max = scale_in_exp ? a.scale * simd::max_value(s, n)
                                               : simd::scale_mask_max(s, n, a.scale, mask);
          const float new_max = std::max(row_max[r], block_max);
          if (new_max == kNegInf) {  // nothing visible yet: contributes nothing
            std::fill(prob_row, prob_row + key_block, uint16_t{0});
            continue;
          }
          const float correction = std::exp(row_max[r] - new_max);
          row_sum[r] = row_sum[r] * correction +
                       simd::exp_to_bf16(s, n, scale_in_exp ? a.scale : 1.f, new_max, key_block, prob_row);
          // A row that has seen no key yet has nothing in acc to rescale (its first block: every
          // row of a short sequence, whose one block made this rescale of zeros 5% of its time).
          if (correction != 1.f && row_max[r] != kNegInf) simd::scale(correction, acc + r * Dv, acc + r * Dv, Dv);
          row_max[r] = new_max;
        }
        const int64_t pairs = simd::bf16_tile_pairs((block_keys + 1) / 2);  // zeros beyond the keys
        for (int64_t p = 0; p < kv.value_panels; ++p)
          simd::bf16_tile(rows, probs, key_block / 2, kv.value_panel(hk, kb, p), pairs, acc + p * kPanel, Dv,
                          std::min(kPanel, Dv - p * kPanel), true);
      }
      for (int64_t r = 0; r < rows; ++r) {
        float* out = a.out + (i0 + r) * a.out_stride + h * Dv;
        simd::scale(row_sum[r] > 0.f ? 1.f / row_sum[r] : 0.f, acc + r * Dv, out, Dv);
      }
    }
  });
}

// ---- fused f32 attention (AVX2) -------------------------------------------------------------
// The same online softmax over key blocks as the bf16 kernel, in f32 with FMA tiles. Keys are taken
// kF32ChunkKeys at a time: a chunk is packed once (keys in panels of 8, key-minor; values copied
// per head into contiguous rows, because in place a head's rows lie a whole token row apart, often
// a multiple of 1-4 KiB, and a tile's column of loads would fall in a few cache sets), then every
// task (one head, kF32QueryBlock query rows) runs its rows over the chunk's blocks of kF32KeyBlock
// keys, accumulating in the output rows; the running max and sum of each row carry over chunks.
// Memory: one packed chunk and a block of scores per thread, whatever the number of keys.
constexpr int64_t kF32QueryBlock = 8 * simd::kF32TileRows;
constexpr int64_t kF32KeyBlock = 128;
constexpr int64_t kF32ChunkKeys = 64 * kF32KeyBlock;

bool fused_f32_applies(const AttentionArgs& a, int64_t Dv) {
  return simd::isa() == simd::Isa::Avx2 && Dv % 8 == 0 && a.head_dim <= 1024;
}

void attention_f32_fused(const AttentionArgs& a, int64_t Dv) {
  constexpr int64_t kLanes = simd::kF32PanelKeys;
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const int64_t d = a.head_dim, n_rep = a.q_heads / a.kv_heads;
  const int64_t chunk = std::min(kF32ChunkKeys, a.kv_len);
  const int64_t chunk_panels = (chunk + 2 * kLanes - 1) / (2 * kLanes) * 2;  // even: tiles take two
  const Tensor keys_t = Tensor::empty({a.kv_heads * chunk_panels * d * kLanes});
  const Tensor values_t = Tensor::empty({a.kv_heads * chunk * Dv});
  const Tensor stats_t = Tensor::empty({2 * a.q_heads * a.q_len});
  float* const packed_keys = keys_t.f32();
  float* const packed_values = values_t.f32();
  float* const row_max = stats_t.f32();                  // [head, query]
  float* const row_sum = row_max + a.q_heads * a.q_len;  // [head, query]
  const int64_t q_blocks = (a.q_len + kF32QueryBlock - 1) / kF32QueryBlock;
  auto visible_keys = [&](int64_t i) {
    return a.causal ? std::clamp<int64_t>(a.q_offset + i + 1, 0, a.kv_len) : a.kv_len;
  };

  for (int64_t c0 = 0; c0 < a.kv_len; c0 += chunk) {
    const int64_t chunk_keys = std::min(chunk, a.kv_len - c0);
    parallel_for(a.kv_heads * chunk_panels, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t hk = t / chunk_panels, j0 = (t % chunk_panels) * kLanes;
        const int64_t real = std::clamp<int64_t>(chunk_keys - j0, 0, kLanes);  // keys in this panel
        simd::pack_f32_key_panel(real > 0 ? a.k + (c0 + j0) * a.k_stride + hk * d : nullptr, a.k_stride, real, d,
                                 packed_keys + t * d * kLanes);
        for (int64_t l = 0; l < real; ++l) {
          const float* value = a.v + (c0 + j0 + l) * a.v_stride + hk * Dv;
          std::copy(value, value + Dv, packed_values + (hk * chunk + j0 + l) * Dv);
        }
      }
    }, 16);
    parallel_for(a.q_heads * q_blocks, [&](int64_t t0, int64_t t1) {
      thread_local std::vector<float> scratch;  // the scores of one block
      if (scratch.size() < static_cast<size_t>(kF32QueryBlock * kF32KeyBlock))
        scratch.resize(static_cast<size_t>(kF32QueryBlock * kF32KeyBlock));
      float* const scores = scratch.data();
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t h = t / q_blocks, hk = h / n_rep;
        // Causal blocks grow with the block index: alternate ends so contiguous chunks balance.
        const int64_t nth = t % q_blocks, block = nth % 2 == 0 ? nth / 2 : q_blocks - 1 - nth / 2;
        const int64_t i0 = block * kF32QueryBlock, rows = std::min(kF32QueryBlock, a.q_len - i0);
        const float* const q = a.q + i0 * a.q_stride + h * d;
        float* const out = a.out + i0 * a.out_stride + h * Dv;
        float* const m = row_max + h * a.q_len + i0;
        float* const l = row_sum + h * a.q_len + i0;
        if (c0 == 0) {
          for (int64_t r = 0; r < rows; ++r) std::fill(out + r * a.out_stride, out + r * a.out_stride + Dv, 0.f);
          std::fill(m, m + rows, kNegInf);
          std::fill(l, l + rows, 0.f);
        }
        const int64_t keys = std::min(visible_keys(i0 + rows - 1), c0 + chunk_keys);  // the most any row sees
        const float* const head_keys = packed_keys + hk * chunk_panels * d * kLanes;
        const float* const head_values = packed_values + hk * chunk * Dv;
        for (int64_t j0 = c0; j0 < keys; j0 += kF32KeyBlock) {
          const int64_t block_keys = std::min(kF32KeyBlock, keys - j0), p0 = (j0 - c0) / kLanes;
          for (int64_t r0 = 0; r0 < rows; r0 += simd::kF32TileRows)
            for (int64_t j = 0; j < block_keys; j += 2 * kLanes)
              simd::f32_scores_tile(q + r0 * a.q_stride, a.q_stride, std::min(simd::kF32TileRows, rows - r0),
                                    head_keys + (p0 + j / kLanes) * d * kLanes, d, block_keys - j > kLanes ? 2 : 1,
                                    scores + r0 * kF32KeyBlock + j, kF32KeyBlock);
          for (int64_t r = 0; r < rows; ++r) {
            float* s = scores + r * kF32KeyBlock;
            const int64_t n = std::clamp<int64_t>(visible_keys(i0 + r) - j0, 0, block_keys);
            const float* mask = a.mask ? a.mask + (i0 + r) * a.kv_len + j0 : nullptr;
            // Without a mask the scale goes inside the exponential, as in the bf16 kernel: one pass
            // that only reads the scores before it.
            const bool scale_in_exp = !mask && a.scale > 0.f;
            const float new_max = std::max(m[r], scale_in_exp ? a.scale * simd::max_value(s, n)
                                                              : simd::scale_mask_max(s, n, a.scale, mask));
            if (new_max == kNegInf) {  // nothing visible yet: contributes nothing
              std::fill(s, s + block_keys, 0.f);
              continue;
            }
            // The max seldom grows after the first blocks: no exponential then. Before anything was
            // visible (l = 0) the output row is still zeros and needs no rescale.
            const float correction = new_max == m[r] ? 1.f : std::exp(m[r] - new_max);
            if (correction != 1.f && l[r] > 0.f)
              simd::scale(correction, out + r * a.out_stride, out + r * a.out_stride, Dv);
            l[r] = l[r] * correction + simd::exp_shifted_sum(s, n, scale_in_exp ? a.scale : 1.f, new_max);
            std::fill(s + n, s + block_keys, 0.f);
            m[r] = new_max;
          }
          for (int64_t r0 = 0; r0 < rows; r0 += simd::kF32TileRows)
            for (int64_t c = 0; c < Dv; c += 16)
              simd::f32_values_tile(scores + r0 * kF32KeyBlock, kF32KeyBlock, std::min(simd::kF32TileRows, rows - r0),
                                    head_values + (j0 - c0) * Dv + c, Dv, block_keys, out + r0 * a.out_stride + c,
                                    a.out_stride, std::min<int64_t>(16, Dv - c));
        }
        if (c0 + chunk_keys >= a.kv_len) {  // the last chunk: normalise
          for (int64_t r = 0; r < rows; ++r) {
            float* row = out + r * a.out_stride;
            simd::scale(l[r] > 0.f ? 1.f / l[r] : 0.f, row, row, Dv);
          }
        }
      }
    });
  }
}

}  // namespace

void attention(const AttentionArgs& a) {
  const int64_t Dv = a.v_head_dim > 0 ? a.v_head_dim : a.head_dim;
  if (a.q_len == 0) return;
  if (a.q_len <= kShortQuery || a.kv_len == 0) {
    attention_short(a, Dv);
  } else if (a.bf16_operands && simd::isa() == simd::Isa::Avx512) {
    attention_bf16_fused(a, Dv);
  } else if (fused_f32_applies(a, Dv)) {
    attention_f32_fused(a, Dv);
  } else {
    attention_blocked(a, Dv);
  }
}

}  // namespace sa2va::ops::cpu
