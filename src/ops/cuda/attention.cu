// CUDA attention in f32: one block of kBlock threads per (query row, head, problem). Keys are
// taken kBlock at a time, one score per thread; an online softmax (running max and sum) carries over
// the chunks, and each thread accumulates its share of the output dimensions. Memory does not grow
// with the number of keys; the score matrix is never formed.
//
// Semantics as ops::attention (ops/ops.h): causal limit q_offset + i, additive mask row i of
// [q_len, kv_len], GQA head h reads kv head h / (q_heads / kv_heads); a row that sees no finite
// score is zero.
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
  const dim3 grid(static_cast<unsigned>(args.q_len), static_cast<unsigned>(args.q_heads),
                  static_cast<unsigned>(batch.count));
  attention_kernel<<<grid, kBlock, 0, stream()>>>(p);
  sa2va::cuda::check_launch("attention");
}

void attention(const AttentionArgs& args) { cuda::attention_batched(args, AttentionBatch{}); }

}  // namespace sa2va::ops::cuda
