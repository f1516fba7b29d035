// SAM2 image-encoder trunk: Hiera (docs/sam2.md §1.1).
//
// Patch embedding (conv k7 s4 p3) + position embedding (bicubic-resized `pos_embed` plus the tiled
// `pos_embed_window`), then MultiScaleBlocks with windowed or global attention; the first block of
// a stage may pool its queries (q_stride) and change width. Per-block widths, heads, windows and
// pooling are derived from Sam2Config exactly as upstream Hiera derives them.
//
// Activations run in channels-last token layout ([h·w, C], row-major over (y, x)) so that every
// per-token linear layer is one GEMM; stage outputs are returned in that layout.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "core/context.h"
#include "core/stages.h"
#include "core/tensor.h"
#include "io/config.h"
#include "io/weights.h"
#include "models/common/blocks.h"

namespace sa2va::sam2 {

// Wide per-token intermediates (the block's q|k|v, MLP hidden layer and widened shortcut; the FPN's
// lateral maps) are made this many tokens at a time: at 1024x1024 the first stage has 65,536 tokens,
// whole-map buffers of them would take ~500 MB, and products of 8,192 rows run as fast as whole ones.
constexpr int64_t kTokensPerChunk = 8192;
// A block's windows are attended a band of window rows at a time, about this many tokens: the
// band's f32 q|k|v (stage 3: 1,960 tokens x 1,728 = 13.5 MB) is still in the caches when attention
// rounds and packs it, where 8,192-token bands (34 MB) sent it out to memory and back (Hiera-L
// encode 1.02-1.04x, bench/README.md).
constexpr int64_t kWindowBandTokens = 2048;

// A feature map in channels-last layout: tokens [h·w, C], token index y·w + x.
struct TokenMap {
  Tensor tokens;
  int64_t h = 0, w = 0;

  int64_t channels() const { return tokens.size(1); }
  // [C, h, w] copy (channel-first, as PyTorch NCHW without the batch).
  Tensor to_chw() const;
  // From a contiguous F32 [C, h, w] map.
  static TokenMap from_chw(const Tensor& chw);
};

// Scratch buffers reused by consecutive blocks: a fresh large allocation costs one page fault per
// 4 KiB on first touch, which at 1024² input is a third of the trunk's time.
class HieraScratch {
 public:
  explicit HieraScratch(Device device = Device::cpu()) : device_(device) {}
  enum Slot { kNorm, kShortcutProj, kShortcut, kWindows, kQkv, kPooledQ, kAttn, kProjected, kHidden, kOutA, kOutB, kCount };
  // A contiguous F32 view of `shape` on the slot's buffer (grown when too small).
  Tensor get(Slot slot, const Shape& shape);
  // Lets the slot's buffer go (views of it keep it alive); the next get() allocates afresh.
  void release(Slot slot);

 private:
  Device device_;
  Tensor slots_[kCount];
};

struct HieraBlock {
  int64_t dim_in = 0, dim_out = 0, heads = 0;
  int64_t window = 0;   // 0 = global attention
  int64_t q_stride = 1; // > 1: queries and the shortcut are max-pooled by q_stride×q_stride
  int64_t mlp_hidden = 0;
  MultiHeadAttention attention;  // heads of dim_out / heads, within each window
  Tensor norm1_w, norm1_b, qkv_b, attn_proj_b;
  WeightMatrix qkv_w, attn_proj_w;
  Tensor norm2_w, norm2_b;
  FeedForward mlp;              // dim_out -> mlp_ratio·dim_out -> dim_out, GELU
  WeightMatrix proj_w;  // shortcut projection, only when dim_in != dim_out
  Tensor proj_b;

  // Output tokens live in scratch slot `out` (must not hold x).
  TokenMap forward(const TokenMap& x, HieraScratch& scratch, HieraScratch::Slot out) const;
};

struct HieraTrunk {
  int64_t embed_dim = 0;
  ConvWeight patch_w;                // [embed_dim, 3, 7, 7]
  Tensor patch_b;
  Tensor pos_embed;                  // [1, embed_dim, bkg_h, bkg_w]
  Tensor pos_embed_window;           // [1, embed_dim, window_spec[0], window_spec[0]]
  std::vector<HieraBlock> blocks;
  std::vector<int> stage_ends;       // index of the last block of each stage
  // bicubic(pos_embed) + tiled pos_embed_window at the patch grid of the first forward: the same
  // for every frame, so computed once and shared (thread-safe) by every later forward.
  struct PositionCache {
    std::once_flag once;
    Tensor embedding;  // [embed_dim, H, W]
  };
  std::shared_ptr<PositionCache> position_cache = std::make_shared<PositionCache>();

  // Binds `<prefix>patch_embed.*`, `pos_embed*`, `blocks.*` (prefix ends with "trunk.").
  static HieraTrunk load(Weights& w, const Sam2Config& c, const std::string& prefix);

  // image: F32 [3, S, S] normalised. Returns one map per stage (high to low resolution);
  // records "sam.trunk.{i}" ([C, h, w]).
  std::vector<TokenMap> forward(const Tensor& image, const ExecContext& ctx = {}) const;

  // Multiply-accumulate count ×2 of one forward at the given input size (for benchmarks).
  double flops(int64_t image_size) const;
};

}  // namespace sa2va::sam2
