#include "models/internvit.h"

#include <cmath>
#include <cstring>
#include <string>

#include "core/error.h"
#include "core/profile.h"
#include "ops/ops.h"

namespace sa2va {
namespace {

constexpr float kProjectorNormEps = 1e-5f;  // mlp1.0 is a default nn.LayerNorm

const float* data_or_null(const Tensor& t) { return t.defined() ? t.kernel_f32() : nullptr; }

}  // namespace

// Working buffers of one encoder layer, reused across layers and tiles (per forward call, so
// concurrent forwards on one shared encoder do not interfere).
struct VisionEncoder::LayerScratch {
  Tensor normed, qkv, attention, mlp;
  LayerScratch(int64_t tokens, int64_t hidden, int64_t mlp_rows, int64_t mlp_size, Device device)
      : normed(Tensor::empty({tokens, hidden}, DType::F32, device)),
        qkv(Tensor::empty({tokens, 3 * hidden}, DType::F32, device)),
        attention(Tensor::empty({tokens, hidden}, DType::F32, device)),
        mlp(Tensor::empty({mlp_rows, mlp_size}, DType::F32, device)) {}
};

VisionEncoder VisionEncoder::load(Weights& w, const ModelConfig& c) {
  constexpr MatrixUse kImageTokens = MatrixUse::ImageTokens;  // products over every token
  const VisionConfig& v = c.vision;
  check(v.norm_type == "layer_norm", "config.json: vision_config.norm_type '" + v.norm_type +
                                         "' is not supported (only layer_norm)");
  check(!v.qk_normalization, "config.json: vision_config.qk_normalization=true is not supported");
  check(v.num_channels == 3, "config.json: vision_config.num_channels must be 3");
  check(v.hidden_size > 0 && v.num_heads > 0 && v.hidden_size % v.num_heads == 0,
        "config.json: vision_config.hidden_size must be a positive multiple of num_attention_heads");
  check(v.patch_size > 0 && v.image_size > 0 && v.image_size % v.patch_size == 0,
        "config.json: vision_config.image_size must be a positive multiple of patch_size");
  check(c.ps_version == "v2", "config.json: ps_version '" + c.ps_version + "' is not supported (only v2)");
  check(c.downsample_ratio == 0.5f, "config.json: downsample_ratio must be 0.5");
  check(c.llm.hidden_size > 0, "config.json: llm_config.hidden_size must be positive");
  // hidden_states[k] is the output of k layers; a negative select_layer counts from the end (-1 = last).
  const int selected = c.select_layer >= 0 ? c.select_layer : v.num_layers + 1 + c.select_layer;
  check(selected >= 0 && selected <= v.num_layers,
        "config.json: select_layer " + std::to_string(c.select_layer) + " is outside the " +
            std::to_string(v.num_layers) + " vision layers");

  VisionEncoder e;
  e.hidden_size = v.hidden_size;
  e.num_heads = v.num_heads;
  e.patch_size = v.patch_size;
  e.checkpoint_grid = v.image_size / v.patch_size;
  e.layers_to_run = selected;
  e.layer_norm_eps = v.layer_norm_eps;
  e.output_size = c.llm.hidden_size;

  const int64_t C = v.hidden_size, F = v.intermediate_size, P = v.patch_size;
  const int64_t G = e.checkpoint_grid;
  const std::string emb = "vision_model.embeddings.";
  e.patch_weight = w.conv(emb + "patch_embedding.weight", {C, 3, P, P}, Init::Linear);
  e.attention = MultiHeadAttention::configure(w, v.num_heads, C / v.num_heads);
  e.patch_bias = w.f32(emb + "patch_embedding.bias", {C}, Init::Bias);
  e.class_embedding = w.f32(emb + "class_embedding", {1, 1, C}, Init::Small);
  e.position_embedding = w.f32(emb + "position_embedding", {1, 1 + G * G, C}, Init::Small);

  // Every layer is bound (the checkpoint holds them all) even when select_layer stops earlier.
  for (int i = 0; i < v.num_layers; ++i) {
    const std::string p = "vision_model.encoder.layers." + std::to_string(i) + ".";
    VisionEncoderLayer L;
    L.norm1_weight = w.f32(p + "norm1.weight", {C}, Init::NormWeight);
    L.norm1_bias = w.f32(p + "norm1.bias", {C}, Init::NormBias);
    L.qkv_weight = w.matrix(p + "attn.qkv.weight", {3 * C, C}, Init::Linear, kImageTokens);
    if (v.qkv_bias) L.qkv_bias = w.f32(p + "attn.qkv.bias", {3 * C}, Init::Bias);
    L.proj_weight = w.matrix(p + "attn.proj.weight", {C, C}, Init::Linear, kImageTokens);
    L.proj_bias = w.f32(p + "attn.proj.bias", {C}, Init::Bias);
    L.ls1 = w.f32(p + "ls1", {C}, Init::Small);
    L.norm2_weight = w.f32(p + "norm2.weight", {C}, Init::NormWeight);
    L.norm2_bias = w.f32(p + "norm2.bias", {C}, Init::NormBias);
    L.mlp = FeedForward::load(w, p + "mlp.fc1.", p + "mlp.fc2.", C, F, C, Activation::GeluErf, kImageTokens);
    L.ls2 = w.f32(p + "ls2", {C}, Init::Small);
    e.layers.push_back(std::move(L));
  }

  const int64_t shuffled = 4 * C, D = e.output_size;
  e.mlp_norm_weight = w.f32("mlp1.0.weight", {shuffled}, Init::NormWeight);
  e.mlp_norm_bias = w.f32("mlp1.0.bias", {shuffled}, Init::NormBias);
  e.projector = FeedForward::load(w, "mlp1.1.", "mlp1.3.", shuffled, D, D, Activation::GeluErf, kImageTokens);
  return e;
}

Tensor VisionEncoder::position_table(int64_t grid) const {
  const int64_t C = hidden_size, G = checkpoint_grid;
  if (grid == G) return position_embedding.view({1 + G * G, C});
  // PyTorch resamples the patch part as an image [C, G, G] (bicubic, align_corners=False);
  // the CLS entry is kept as is.
  const float* table = position_embedding.kernel_f32();
  const Device device = position_embedding.device();
  Tensor image = Tensor::empty({C, G, G}, DType::F32, device);
  ops::transpose_2d(table + C, G * G, C, image.kernel_f32());  // patch rows [G·G, C] -> [C, G, G]
  const Tensor resized = ops::interpolate_bicubic(image, grid, grid);
  Tensor out = Tensor::empty({1 + grid * grid, C}, DType::F32, device);
  ops::copy_rows(table, C, out.kernel_f32(), C, 1, C);
  ops::transpose_2d(resized.kernel_f32(), C, grid * grid, out.kernel_f32() + C);
  return out;
}

void VisionEncoder::run_layer(const VisionEncoderLayer& L, float* x, int64_t tokens, LayerScratch& s) const {
  const int64_t C = hidden_size;
  float* y = s.normed.kernel_f32();
  float* qkv = s.qkv.kernel_f32();
  float* attn = s.attention.kernel_f32();
  float* mlp = s.mlp.kernel_f32();

  // x = x + ls1 ⊙ proj(Attention(LN1(x)))
  ops::layer_norm(x, L.norm1_weight.kernel_f32(), L.norm1_bias.kernel_f32(), y, tokens, C, layer_norm_eps);
  ops::linear(y, tokens, C, L.qkv_weight, data_or_null(L.qkv_bias), qkv);
  attention.run({qkv, 3 * C}, {qkv + C, 3 * C}, {qkv + 2 * C, 3 * C}, attn, C, tokens, tokens);
  ops::linear(attn, tokens, C, L.proj_weight, L.proj_bias.kernel_f32(), y);
  ops::add_scaled_rows(x, y, L.ls1.kernel_f32(), tokens, C);

  // x = x + ls2 ⊙ fc2(GELU(fc1(LN2(x))))
  ops::layer_norm(x, L.norm2_weight.kernel_f32(), L.norm2_bias.kernel_f32(), y, tokens, C, layer_norm_eps);
  L.mlp.forward(y, tokens, mlp, y);
  ops::add_scaled_rows(x, y, L.ls2.kernel_f32(), tokens, C);
}

Tensor VisionEncoder::project(const Tensor& patch_tokens, int64_t grid) const {
  // pixel shuffle (0.5, v2): each 2x2 block of patches becomes one 4C token
  Tensor shuffled = ops::pixel_shuffle_v2(patch_tokens, grid);
  const int64_t T = shuffled.size(0), K = shuffled.size(1);
  ops::layer_norm(shuffled.kernel_f32(), mlp_norm_weight.kernel_f32(), mlp_norm_bias.kernel_f32(),
                  shuffled.kernel_f32(), T, K, kProjectorNormEps);
  return projector.forward(shuffled);
}

Tensor VisionEncoder::forward(const Tensor& pixel_values, const ExecContext& ctx) const {
  return encode(pixel_values, ctx, /*through_mlp1=*/true);
}

Tensor VisionEncoder::shuffled_features(const Tensor& pixel_values) const {
  return encode(pixel_values, {}, /*through_mlp1=*/false);
}

Tensor VisionEncoder::encode(const Tensor& pixel_values, const ExecContext& ctx, bool through_mlp1) const {
  const profile::Scope timed("vision.internvit");
  check(pixel_values.defined() && pixel_values.dtype() == DType::F32 && pixel_values.dim() == 4 &&
            pixel_values.size(1) == 3,
        "vision encoder: pixel_values must be F32 [n, 3, H, W], got " +
            (pixel_values.defined() ? shape_str(pixel_values.shape()) : std::string("nothing")));
  const int64_t n = pixel_values.size(0), H = pixel_values.size(2), W = pixel_values.size(3);
  check(n > 0 && H == W && H % (2 * patch_size) == 0,
        "vision encoder: pixel_values " + shape_str(pixel_values.shape()) +
            " must hold at least one square image whose side is a multiple of " + std::to_string(2 * patch_size));
  const Device device = position_embedding.device();
  const Tensor pixels = pixel_values.to(device);  // preprocessing ran on the host (a copy for a GPU)
  const int64_t C = hidden_size, grid = H / patch_size, N = 1 + grid * grid;
  const int64_t tokens_out = (grid / 2) * (grid / 2), D = through_mlp1 ? output_size : 4 * C;

  const Tensor positions = position_table(grid);
  ops::Conv2dArgs patchify;
  patchify.stride_h = patchify.stride_w = patch_size;

  LayerScratch scratch(N, C, layers.empty() ? 0 : layers[0].mlp.scratch_rows(N),
                       layers.empty() ? 0 : layers[0].mlp.hidden_features(), device);
  Tensor hidden = Tensor::empty({n, N, C}, DType::F32, device);
  Tensor out = Tensor::empty({n, tokens_out, D}, DType::F32, device);
  for (int64_t t = 0; t < n; ++t) {
    float* x = hidden.kernel_f32() + t * N * C;
    // embeddings: [CLS, patches in row-major order] + position embedding
    const Tensor patches = ops::conv2d(pixels.select(0, t), patch_weight, patch_bias, patchify);  // [C, g, g]
    ops::copy_rows(class_embedding.kernel_f32(), C, x, C, 1, C);
    ops::transpose_2d(patches.kernel_f32(), C, grid * grid, x + C);
    ops::add(x, positions.kernel_f32(), x, N * C);

    for (int i = 0; i < layers_to_run; ++i) run_layer(layers[i], x, N, scratch);

    const Tensor embeds = through_mlp1 ? project(hidden.select(0, t).slice(0, 1, N), grid)
                                       : ops::pixel_shuffle_v2(hidden.select(0, t).slice(0, 1, N), grid);
    out.select(0, t).copy_from(embeds);
  }
  ctx.record("vit.last_hidden_state", hidden);
  ctx.record("vit_embeds", out);
  return out;
}

}  // namespace sa2va
