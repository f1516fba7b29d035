// SAM2 memory attention (docs/sam2.md §5.4-§5.5): conditions the current frame's level-2
// features on the memory bank.
//
//   x = curr + 0.1·curr_pos
//   per layer (pre-norm):  x += SelfAttnRoPE(LN1(x))
//                          x += CrossAttnRoPE(q = LN2(x), k = memory + memory_pos, v = memory)
//                          x += Linear2(ReLU(Linear1(LN3(x))))
//   out = LN(x)
// RoPE is SAM2's axial 2D rotation on the 64×64 grid; memory keys repeat the grid per memory
// frame and the trailing object-pointer tokens are not rotated.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/config.h"
#include "io/weights.h"
#include "models/common/blocks.h"

namespace sa2va::sam2 {

struct RoPEAttentionWeights {
  WeightMatrix q_w, k_w, v_w, out_w;  // q/k/v: in -> d_model, out: d_model -> d_model
  Tensor q_b, k_b, v_b, out_b;
};

struct MemoryAttentionLayer {
  RoPEAttentionWeights self_attn, cross_attn;  // cross: k/v project from the memory dim
  Tensor norm1_w, norm1_b, norm2_w, norm2_b, norm3_w, norm3_b;
  FeedForward ffn;  // linear1 -> ReLU -> linear2
};

struct MemoryAttention {
  int64_t d_model = 0, kv_dim = 0, heads = 1, ffn = 0;
  float rope_theta = 10000.f;
  MultiHeadAttention attention;  // one head's setup (heads of d_model / heads, attended one at a time)
  std::vector<MemoryAttentionLayer> layers;
  Tensor norm_w, norm_b;

  // Binds `<prefix>memory_attention.*` (prefix ends with "sam2_model.").
  static MemoryAttention load(Weights& w, const Sam2Config& c, const std::string& prefix);

  // curr, curr_pos: F32 tokens [h·w, d_model] (token y·w + x); memory, memory_pos: F32 [M, kv_dim]
  // whose first M − num_ptr_tokens rows are spatial memory tokens (whole h·w maps, stacked) and
  // whose last num_ptr_tokens rows are object-pointer tokens. Returns F32 tokens [h·w, d_model].
  Tensor forward(const Tensor& curr, const Tensor& curr_pos, const Tensor& memory, const Tensor& memory_pos,
                 int64_t num_ptr_tokens, int64_t h, int64_t w) const;

 private:
  // softmax(rope(q Wq) rope(k Wk)ᵀ / sqrt(head_dim)) (v Wv) Wo for q [Sq, d_model], k/v [Sk, in];
  // the last `k_no_rope` keys are not rotated. Writes [Sq, d_model] into out. With one head and
  // values narrower than it (cross-attention), Wv is applied after the weighted sum.
  void attend(const RoPEAttentionWeights& a, const Tensor& q, const Tensor& k, const Tensor& v, int64_t k_no_rope,
              int64_t h, int64_t w, float* out) const;
};

}  // namespace sa2va::sam2
