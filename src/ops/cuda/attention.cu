// CUDA attention, three paths with the semantics of ops::attention (ops/ops.h): causal limit
// q_offset + i, additive mask row i of [q_len, kv_len], GQA head h reads kv head h / (q_heads /
// kv_heads); a row that sees no finite score is zero.
//
// bf16_operands (the bf16 mode), 16 query rows or more: a flash-attention kernel on the tensor
// cores. A block of 4 warps takes 64 query rows of one head (16 per warp) and up to 128 output
// dimensions; keys come 64 at a time into shared memory, rounded to bf16 as the CPU rounds them. Each
// warp computes its 16x64 scores with mma.sync m16n8k16 (bf16 in, f32 accumulation), keeps the
// running max and sum of its rows in registers (online softmax in f32), rounds the probabilities to
// bf16 straight from the score fragments into the operand of the second product, and accumulates P·V
// in f32 registers. The score matrix never exists in memory. Head dimensions are padded with zeros
// to a multiple of 16.
//
// Up to 8 query rows (decode steps), either mode: the keys are split in blocks of 256 over the GPU
// (flash-decoding); each block scores its keys (one per lane), keeps an online softmax and its share
// of the output, and a second kernel merges the splits by their maxima and sums. In bf16 mode the
// operands and probabilities are rounded as the CPU rounds them; the arithmetic is f32.
//
// Otherwise (f32 mode with more rows, head dimensions above 256, batched problems, and in bf16 mode
// 9-15 rows or at most 64 keys, where neither kernel above fits: in f32, unrounded): one block of
// kBlock threads per (query row, head, problem). Keys are taken kBlock at a time, one score per
// thread; an online softmax carries over the chunks, and each thread accumulates its share of the
// output dimensions.
#include "ops/cuda/common.cuh"
#include "ops/cuda/kernels.h"

