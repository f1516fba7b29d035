// SAM2 FPN neck (docs/sam2.md §1.2) and the sine position encoding (docs/sam2.md §1.3).
//
// Lateral 1×1 convs bring every trunk stage to d_model channels; levels listed in
// fpn_top_down_levels add the nearest-2× upsampled coarser level; the `scalp` coarsest levels
// are dropped from the output.
#pragma once
#include <string>
#include <vector>

#include "core/context.h"
#include "core/stages.h"
#include "core/tensor.h"
#include "io/config.h"
#include "io/weights.h"
#include "models/sam2/hiera.h"

namespace sa2va::sam2 {

// PositionEmbeddingSine (normalize=True, scale 2π, temperature 10000) of an h×w map:
// F32 [channels, h, w]; the first channels/2 encode the row, the rest the column.
// Used for the level-2 features here and for memory features (channels 64) in video tracking.
Tensor position_embedding_sine(int64_t channels, int64_t h, int64_t w);

struct FpnNeck {
  int64_t d_model = 256;
  int scalp = 1;
  std::vector<int> top_down_levels;
  // convs[k] is the lateral conv of level (levels-1-k): weight [d_model, C_k, 1, 1], bias [d_model].
  std::vector<WeightMatrix> conv_w;  // 1×1 convs, applied as Linear layers on tokens
  std::vector<Tensor> conv_b;
  std::vector<int64_t> in_channels;  // C_k of convs[k]

  // Binds `<prefix>convs.{k}.conv.*` (prefix ends with "neck.").
  static FpnNeck load(Weights& w, const Sam2Config& c, const std::string& prefix);

  // trunk: stage outputs, high to low resolution. Returns levels 0 .. levels-1-scalp
  // ([h·w, d_model] each); records "sam.fpn.{i}" ([d_model, h, w]). Levels below `first_level`
  // are left empty (their callers make them a chunk at a time with lateral()).
  std::vector<TokenMap> forward(const std::vector<TokenMap>& trunk, const ExecContext& ctx = {},
                                int64_t first_level = 0) const;

  // Whether level i adds the upsampled coarser level (else it is its lateral conv alone).
  bool takes_top_down(int64_t level) const;
  // The lateral conv of `level` over `rows` tokens of its trunk stage -> out [rows, d_model].
  void lateral(int64_t level, const float* x, int64_t rows, float* out) const;

  // FLOPs of the lateral convs; level_pixels[i] = h·w of trunk stage i.
  double flops(const std::vector<int64_t>& level_pixels) const;
};

}  // namespace sa2va::sam2
