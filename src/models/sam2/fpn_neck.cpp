#include "models/sam2/fpn_neck.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "core/error.h"
#include "core/threadpool.h"
#include "ops/ops.h"

namespace sa2va::sam2 {

Tensor position_embedding_sine(int64_t channels, int64_t h, int64_t w) {
  check(channels > 0 && channels % 4 == 0, "position_embedding_sine: channels must be a positive multiple of 4");
  const int64_t half = channels / 2;
  // Float32 throughout, as upstream computes it.
  std::vector<float> dim_t(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i)
    dim_t[i] = powf(10000.f, (2.f * static_cast<float>(i / 2)) / static_cast<float>(half));
  const float scale = static_cast<float>(2 * std::numbers::pi);
  const float y_den = static_cast<float>(h) + 1e-6f, x_den = static_cast<float>(w) + 1e-6f;

  Tensor out = Tensor::empty({channels, h, w});
  float* p = out.f32();
  parallel_for(half, [&](int64_t c0, int64_t c1) {
    for (int64_t i = c0; i < c1; ++i) {
      const bool use_sin = i % 2 == 0;
      float* y_plane = p + i * h * w;
      float* x_plane = p + (half + i) * h * w;
      for (int64_t r = 0; r < h; ++r) {
        const float v = static_cast<float>(r + 1) / y_den * scale / dim_t[i];
        const float e = use_sin ? sinf(v) : cosf(v);
        std::fill(y_plane + r * w, y_plane + (r + 1) * w, e);
      }
      for (int64_t c = 0; c < w; ++c) {
        const float v = static_cast<float>(c + 1) / x_den * scale / dim_t[i];
        x_plane[c] = use_sin ? sinf(v) : cosf(v);
      }
      for (int64_t r = 1; r < h; ++r) std::copy(x_plane, x_plane + w, x_plane + r * w);
    }
  });
  return out;
}

FpnNeck FpnNeck::load(Weights& w, const Sam2Config& c, const std::string& prefix) {
  check(!c.backbone_channel_list.empty(), "sam2_config.fpn: backbone_channel_list is empty");
  check(c.scalp >= 0 && c.scalp < static_cast<int>(c.backbone_channel_list.size()),
        "sam2_config.fpn: scalp must leave at least one level");
  FpnNeck n;
  n.d_model = c.fpn_d_model;
  n.scalp = c.scalp;
  n.top_down_levels = c.fpn_top_down_levels;
  for (size_t k = 0; k < c.backbone_channel_list.size(); ++k) {
    const std::string p = prefix + "convs." + std::to_string(k) + ".conv.";
    n.in_channels.push_back(c.backbone_channel_list[k]);
    n.conv_w.push_back(w.matrix(p + "weight", {n.d_model, c.backbone_channel_list[k], 1, 1}));
    n.conv_b.push_back(w.f32(p + "bias", {n.d_model}, Init::Bias));
  }
  return n;
}

std::vector<TokenMap> FpnNeck::forward(const std::vector<TokenMap>& trunk, StageRecorder* rec) const {
  const int64_t levels = static_cast<int64_t>(conv_w.size());
  check(static_cast<int64_t>(trunk.size()) == levels, "FPN: expected " + std::to_string(levels) +
                                                          " trunk stages, got " + std::to_string(trunk.size()));
  std::vector<TokenMap> out(static_cast<size_t>(levels));
  const TokenMap* prev = nullptr;
  for (int64_t i = levels - 1; i >= 0; --i) {
    const TokenMap& x = trunk[i];
    const Tensor& wt = conv_w[levels - 1 - i];
    check(x.channels() == wt.size(1), "FPN: stage " + std::to_string(i) + " has " + std::to_string(x.channels()) +
                                          " channels, the lateral conv takes " + std::to_string(wt.size(1)));
    TokenMap lat;
    lat.h = x.h;
    lat.w = x.w;
    lat.tokens = Tensor::empty({x.h * x.w, d_model});
    ops::linear(x.tokens.f32(), x.h * x.w, x.channels(), wt.view({d_model, x.channels()}),
                conv_b[levels - 1 - i].f32(), lat.tokens.f32());
    const bool top_down = std::find(top_down_levels.begin(), top_down_levels.end(), i) != top_down_levels.end();
    if (top_down && prev) {
      check(prev->h * 2 == lat.h && prev->w * 2 == lat.w, "FPN: level sizes do not halve");
      // lat += nearest_upsample_2x(prev)
      const float* src = prev->tokens.f32();
      float* dst = lat.tokens.f32();
      const int64_t pw = prev->w, lw = lat.w, d = d_model;
      parallel_for(lat.h, [&](int64_t r0, int64_t r1) {
        for (int64_t y = r0; y < r1; ++y)
          for (int64_t x2 = 0; x2 < lw; ++x2)
            ops::add(dst + (y * lw + x2) * d, src + ((y / 2) * pw + x2 / 2) * d, dst + (y * lw + x2) * d, d);
      }, 4);
    }
    out[i] = std::move(lat);
    prev = &out[i];
  }
  out.resize(static_cast<size_t>(levels - scalp));
  if (rec)
    for (size_t i = 0; i < out.size(); ++i) record(rec, "sam.fpn." + std::to_string(i), out[i].to_chw());
  return out;
}

double FpnNeck::flops(const std::vector<int64_t>& level_pixels) const {
  double f = 0;
  const size_t levels = in_channels.size();
  for (size_t i = 0; i < level_pixels.size() && i < levels; ++i)
    f += 2.0 * static_cast<double>(level_pixels[i]) * static_cast<double>(in_channels[levels - 1 - i] * d_model);
  return f;
}

}  // namespace sa2va::sam2