namespace sa2va::ops::cuda {
namespace {

constexpr int kBlock = 128;
constexpr int kMaxHeadDim = 512;  // up to kMaxHeadDim / kBlock output values per thread

struct Problem {
  AttentionArgs a;
  int64_t dv = 0;
  AttentionBatch batch;
};

__global__ void attention_kernel(Problem p) {
  __shared__ float q_row[kMaxHeadDim];
  __shared__ float probs[kBlock];
  __shared__ float shared[32];
  const AttentionArgs& a = p.a;
  const int64_t i = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int64_t kvh = h / (a.q_heads / a.kv_heads), D = a.head_dim, Dv = p.dv;
  const float* q = a.q + b * p.batch.q + i * a.q_stride + h * D;
  const float* k = a.k + b * p.batch.k + kvh * D;
  const float* v = a.v + b * p.batch.v + kvh * Dv;
  float* out = a.out + b * p.batch.out + i * a.out_stride + h * Dv;
  const float* mask = a.mask ? a.mask + i * a.kv_len : nullptr;
  const int t = threadIdx.x;

  for (int64_t d = t; d < D; d += kBlock) q_row[d] = q[d];
  __syncthreads();
  const int64_t visible = a.causal && a.q_offset + i + 1 < a.kv_len ? a.q_offset + i + 1 : a.kv_len;

  constexpr int kPer = kMaxHeadDim / kBlock;
  float acc[kPer];
#pragma unroll
  for (int r = 0; r < kPer; ++r) acc[r] = 0.f;
  float running_max = -INFINITY, running_sum = 0.f;

  for (int64_t j0 = 0; j0 < visible; j0 += kBlock) {
    const int64_t j = j0 + t;
    float s = -INFINITY;
    if (j < visible) {
      const float* kj = k + j * a.k_stride;
      float dot = 0.f;
      for (int64_t d = 0; d < D; ++d) dot += q_row[d] * kj[d];
      s = dot * a.scale;
      if (mask) s += mask[j];
    }
    const float chunk_max = block_reduce<true>(s, shared);
    const float new_max = fmaxf(running_max, chunk_max);
    if (new_max == -INFINITY) continue;  // nothing finite yet (uniform across the block)
    const float prob = s == -INFINITY ? 0.f : expf(s - new_max);
    const float correction = running_max == -INFINITY ? 0.f : expf(running_max - new_max);
    probs[t] = prob;
    running_sum = running_sum * correction + block_reduce<false>(prob, shared);  // also orders probs[] writes
    running_max = new_max;
    const int64_t n = visible - j0 < kBlock ? visible - j0 : kBlock;
#pragma unroll
    for (int r = 0; r < kPer; ++r) {
      const int64_t d = t + r * kBlock;
      if (d >= Dv) break;
      float o = acc[r] * correction;
      for (int64_t u = 0; u < n; ++u) o += probs[u] * v[(j0 + u) * a.v_stride + d];
      acc[r] = o;
    }
    __syncthreads();  // probs[] is rewritten by the next chunk
  }
  const float inv = running_sum > 0.f ? 1.f / running_sum : 0.f;
#pragma unroll
  for (int r = 0; r < kPer; ++r) {
    const int64_t d = t + r * kBlock;
    if (d < Dv) out[d] = acc[r] * inv;
  }
}

// ---- a few query rows: split over the keys (decode steps) -----------------------------------------

constexpr int kSplitKeys = 256;     // keys per block
constexpr int kSplitThreads = 128;  // 4 warps of 64 keys each
constexpr int kSplitMaxDim = 256;
constexpr int kSplitMaxRows = 8;    // query rows that take this path

// One block per (key split, head, query row): each warp scores its keys one per lane, carries an
// online softmax over them and accumulates the output with lanes over dimensions; the block's warps
// are merged, and the split writes its running max, sum and unnormalised output [Dv] to `partial`.
__global__ void __launch_bounds__(kSplitThreads) split_attention_kernel(Problem p, int splits, float* partial) {
  __shared__ float q_row[kSplitMaxDim];
  __shared__ float warp_max_sum[kSplitThreads / 32][2];
  __shared__ float warp_out[kSplitThreads / 32][kSplitMaxDim];
  const AttentionArgs& a = p.a;
  const int64_t s = blockIdx.x, h = blockIdx.y, i = blockIdx.z;
  const int64_t kvh = h / (a.q_heads / a.kv_heads), D = a.head_dim, Dv = p.dv;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const bool bf16 = a.bf16_operands;
  auto operand = [bf16](float f) { return bf16 ? bf16_bits_to_f32(f32_to_bf16_bits(f)) : f; };
  for (int64_t d = threadIdx.x; d < D; d += kSplitThreads) q_row[d] = operand(a.q[i * a.q_stride + h * D + d]);
  __syncthreads();
  const int64_t visible = a.causal && a.q_offset + i + 1 < a.kv_len ? a.q_offset + i + 1 : a.kv_len;
  const int64_t begin = s * kSplitKeys + warp * (kSplitKeys / 4);
  const int64_t end = begin + kSplitKeys / 4 < visible ? begin + kSplitKeys / 4 : visible;
  const float* k = a.k + kvh * D;
  const float* v = a.v + kvh * Dv;
  float acc[kSplitMaxDim / 32];
#pragma unroll
  for (int r = 0; r < kSplitMaxDim / 32; ++r) acc[r] = 0.f;
  float running_max = -INFINITY, running_sum = 0.f;
  for (int64_t j0 = begin; j0 < end; j0 += 32) {
    const int64_t j = j0 + lane;
    float score = -INFINITY;
    if (j < end) {
      const float* kj = k + j * a.k_stride;
      float dot = 0.f;
      for (int64_t d = 0; d < D; ++d) dot += q_row[d] * operand(kj[d]);
      score = dot * a.scale + (a.mask ? a.mask[i * a.kv_len + j] : 0.f);
    }
    const float new_max = fmaxf(running_max, warp_max(score));
    if (new_max == -INFINITY) continue;  // nothing finite yet (the same for the whole warp)
    const float prob = score == -INFINITY ? 0.f : expf(score - new_max);
    const float correction = running_max == -INFINITY ? 0.f : expf(running_max - new_max);
    running_sum = running_sum * correction + warp_sum(prob);
    running_max = new_max;
    const float weight = operand(prob);
    const int64_t n = end - j0 < 32 ? end - j0 : 32;
#pragma unroll
    for (int r = 0; r < kSplitMaxDim / 32; ++r) acc[r] *= correction;
    for (int u = 0; u < n; ++u) {
      const float w = __shfl_sync(0xffffffffu, weight, u);  // every lane takes part: no lane has left
      const float* vu = v + (j0 + u) * a.v_stride;
#pragma unroll
      for (int r = 0; r < kSplitMaxDim / 32; ++r)
        if (lane + 32 * r < Dv) acc[r] += w * operand(vu[lane + 32 * r]);
    }
  }
  if (lane == 0) {
    warp_max_sum[warp][0] = running_max;
    warp_max_sum[warp][1] = running_sum;
  }
#pragma unroll
  for (int r = 0; r < kSplitMaxDim / 32; ++r)
    if (lane + 32 * r < Dv) warp_out[warp][lane + 32 * r] = acc[r];
  __syncthreads();
  float block_max = -INFINITY;
  for (int w = 0; w < kSplitThreads / 32; ++w) block_max = fmaxf(block_max, warp_max_sum[w][0]);
  float* out = partial + ((i * a.q_heads + h) * splits + s) * (Dv + 2);
  float factor[kSplitThreads / 32];
  float block_sum = 0.f;
  for (int w = 0; w < kSplitThreads / 32; ++w) {
    factor[w] = warp_max_sum[w][0] == -INFINITY ? 0.f : expf(warp_max_sum[w][0] - block_max);
    block_sum += warp_max_sum[w][1] * factor[w];
  }
  if (threadIdx.x == 0) {
    out[0] = block_max;
    out[1] = block_sum;
  }
  for (int64_t d = threadIdx.x; d < Dv; d += kSplitThreads) {
    float o = 0.f;
    for (int w = 0; w < kSplitThreads / 32; ++w) o += warp_out[w][d] * factor[w];
    out[2 + d] = o;
  }
}

// The splits of each (query row, head) merged: out = Σ o_s·e^(m_s − m) / Σ l_s·e^(m_s − m).
__global__ void merge_splits_kernel(Problem p, int splits, const float* partial) {
  const AttentionArgs& a = p.a;
  const int64_t h = blockIdx.x, i = blockIdx.y, Dv = p.dv;
  const float* part = partial + (i * a.q_heads + h) * splits * (Dv + 2);
  float m = -INFINITY;
  for (int s = 0; s < splits; ++s) m = fmaxf(m, part[s * (Dv + 2)]);
  float sum = 0.f;
  for (int s = 0; s < splits; ++s) {
    const float ms = part[s * (Dv + 2)];
    if (ms != -INFINITY) sum += part[s * (Dv + 2) + 1] * expf(ms - m);
  }
  const float inv = sum > 0.f ? 1.f / sum : 0.f;
  float* out = a.out + i * a.out_stride + h * Dv;
  for (int64_t d = threadIdx.x; d < Dv; d += blockDim.x) {
    float o = 0.f;
    for (int s = 0; s < splits; ++s) {
      const float ms = part[s * (Dv + 2)];
      if (ms != -INFINITY) o += part[s * (Dv + 2) + 2 + d] * expf(ms - m);
    }
    out[d] = o * inv;
  }
}

bool split_eligible(const AttentionArgs& args, int64_t dv, const AttentionBatch& batch) {
  return batch.count == 1 && args.q_len <= kSplitMaxRows && args.head_dim <= kSplitMaxDim && dv <= kSplitMaxDim &&
         args.kv_len > kSplitKeys / 4;
}

void launch_split(const Problem& p) {
  const int splits = static_cast<int>((p.a.kv_len + kSplitKeys - 1) / kSplitKeys);
  check(p.a.q_heads <= 65535, "attention: too many heads for one CUDA launch");
  const size_t bytes = sizeof(float) * static_cast<size_t>(p.a.q_len * p.a.q_heads * splits * (p.dv + 2));
  auto* partial = static_cast<float*>(sa2va::cuda::scratch(bytes, 2));
  split_attention_kernel<<<dim3(static_cast<unsigned>(splits), static_cast<unsigned>(p.a.q_heads),
                               static_cast<unsigned>(p.a.q_len)),
                           kSplitThreads, 0, stream()>>>(p, splits, partial);
  sa2va::cuda::check_launch("attention (key splits)");
  merge_splits_kernel<<<dim3(static_cast<unsigned>(p.a.q_heads), static_cast<unsigned>(p.a.q_len)), 128, 0,
                        stream()>>>(p, splits, partial);
  sa2va::cuda::check_launch("attention (merging key splits)");
}

// ---- bf16 operands: flash attention on the tensor cores ----------------------------------------

constexpr int kFlashRows = 64;      // query rows per block, 16 per warp
constexpr int kFlashKeys = 64;      // keys per shared-memory tile
constexpr int kFlashThreads = 128;  // 4 warps
constexpr int kFlashDvChunk = 128;  // output dimensions per block (16 accumulator tiles of 8)
constexpr int kFlashMaxDim = 256;   // head dimension of q and k

struct FlashProblem {
  AttentionArgs a;
  int64_t dv = 0;
  AttentionBatch batch;
  int padded_dim = 0;  // head_dim rounded up to 16
  int dv_chunks = 0;
};

// Bytes of shared memory: the query and key tiles [rows][padded_dim + 8] and the value tile
// transposed [kFlashDvChunk][kFlashKeys + 8], bf16. The 8-element pad spreads the rows over the banks.
size_t flash_shared_bytes(int padded_dim) {
  return sizeof(uint16_t) * (static_cast<size_t>(kFlashRows + kFlashKeys) * (padded_dim + 8) +
                             static_cast<size_t>(kFlashDvChunk) * (kFlashKeys + 8));
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  return static_cast<uint32_t>(f32_to_bf16_bits(lo)) | (static_cast<uint32_t>(f32_to_bf16_bits(hi)) << 16);
}
__device__ __forceinline__ uint32_t load_pair(const uint16_t* p) { return *reinterpret_cast<const uint32_t*>(p); }

// c[16x8] += a[16x16] · b[16x8]; fragments as the PTX ISA lays them out for m16n8k16 (g = lane / 4,
// t = lane % 4): a = {(g, 2t..2t+1), (g+8, 2t..), (g, 2t+8..), (g+8, 2t+8..)}, b = {(2t..2t+1, g),
// (2t+8.., g)}, c = {(g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1)}; pairs packed low element first.
__device__ __forceinline__ void mma_bf16_16x8x16(float c[4], const uint32_t a[4], const uint32_t b[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

__global__ void __launch_bounds__(kFlashThreads) flash_attention_kernel(FlashProblem p) {
  extern __shared__ __align__(16) uint16_t flash_shared[];
  const AttentionArgs& a = p.a;
  const int dp = p.padded_dim, qk_row = dp + 8, vt_row = kFlashKeys + 8;
  uint16_t* sq = flash_shared;                  // [kFlashRows][qk_row]
  uint16_t* sk = sq + kFlashRows * qk_row;      // [kFlashKeys][qk_row]
  uint16_t* svt = sk + kFlashKeys * qk_row;     // [kFlashDvChunk][vt_row]: values transposed
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kFlashRows;
  const int64_t h = blockIdx.y / p.dv_chunks, b = blockIdx.z;
  const int64_t dv0 = static_cast<int64_t>(blockIdx.y % p.dv_chunks) * kFlashDvChunk;
  const int64_t kvh = h / (a.q_heads / a.kv_heads), D = a.head_dim;
  const int dvn = static_cast<int>(p.dv - dv0 < kFlashDvChunk ? p.dv - dv0 : kFlashDvChunk);
  const float* q = a.q + b * p.batch.q + h * D;
  const float* k = a.k + b * p.batch.k + kvh * D;
  const float* v = a.v + b * p.batch.v + kvh * p.dv + dv0;
  float* out = a.out + b * p.batch.out + h * p.dv + dv0;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;

  for (int r = warp; r < kFlashRows; r += kFlashThreads / 32)
    for (int d = lane; d < dp; d += 32) {
      const bool inside = row0 + r < a.q_len && d < D;
      sq[r * qk_row + d] = f32_to_bf16_bits(inside ? q[(row0 + r) * a.q_stride + d] : 0.f);
    }
  // Keys past the block's last visible one are never loaded.
  const int64_t last_row = (row0 + kFlashRows < a.q_len ? row0 + kFlashRows : a.q_len) - 1;
  const int64_t kv_end = a.causal && a.q_offset + last_row + 1 < a.kv_len ? a.q_offset + last_row + 1 : a.kv_len;
  const int64_t rows[2] = {row0 + warp * 16 + g, row0 + warp * 16 + g + 8};  // this thread's two query rows

  float o[kFlashDvChunk / 8][4];
#pragma unroll
  for (int n = 0; n < kFlashDvChunk / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.f, 0.f};

  for (int64_t j0 = 0; j0 < kv_end; j0 += kFlashKeys) {
    __syncthreads();  // the previous tiles are consumed (and, the first time, the query tile is written)
    for (int r = warp; r < kFlashKeys; r += kFlashThreads / 32) {
      const bool key = j0 + r < kv_end;
      for (int d = lane; d < dp; d += 32)
        sk[r * qk_row + d] = f32_to_bf16_bits(key && d < D ? k[(j0 + r) * a.k_stride + d] : 0.f);
      for (int d = lane; d < dvn; d += 32) svt[d * vt_row + r] = f32_to_bf16_bits(key ? v[(j0 + r) * a.v_stride + d] : 0.f);
    }
    __syncthreads();

    // Scores of the warp's 16 rows against the tile's 64 keys: 8 tiles of 16x8.
    float s[kFlashKeys / 8][4];
#pragma unroll
    for (int n = 0; n < kFlashKeys / 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
    const uint16_t* q_frag = sq + (warp * 16 + g) * qk_row + 2 * t;
    for (int kk = 0; kk < dp; kk += 16) {
      const uint32_t af[4] = {load_pair(q_frag + kk), load_pair(q_frag + 8 * qk_row + kk), load_pair(q_frag + kk + 8),
                              load_pair(q_frag + 8 * qk_row + kk + 8)};
#pragma unroll
      for (int n = 0; n < kFlashKeys / 8; ++n) {
        const uint16_t* k_frag = sk + (n * 8 + g) * qk_row + kk + 2 * t;
        const uint32_t bf[2] = {load_pair(k_frag), load_pair(k_frag + 8)};
        mma_bf16_16x8x16(s[n], af, bf);
      }
    }

    // Online softmax in f32 over the row pieces this thread holds; a row is spread over the 4
    // threads of a group (lanes 4g..4g+3).
    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int n = 0; n < kFlashKeys / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int half = e >> 1;
        const int64_t i = rows[half], j = j0 + n * 8 + 2 * t + (e & 1);
        const bool seen = i < a.q_len && j < kv_end && (!a.causal || j <= a.q_offset + i);
        float x = s[n][e] * a.scale;
        if (seen && a.mask) x += a.mask[i * a.kv_len + j];
        s[n][e] = seen ? x : -INFINITY;
        tile_max[half] = fmaxf(tile_max[half], s[n][e]);
      }
    float correction[2];
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      tile_max[half] = fmaxf(tile_max[half], __shfl_xor_sync(0xffffffffu, tile_max[half], 1));
      tile_max[half] = fmaxf(tile_max[half], __shfl_xor_sync(0xffffffffu, tile_max[half], 2));
      const float new_max = fmaxf(row_max[half], tile_max[half]);
      correction[half] = new_max == -INFINITY ? 1.f : expf(row_max[half] - new_max);
      row_max[half] = new_max;
    }
    float tile_sum[2] = {0.f, 0.f};
#pragma unroll
    for (int n = 0; n < kFlashKeys / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int half = e >> 1;
        s[n][e] = s[n][e] == -INFINITY ? 0.f : expf(s[n][e] - row_max[half]);
        tile_sum[half] += s[n][e];
      }
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      tile_sum[half] += __shfl_xor_sync(0xffffffffu, tile_sum[half], 1);
      tile_sum[half] += __shfl_xor_sync(0xffffffffu, tile_sum[half], 2);
      row_sum[half] = row_sum[half] * correction[half] + tile_sum[half];
    }
#pragma unroll
    for (int n = 0; n < kFlashDvChunk / 8; ++n) {
      o[n][0] *= correction[0];
      o[n][1] *= correction[0];
      o[n][2] *= correction[1];
      o[n][3] *= correction[1];
    }

    // O += P·V: score tiles 2c and 2c+1 are, rounded to bf16, the operand of key slice c.
#pragma unroll
    for (int c = 0; c < kFlashKeys / 16; ++c) {
      const uint32_t pf[4] = {pack_bf16(s[2 * c][0], s[2 * c][1]), pack_bf16(s[2 * c][2], s[2 * c][3]),
                              pack_bf16(s[2 * c + 1][0], s[2 * c + 1][1]), pack_bf16(s[2 * c + 1][2], s[2 * c + 1][3])};
#pragma unroll
      for (int n = 0; n < kFlashDvChunk / 8; ++n) {
        if (n * 8 >= dvn) break;
        const uint16_t* v_frag = svt + (n * 8 + g) * vt_row + c * 16 + 2 * t;
        const uint32_t bf[2] = {load_pair(v_frag), load_pair(v_frag + 8)};
        mma_bf16_16x8x16(o[n], pf, bf);
      }
    }
  }

#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int64_t i = rows[half];
    if (i >= a.q_len) continue;
    const float inv = row_sum[half] > 0.f ? 1.f / row_sum[half] : 0.f;
#pragma unroll
    for (int n = 0; n < kFlashDvChunk / 8; ++n) {
      const int d = n * 8 + 2 * t;
      if (d < dvn) out[i * a.out_stride + d] = o[n][2 * half] * inv;
      if (d + 1 < dvn) out[i * a.out_stride + d + 1] = o[n][2 * half + 1] * inv;
    }
  }
}

// A block of the flash kernel takes 64 query rows; below 16 rows most of its work would be padding:
// up to 8 rows (a decode step) take the key-split kernel, 9-15 the one-row-per-block kernel (in f32).
bool flash_eligible(const AttentionArgs& args, int64_t dv) {
  return args.bf16_operands && args.head_dim <= kFlashMaxDim && dv > 0 && args.q_len >= 16;
}

void launch_flash(const AttentionArgs& args, int64_t dv, const AttentionBatch& batch) {
  FlashProblem p;
  p.a = args;
  p.dv = dv;
  p.batch = batch;
  p.padded_dim = static_cast<int>((args.head_dim + 15) / 16 * 16);
  p.dv_chunks = static_cast<int>((dv + kFlashDvChunk - 1) / kFlashDvChunk);
  check(args.q_heads * p.dv_chunks <= 65535, "attention: too many heads for one CUDA launch");
  const size_t bytes = flash_shared_bytes(p.padded_dim);
  sa2va::cuda::check(cudaFuncSetAttribute(flash_attention_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(bytes)),
                     "allowing the attention kernel its shared memory");
  const dim3 grid(static_cast<unsigned>((args.q_len + kFlashRows - 1) / kFlashRows),
                  static_cast<unsigned>(args.q_heads * p.dv_chunks), static_cast<unsigned>(batch.count));
  flash_attention_kernel<<<grid, kFlashThreads, bytes, stream()>>>(p);
  sa2va::cuda::check_launch("flash attention");
}

}  // namespace

void attention_batched(const AttentionArgs& args, const AttentionBatch& batch) {
  Problem p;
  p.a = args;
  p.dv = args.v_head_dim > 0 ? args.v_head_dim : args.head_dim;
  p.batch = batch;
  check(args.head_dim <= kMaxHeadDim && p.dv <= kMaxHeadDim,
        "attention: head dimensions above " + std::to_string(kMaxHeadDim) + " have no CUDA kernel");
  check(args.q_len <= 0x7fffffff && args.q_heads <= 65535 && batch.count <= 65535,
        "attention: too many query rows, heads or problems for one CUDA launch");
  if (args.q_len == 0 || batch.count == 0) return;
  if (flash_eligible(args, p.dv)) return launch_flash(args, p.dv, batch);
  if (split_eligible(args, p.dv, batch)) return launch_split(p);
  const dim3 grid(static_cast<unsigned>(args.q_len), static_cast<unsigned>(args.q_heads),
                  static_cast<unsigned>(batch.count));
  attention_kernel<<<grid, kBlock, 0, stream()>>>(p);
  sa2va::cuda::check_launch("attention");
}

void attention(const AttentionArgs& args) { cuda::attention_batched(args, AttentionBatch{}); }

}  // namespace sa2va::ops::cuda
