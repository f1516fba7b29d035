#include "models/sam2/hiera.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <string>

#include "core/allocator.h"
#include "core/error.h"
#include "ops/ops.h"

namespace sa2va::sam2 {
namespace {

constexpr float kLayerNormEps = 1e-6f;

}  // namespace

Tensor TokenMap::to_chw() const { return ops::transpose_2d(tokens).view({channels(), h, w}); }

TokenMap TokenMap::from_chw(const Tensor& chw) {
  check(chw.dim() == 3 && chw.dtype() == DType::F32, "TokenMap::from_chw: expected an F32 [C, H, W] tensor, got " +
                                                          shape_str(chw.shape()));
  TokenMap m;
  m.h = chw.size(1);
  m.w = chw.size(2);
  m.tokens = ops::transpose_2d(chw.contiguous().view({chw.size(0), m.h * m.w}));
  return m;
}

// ---- one MultiScaleBlock ----------------------------------------------------------------------

Tensor HieraScratch::get(Slot slot, const Shape& shape) {
  const int64_t n = shape_numel(shape);
  Tensor& buf = slots_[slot];
  if (!buf.defined() || buf.numel() < n) buf = Tensor::empty({n}, DType::F32, device_);
  return buf.slice(0, 0, n).view(shape);
}

void HieraScratch::release(Slot slot) { slots_[slot] = Tensor(); }

TokenMap HieraBlock::forward(const TokenMap& x, HieraScratch& scratch, HieraScratch::Slot out_slot) const {
  using S = HieraScratch;
  const int64_t H = x.h, W = x.w;
  const int64_t s = q_stride, Ho = H / s, Wo = W / s;

  // Windows (a global block is one window covering the whole map) are attended a band of window
  // rows at a time, and every step from the LayerNorm to the residual add runs on that band only:
  // only the block's output is a whole-map buffer.
  const bool windowed = window > 0;
  const int64_t win_h = windowed ? window : H, win_w = windowed ? window : W;
  const int64_t n_rows = (H + win_h - 1) / win_h, n_cols = (W + win_w - 1) / win_w;
  const int64_t win_tokens = win_h * win_w;
  const bool identity_partition = n_rows == 1 && n_cols == 1 && win_h == H && win_w == W;
  const int64_t qkv_dim = 3 * dim_out;
  const int64_t qh = win_h / s, qw = win_w / s, q_tokens = qh * qw;
  // Unpartition assumes the pooled windows tile the pooled map as upstream recomputes it.
  check((Ho + qh - 1) / std::max<int64_t>(qh, 1) == n_rows && (Wo + qw - 1) / std::max<int64_t>(qw, 1) == n_cols,
        "Hiera: a " + std::to_string(H) + "x" + std::to_string(W) + " map cannot be pooled in windows of " +
            std::to_string(win_h));
  // A band's input rows are whole windows, so a multiple of the pooling stride but for the last band.
  const int64_t band_rows = std::max<int64_t>(1, kWindowBandTokens / (n_cols * win_tokens));
  const int64_t band_windows = std::min(band_rows, n_rows) * n_cols;
  const int64_t band_map_rows = std::min(H, band_rows * win_h);
  Tensor xn = scratch.get(S::kNorm, {band_map_rows * W, dim_in});
  Tensor xw = identity_partition ? xn : scratch.get(S::kWindows, {band_windows * win_tokens, dim_in});
  Tensor qkv = scratch.get(S::kQkv, {band_windows * win_tokens, qkv_dim});
  Tensor pooled_q = s > 1 ? scratch.get(S::kPooledQ, {band_windows * q_tokens, dim_out}) : Tensor();
  Tensor attn = scratch.get(S::kAttn, {band_windows * q_tokens, dim_out});
  Tensor projected_attn = scratch.get(S::kProjected, {band_windows * q_tokens, dim_out});
  // Shortcut: projected (and pooled with the queries) when the width changes.
  const bool project_shortcut = dim_in != dim_out;
  Tensor shortcut_proj, shortcut_pooled;
  if (project_shortcut) {
    shortcut_proj = scratch.get(S::kShortcutProj, {band_map_rows * W, dim_out});
    if (s > 1) shortcut_pooled = scratch.get(S::kShortcut, {band_map_rows / s * Wo, dim_out});
  }

  TokenMap out;
  out.h = Ho;
  out.w = Wo;
  out.tokens = scratch.get(out_slot, {Ho * Wo, dim_out});
  for (int64_t r0 = 0; r0 < n_rows; r0 += band_rows) {
    const int64_t count = std::min(band_rows, n_rows - r0) * n_cols, tokens = count * win_tokens;
    const int64_t y0 = r0 * win_h, rows = std::min(H - y0, count / n_cols * win_h);
    const int64_t out_y0 = r0 * qh, out_rows = std::min(Ho - out_y0, count / n_cols * qh);
    ops::layer_norm(x.tokens.kernel_f32() + y0 * W * dim_in, norm1_w.kernel_f32(), norm1_b.kernel_f32(),
                    xn.kernel_f32(), rows * W, dim_in, kLayerNormEps);

    const float* shortcut = x.tokens.kernel_f32() + out_y0 * Wo * dim_out;
    if (project_shortcut) {
      ops::linear(xn.kernel_f32(), rows * W, dim_in, proj_w, proj_b.kernel_f32(), shortcut_proj.kernel_f32());
      shortcut = shortcut_proj.kernel_f32();
      if (s > 1) {
        ops::max_pool_tokens(shortcut_proj.kernel_f32(), dim_out, 1, rows, W, dim_out, s, shortcut_pooled.kernel_f32());
        shortcut = shortcut_pooled.kernel_f32();
      }
    }

    if (!identity_partition) ops::window_partition(xn.kernel_f32(), rows, W, dim_in, win_h, win_w, xw.kernel_f32());
    ops::linear(xw.kernel_f32(), tokens, dim_in, qkv_w, qkv_b.kernel_f32(), qkv.kernel_f32());

    // Query pooling inside each window.
    const float* q = qkv.kernel_f32();
    int64_t q_row = qkv_dim;
    if (s > 1) {
      ops::max_pool_tokens(qkv.kernel_f32(), qkv_dim, count, win_h, win_w, dim_out, s, pooled_q.kernel_f32());
      q = pooled_q.kernel_f32();
      q_row = dim_out;
    }
    // The band's first window; window wi is offset by wi times the batch strides.
    const ops::AttentionArgs a = attention.args({q, q_row}, {qkv.kernel_f32() + dim_out, qkv_dim},
                                                {qkv.kernel_f32() + 2 * dim_out, qkv_dim}, attn.kernel_f32(), dim_out,
                                                q_tokens, win_tokens);
    ops::AttentionBatch windows;
    windows.count = count;
    windows.q = q_tokens * q_row;
    windows.k = windows.v = win_tokens * qkv_dim;
    windows.out = q_tokens * dim_out;
    ops::attention_batched(a, windows);

    ops::linear(attn.kernel_f32(), count * q_tokens, dim_out, attn_proj_w, attn_proj_b.kernel_f32(),
                projected_attn.kernel_f32());
    // Window un-partition (cropping the padding) fused with the residual add.
    ops::window_unpartition(projected_attn.kernel_f32(), qh, qw, out_rows, Wo, dim_out,
                            out.tokens.kernel_f32() + out_y0 * Wo * dim_out, shortcut);
  }

  // MLP with residual, a chunk of tokens at a time.
  const int64_t n = Ho * Wo, chunk = std::min(n, kTokensPerChunk);
  Tensor yn = scratch.get(S::kNorm, {chunk, dim_out});
  Tensor h = scratch.get(S::kHidden, {mlp.scratch_rows(chunk), mlp.hidden_features()});
  Tensor mlp_out = scratch.get(S::kProjected, {chunk, dim_out});
  for (int64_t t0 = 0; t0 < n; t0 += chunk) {
    const int64_t rows = std::min(chunk, n - t0);
    float* const tokens = out.tokens.kernel_f32() + t0 * dim_out;
    ops::layer_norm(tokens, norm2_w.kernel_f32(), norm2_b.kernel_f32(), yn.kernel_f32(), rows, dim_out, kLayerNormEps);
    mlp.forward(yn.kernel_f32(), rows, h.kernel_f32(), mlp_out.kernel_f32());
    ops::add(tokens, mlp_out.kernel_f32(), tokens, rows * dim_out);
  }
  return out;
}

// ---- trunk ------------------------------------------------------------------------------------

HieraTrunk HieraTrunk::load(Weights& w, const Sam2Config& c, const std::string& prefix) {
  constexpr MatrixUse kImageTokens = MatrixUse::ImageTokens;  // products over every token
  const std::string cfg = "sam2_config.hiera: ";
  check(!c.stages.empty() && c.window_spec.size() == c.stages.size(),
        cfg + "window_spec must have one entry per stage");
  check(c.q_stride.size() == 2 && c.q_stride[0] == c.q_stride[1] && c.q_stride[0] >= 1,
        cfg + "q_stride must be two equal positive values");
  check(c.embed_dim > 0 && c.num_heads > 0, cfg + "embed_dim and num_heads must be positive");
  check(c.window_pos_embed_bkg_spatial_size.size() == 2, cfg + "window_pos_embed_bkg_spatial_size needs 2 values");

  HieraTrunk t;
  t.embed_dim = c.embed_dim;
  int depth = 0;
  for (int s : c.stages) {
    check(s > 0, cfg + "every stage needs at least one block");
    depth += s;
    t.stage_ends.push_back(depth - 1);
  }
  // Query pooling in the first block of stages 2.. (at most q_pool of them).
  std::vector<int> q_pool_blocks;
  for (size_t i = 0; i + 1 < t.stage_ends.size() && static_cast<int>(i) < c.q_pool; ++i)
    q_pool_blocks.push_back(t.stage_ends[i] + 1);
  auto contains = [](const std::vector<int>& v, int x) { return std::find(v.begin(), v.end(), x) != v.end(); };

  t.patch_w = w.conv(prefix + "patch_embed.proj.weight", {c.embed_dim, 3, 7, 7});
  t.patch_b = w.f32(prefix + "patch_embed.proj.bias", {c.embed_dim}, Init::Bias);
  t.pos_embed = w.f32(prefix + "pos_embed",
                      {1, c.embed_dim, c.window_pos_embed_bkg_spatial_size[0], c.window_pos_embed_bkg_spatial_size[1]},
                      Init::Small);
  t.pos_embed_window =
      w.f32(prefix + "pos_embed_window", {1, c.embed_dim, c.window_spec[0], c.window_spec[0]}, Init::Small);

  int64_t dim = c.embed_dim, heads = c.num_heads;
  size_t stage = 0;
  for (int i = 0; i < depth; ++i) {
    HieraBlock b;
    b.dim_in = dim;
    b.dim_out = dim;
    // The window follows the stage of the previous block: a stage's first block keeps the old one.
    b.window = contains(c.global_att_blocks, i) ? 0 : c.window_spec[stage];
    if (contains(t.stage_ends, i - 1)) {
      b.dim_out = static_cast<int64_t>(static_cast<double>(dim) * c.dim_mul);
      heads = static_cast<int64_t>(static_cast<double>(heads) * c.head_mul);
      ++stage;
    }
    b.heads = heads;
    b.q_stride = contains(q_pool_blocks, i) ? c.q_stride[0] : 1;
    check(b.dim_out % b.heads == 0, cfg + "block " + std::to_string(i) + " width " + std::to_string(b.dim_out) +
                                        " is not divisible by its " + std::to_string(b.heads) + " heads");
    check(b.q_stride == 1 || b.dim_in != b.dim_out, cfg + "query pooling needs a width change (block " +
                                                        std::to_string(i) + ")");
    const std::string p = prefix + "blocks." + std::to_string(i) + ".";
    const int64_t hidden = static_cast<int64_t>(static_cast<double>(b.dim_out) * c.mlp_ratio);
    b.norm1_w = w.f32(p + "norm1.weight", {b.dim_in}, Init::NormWeight);
    b.norm1_b = w.f32(p + "norm1.bias", {b.dim_in}, Init::NormBias);
    b.qkv_w = w.matrix(p + "attn.qkv.weight", {3 * b.dim_out, b.dim_in}, Init::Linear, kImageTokens);
    b.mlp_hidden = hidden;
    b.attention = MultiHeadAttention::configure(w, b.heads, b.dim_out / b.heads);
    b.qkv_b = w.f32(p + "attn.qkv.bias", {3 * b.dim_out}, Init::Bias);
    b.attn_proj_w = w.matrix(p + "attn.proj.weight", {b.dim_out, b.dim_out}, Init::Linear, kImageTokens);
    b.attn_proj_b = w.f32(p + "attn.proj.bias", {b.dim_out}, Init::Bias);
    b.norm2_w = w.f32(p + "norm2.weight", {b.dim_out}, Init::NormWeight);
    b.norm2_b = w.f32(p + "norm2.bias", {b.dim_out}, Init::NormBias);
    b.mlp = FeedForward::load(w, p + "mlp.layers.0.", p + "mlp.layers.1.", b.dim_out, hidden, b.dim_out,
                              Activation::GeluErf, kImageTokens);
    if (b.dim_in != b.dim_out) {
      b.proj_w = w.matrix(p + "proj.weight", {b.dim_out, b.dim_in}, Init::Linear, kImageTokens);
      b.proj_b = w.f32(p + "proj.bias", {b.dim_out}, Init::Bias);
    }
    t.blocks.push_back(std::move(b));
    dim = t.blocks.back().dim_out;
  }
  return t;
}

std::vector<TokenMap> HieraTrunk::forward(const Tensor& image, const ExecContext& ctx) const {
  check(image.dim() == 3 && image.size(0) == 3 && image.dtype() == DType::F32,
        "Hiera: expected an F32 image [3, H, W], got " + shape_str(image.shape()));
  ops::Conv2dArgs conv;
  conv.stride_h = conv.stride_w = 4;
  conv.pad_h = conv.pad_w = 3;
  const Device device = patch_w.matrix.device();
  Tensor x = ops::conv2d(image.to(device), patch_w, patch_b, conv);  // [C, H, W]; a host image is copied
  const int64_t C = x.size(0), H = x.size(1), W = x.size(2);
  const int64_t win_h = pos_embed_window.size(2), win_w = pos_embed_window.size(3);
  check(H % win_h == 0 && W % win_w == 0, "Hiera: the " + std::to_string(H) + "x" + std::to_string(W) +
                                              " patch grid is not a multiple of the window position embedding");

  // x += bicubic(pos_embed) + tiled pos_embed_window
  auto position_embedding = [&] {
    Tensor pe = ops::interpolate_bicubic(pos_embed.view({C, pos_embed.size(2), pos_embed.size(3)}), H, W);
    ops::add_tiled(pe, pos_embed_window.view({C, win_h, win_w}));
    return pe;
  };
  std::call_once(position_cache->once, [&] {
    const DeviceScope on_model_device(device);
    position_cache->embedding = position_embedding();
    allocator_for(device).synchronize();  // other requests read it from their own streams
  });
  const Tensor& cached = position_cache->embedding;
  const Tensor pe = cached.size(1) == H && cached.size(2) == W ? cached : position_embedding();
  ops::add(x.kernel_f32(), pe.kernel_f32(), x.kernel_f32(), C * H * W);

  TokenMap cur = TokenMap::from_chw(x);
  x = Tensor();
  HieraScratch scratch(device);
  std::vector<TokenMap> outputs;
  for (size_t i = 0; i < blocks.size(); ++i) {
    const HieraScratch::Slot out_slot = i % 2 ? HieraScratch::kOutB : HieraScratch::kOutA;
    cur = blocks[i].forward(cur, scratch, out_slot);
    if (std::find(stage_ends.begin(), stage_ends.end(), static_cast<int>(i)) != stage_ends.end()) {
      if (ctx.recorder) ctx.record("sam.trunk." + std::to_string(outputs.size()), cur.to_chw());  // a transpose
      // The stage's output keeps its buffer; the next stage's smaller maps get a new one.
      scratch.release(out_slot);
      outputs.push_back(cur);
    }
  }
  return outputs;
}

double HieraTrunk::flops(int64_t image_size) const {
  int64_t H = image_size / 4, W = image_size / 4;
  double f = 2.0 * embed_dim * 3 * 49 * static_cast<double>(H * W);
  for (const HieraBlock& b : blocks) {
    const int64_t s = b.q_stride, Ho = H / s, Wo = W / s;
    const int64_t win_h = b.window > 0 ? b.window : H, win_w = b.window > 0 ? b.window : W;
    const int64_t n_win = ((H + win_h - 1) / win_h) * ((W + win_w - 1) / win_w);
    const double kv = static_cast<double>(n_win * win_h * win_w), q = static_cast<double>(n_win * (win_h / s) * (win_w / s));
    const double hidden = static_cast<double>(b.mlp_hidden);
    if (b.dim_in != b.dim_out) f += 2.0 * H * W * b.dim_in * b.dim_out;
    f += 2.0 * kv * b.dim_in * 3 * b.dim_out;                        // qkv
    f += 2.0 * 2.0 * q * static_cast<double>(win_h * win_w) * b.dim_out;  // q·kᵀ and p·v
    f += 2.0 * q * b.dim_out * b.dim_out;                            // attention projection
    f += 2.0 * 2.0 * static_cast<double>(Ho * Wo) * b.dim_out * hidden;  // MLP
    H = Ho;
    W = Wo;
  }
  return f;
}

}  // namespace sa2va::sam2
