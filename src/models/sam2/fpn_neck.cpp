#include "models/sam2/fpn_neck.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "core/error.h"
#include "ops/ops.h"

namespace sa2va::sam2 {

Tensor position_embedding_sine(int64_t channels, int64_t h, int64_t w) {
  return ops::position_embedding_sine(channels, h, w);
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
    n.conv_w.push_back(
        w.matrix(p + "weight", {n.d_model, c.backbone_channel_list[k], 1, 1}, Init::Linear, MatrixUse::ImageTokens));
    n.conv_b.push_back(w.f32(p + "bias", {n.d_model}, Init::Bias));
  }
  return n;
}

bool FpnNeck::takes_top_down(int64_t level) const {
  return std::find(top_down_levels.begin(), top_down_levels.end(), level) != top_down_levels.end();
}

void FpnNeck::lateral(int64_t level, const float* x, int64_t rows, float* out) const {
  const int64_t levels = static_cast<int64_t>(conv_w.size());
  check(level >= 0 && level < levels, "FPN: no level " + std::to_string(level));
  const WeightMatrix& wt = conv_w[levels - 1 - level];
  ops::linear(x, rows, wt.cols(), wt, conv_b[levels - 1 - level].kernel_f32(), out);
}

std::vector<TokenMap> FpnNeck::forward(const std::vector<TokenMap>& trunk, const ExecContext& ctx,
                                       int64_t first_level) const {
  const int64_t levels = static_cast<int64_t>(conv_w.size());
  check(static_cast<int64_t>(trunk.size()) == levels, "FPN: expected " + std::to_string(levels) +
                                                          " trunk stages, got " + std::to_string(trunk.size()));
  std::vector<TokenMap> out(static_cast<size_t>(levels));
  const TokenMap* prev = nullptr;
  for (int64_t i = levels - 1; i >= first_level; --i) {
    const TokenMap& x = trunk[i];
    const WeightMatrix& wt = conv_w[levels - 1 - i];
    check(x.channels() == wt.cols(), "FPN: stage " + std::to_string(i) + " has " + std::to_string(x.channels()) +
                                         " channels, the lateral conv takes " + std::to_string(wt.cols()));
    TokenMap lat;
    lat.h = x.h;
    lat.w = x.w;
    lat.tokens = Tensor::empty({x.h * x.w, d_model}, DType::F32, x.tokens.device());
    lateral(i, x.tokens.kernel_f32(), x.h * x.w, lat.tokens.kernel_f32());
    if (takes_top_down(i) && prev) {
      check(prev->h * 2 == lat.h && prev->w * 2 == lat.w, "FPN: level sizes do not halve");
      ops::add_upsampled_nearest_2x(lat.tokens.view({lat.h, lat.w, d_model}),
                                    prev->tokens.view({prev->h, prev->w, d_model}));
    }
    out[i] = std::move(lat);
    prev = &out[i];
  }
  out.resize(static_cast<size_t>(levels - scalp));
  if (ctx.recorder)
    for (size_t i = static_cast<size_t>(first_level); i < out.size(); ++i) ctx.record("sam.fpn." + std::to_string(i), out[i].to_chw());
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
