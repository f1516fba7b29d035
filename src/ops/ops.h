// Operators used by every Sa2VA component. Each function here is a device-neutral front
// (ops/<group>.cpp): it checks shapes, dtypes and devices, throwing sa2va::Error that names the op,
// then calls the kernel for the device the data lives on (ops/cpu/kernels.h today; ops/cuda/ later).
//
// Conventions
//  - Activations are contiguous float32 buffers passed as raw pointers with explicit sizes;
//    the callers (model components) own them as Tensors. Row-major, innermost dimension last.
//  - Matrix and conv weights are prepared once at load (ops/weight_matrix.h) in the format their
//    kernel wants (F32, BF16, Q8_0, Q4_0); norms and biases are F32 tensors.
//  - Every CPU kernel splits its outer loop over the thread pool (core/threadpool.h).
//  - Images / feature maps are channel-first [C, H, W] for one batch element (the callers
//    loop over the batch), tokens are [N, C].
#pragma once
#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "ops/weight_matrix.h"

namespace sa2va::ops {

// ---- matrix products ---------------------------------------------------------------------
// y[M,N] = x[M,K] · Wᵀ (+ bias[N]). W is a PyTorch Linear weight [N, K] prepared at load
// (ops/weight_matrix.h) in any format. BF16 weights: f32 accumulation; large M goes through a
// bf16 GEMM (activations rounded to bf16), small M (decode) through a bandwidth-bound kernel that
// reads the bf16 weights directly. Q8_0/Q4_0: activations times the dequantized weights (the CPU
// quantizes the activations to 8 bits per block; a GPU takes them in f32 for a few rows and, for
// more, multiplies bf16 activations with the weights dequantized to bf16).
void linear(const float* x, int64_t M, int64_t K, const WeightMatrix& weight, const float* bias, float* y);
// y1 [M, N1] = x·W1ᵀ and y2 [M, N2] = x·W2ᵀ, two products of one input (a gated MLP's gate and up
// projections): for decode the CPU streams both matrices in one pass, one parallel region and one
// quantization of x; elsewhere, or when the shapes do not allow it, two linear() calls.
void linear_pair(const float* x, int64_t M, int64_t K, const WeightMatrix& w1, float* y1, const WeightMatrix& w2,
                 float* y2);
// The element-wise function after a linear layer (the models' MLPs).
enum class Activation { None, Relu, GeluErf };
void activate(Activation activation, float* x, int64_t n);
// y = activation(x·Wᵀ + bias). The CPU's bf16 GEMM applies the activation to each block of y as the
// block is finished, while it is in cache (an MLP's wide hidden layer is not written and read again
// through memory); otherwise linear() and then the activation over y.
void linear(const float* x, int64_t M, int64_t K, const WeightMatrix& weight, const float* bias, float* y,
            Activation activation);
// An MLP: y [M, fc2.rows()] = activation(x·fc1ᵀ + b1)·fc2ᵀ + b2 (biases may be null), with `hidden`
// [M, fc1.rows()] as scratch for the hidden layer (its contents afterwards unspecified). With both
// matrices in the bf16 GEMM's panels the CPU rounds each finished block of the hidden layer into
// fc2's bf16 operand while it is in cache (no separate rounding pass, and for K up to 1024 no f32
// hidden layer written at all; same result bit for bit); otherwise the two linear() calls.
void feed_forward(const float* x, int64_t M, const WeightMatrix& fc1, const float* b1, Activation activation,
                  float* hidden, const WeightMatrix& fc2, const float* b2, float* y);
// A gated MLP (Qwen2's, InternLM2's): y [M, w_down.rows()] = (SiLU(x·w_gateᵀ) ⊙ x·w_upᵀ)·w_downᵀ, with
// `gate` and `up` [M, w_gate.rows()] as scratch (contents afterwards unspecified). With BF16 weight
// rows and more rows than decode's, the CPU multiplies gate and up block by block and rounds each
// finished block of the product straight into the down projection's bf16 operand (kept in `gate`;
// no f32 gate or up written, no separate SiLU or rounding pass; same result bit for bit);
// otherwise linear_pair, silu_mul and linear().
void gated_feed_forward(const float* x, int64_t M, int64_t K, const WeightMatrix& w_gate, const WeightMatrix& w_up,
                        float* gate, float* up, const WeightMatrix& w_down, float* y);
// Tensor form: x [..., K] F32 contiguous -> [..., N]. bias may be an undefined Tensor.
Tensor linear(const Tensor& x, const WeightMatrix& weight, const Tensor& bias = Tensor());
// The same matrix in the arrangement linear() reads fastest where it lives, for loaders to call once
// per matrix: on a CPU with AVX2 or AVX-512, Q4_0 rows interleaved by eight (a copy; the GPU reads
// the plain layout); otherwise `weight` itself. With an arena, a quantized matrix for the CPU kernels
// is always copied into it (huge pages for the matrices decode streams: core/weight_arena.h).
// `consumed` as WeightMatrix::interleaved_rows (called only when a copy is made).
WeightMatrix kernel_layout(const WeightMatrix& weight,
                           const std::function<void(int64_t first_row, int64_t rows)>& consumed = {},
                           WeightArena* arena = nullptr);
// The same for a matrix whose products always have many rows (applied to every token of a tile or
// image at once): on a CPU with AVX-512 BF16 or AVX2 a BF16 matrix in the bf16 GEMM's panels (a copy,
// WeightMatrix::bf16_panels, read in place instead of packed again by every product); otherwise
// `weight` itself. Few-row products then go through the GEMM as well. The copy goes into `arena` when
// one is given (huge pages: fewer faults at load, fewer TLB misses as the GEMM reads the panels).
WeightMatrix many_rows_layout(const WeightMatrix& weight, WeightArena* arena = nullptr);

// C[M,N] = alpha · A[M,K] · op(B) + beta · C, all f32, with leading dimensions (row strides).
// op(B) = B [K,N] (ldb >= N) or, when transpose_b, Bᵀ with B stored [N,K] (ldb >= K).
void gemm(const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc,
          int64_t M, int64_t N, int64_t K, bool transpose_b, float alpha = 1.f, float beta = 0.f);
// C[M,N] = alpha · Aᵀ · B + beta · C with A stored [K,M] (lda >= M) and B [K,N] (ldb >= N): the
// weight gradients of training (dW = dyᵀ·x) without transposing dy.
void gemm_at(const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc,
             int64_t M, int64_t N, int64_t K, float alpha = 1.f, float beta = 0.f);

// ---- normalisation -------------------------------------------------------------------------
// Per row of `dim` elements: (x - mean) / sqrt(var + eps) * w + b   (w, b may be null).
void layer_norm(const float* x, const float* w, const float* b, float* y, int64_t rows, int64_t dim, float eps);
// Per row: x / sqrt(mean(x²) + eps) * w.
void rms_norm(const float* x, const float* w, float* y, int64_t rows, int64_t dim, float eps);
// SAM2 LayerNorm2d on [C, HW]: normalise over channels at each pixel, then per-channel w, b.
void layer_norm_2d(const float* x, const float* w, const float* b, float* y, int64_t channels, int64_t pixels, float eps);

// ---- element-wise (in place) ---------------------------------------------------------------
void gelu_erf(float* x, int64_t n);    // 0.5·x·(1 + erf(x/√2))
void gelu_tanh(float* x, int64_t n);   // 0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³)))
void silu(float* x, int64_t n);
void relu(float* x, int64_t n);
void sigmoid(float* x, int64_t n);
void softmax_rows(float* x, int64_t rows, int64_t n);   // numerically stable, per row
// y = a ⊙ b with b broadcast: b has `inner` elements repeated over `outer` rows (per-channel
// scale on [N, C]), or b has `outer` elements each applied to one whole row (per-row scale).
void add(const float* a, const float* b, float* y, int64_t n);               // same size
void add_rows(float* x, const float* row, int64_t rows, int64_t dim);        // x[r, :] += row
void mul_rows(float* x, const float* row, int64_t rows, int64_t dim);        // x[r, :] *= row
// x[r, :] += y[r, :] ⊙ row: a residual add with a per-channel scale (InternViT's layer scale), one pass.
void add_scaled_rows(float* x, const float* y, const float* row, int64_t rows, int64_t dim);
void add_per_row(float* x, const float* per_row, int64_t rows, int64_t dim); // x[r, :] += per_row[r]
void scale(float* x, float s, int64_t n);
// dst[r·dst_stride + c] = src[r·src_stride + c] for r < rows, c < cols (strided row blocks).
void copy_rows(const float* src, int64_t src_stride, float* dst, int64_t dst_stride, int64_t rows, int64_t cols);
// SwiGLU: gate[i] = silu(gate[i]) * up[i]
void silu_mul(float* gate, const float* up, int64_t n);

// ---- attention -----------------------------------------------------------------------------
// out[i, h, :] = softmax(scale · q[i,h,:] · k[j, h/n_rep, :]ᵀ + mask[i,j]) · v[j, h/n_rep, :]
// q: [Sq, Hq, D] with row stride q_stride (elements between consecutive tokens), likewise k, v
// ([Sk, Hkv, D] / [Sk, Hkv, Dv]) and out ([Sq, Hq, Dv], row stride out_stride).
// causal: query i (absolute position q_offset + i) sees keys j <= q_offset + i.
// mask: optional additive [Sq, Sk]. GQA: n_rep = Hq / Hkv.
// bf16_operands (the bf16 fast mode, as PyTorch's bf16 SDPA): q, k, v and the probabilities are
// rounded to bf16 and multiplied on the bf16 dot-product unit with f32 accumulation, in one fused
// pass without a full score matrix; softmax stays f32. Without AVX-512 BF16 it computes in f32.
struct AttentionArgs {
  const float* q = nullptr; int64_t q_stride = 0;
  const float* k = nullptr; int64_t k_stride = 0;
  const float* v = nullptr; int64_t v_stride = 0;
  float* out = nullptr; int64_t out_stride = 0;
  int64_t q_len = 0, kv_len = 0, q_heads = 1, kv_heads = 1, head_dim = 0, v_head_dim = 0;  // v_head_dim 0 = head_dim
  float scale = 1.f;
  bool causal = false;
  int64_t q_offset = 0;
  const float* mask = nullptr;
  bool bf16_operands = false;
};
void attention(const AttentionArgs& args);

// ---- positional encodings ------------------------------------------------------------------
// Rotate-half RoPE (LLMs) in place on x [tokens, heads, head_dim] with row stride `stride`;
// token t has position positions[t]; inv_freq[k] = 1 / theta^(2k/head_dim).
void rope_rotate_half(float* x, int64_t tokens, int64_t heads, int64_t head_dim, int64_t stride,
                      const int64_t* positions, float theta);
// SAM2 axial 2D RoPE in place on x [tokens, dim] (one head, interleaved complex pairs).
// Token n uses grid position (n mod (grid_w·grid_h)): column c = p mod grid_w, row r = p / grid_w.
// Pairs j < dim/4 rotate by c·f_j, pairs dim/4 + j by r·f_j, with f_j = 1 / theta^(4j/dim).
// Only the first `rope_tokens` tokens are rotated (object-pointer tokens are excluded).
void rope_axial_2d(float* x, int64_t tokens, int64_t dim, int64_t grid_w, int64_t grid_h, float theta,
                   int64_t rope_tokens);

// ---- convolution & resampling (one batch element, channel-first) ----------------------------
struct Conv2dArgs {
  int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dilation_h = 1, dilation_w = 1, groups = 1;
};
// x [Cin, H, W] -> y [Cout, Ho, Wo]; weight prepared from [Cout, Cin/groups, kh, kw] (ConvWeight::prepare),
// bias [Cout] or undefined. Ho = (H + 2·pad_h − dil_h·(kh−1) − 1)/stride_h + 1, likewise Wo.
Tensor conv2d(const Tensor& x, const ConvWeight& weight, const Tensor& bias, const Conv2dArgs& args);
// ConvTranspose2d kernel 2 stride 2: x [Cin, H, W] -> y [Cout, 2H, 2W]; weight prepared from
// [Cin, Cout, 2, 2] (ConvWeight::prepare_transposed_2x2).
Tensor conv_transpose_2x2(const Tensor& x, const ConvWeight& weight, const Tensor& bias);
// MaxPool2d(kernel, stride), no padding: [C, H, W] -> [C, Ho, Wo].
Tensor max_pool2d(const Tensor& x, int64_t kernel, int64_t stride);
// PyTorch F.interpolate on [C, H, W] -> [C, Ho, Wo].
Tensor interpolate_bilinear(const Tensor& x, int64_t out_h, int64_t out_w, bool align_corners);
Tensor interpolate_nearest(const Tensor& x, int64_t out_h, int64_t out_w);   // legacy 'nearest'
Tensor interpolate_bicubic(const Tensor& x, int64_t out_h, int64_t out_w);   // A = −0.75, align_corners false
// InternVL pixel shuffle (scale 0.5, ps_version v2) on tokens of a square grid:
// x [side·side, C] -> [(side/2)², 4C] with out[i·side/2 + j][m·2C + k·C + c] = x[(2i+m)·side + 2j+k][c].
Tensor pixel_shuffle_v2(const Tensor& x, int64_t side);

// ---- layout and data movement ------------------------------------------------------------
// Copies, gathers and re-layouts: the model states the layout change, the op owns the loop.
// Fronts (ops/layout.cpp) check sizes and throw sa2va::Error naming the op; the kernels live
// per device (ops/cpu/). Token maps are channels-last [H, W, C] (a TokenMap's rows).

// dst[c, r] = src[r, c] for a [rows, cols] matrix (cache-sized tiles).
void transpose_2d(const float* src, int64_t rows, int64_t cols, float* dst);
// Tensor form: F32 [R, C] -> [C, R].
Tensor transpose_2d(const Tensor& x);
// F32 [A, B, D] -> [B, A, D] (rows of D elements move as a whole), e.g. [S, heads, hd] -> [heads, S, hd].
Tensor transpose_01(const Tensor& x);

// out[i, :] = src[rows[i], :] for src [R, D] (F32, or BF16 converted exactly to f32) -> F32 [rows.size(), D].
Tensor gather_rows(const Tensor& src, const std::vector<int64_t>& rows);
// The same into out [n, D], with the n row indices already in the memory of src's device (the caller
// has checked them: a decode step's token, uploaded once), so nothing is allocated.
void gather_rows(const Tensor& src, const int64_t* rows, int64_t n, float* out);

// Max pooling, kernel = stride = s (floor), of `maps` channels-last maps [h, w, c] whose tokens lie
// x_stride floats apart (x_stride >= c: the first c channels of wider rows) -> y [maps, h/s, w/s, c].
void max_pool_tokens(const float* x, int64_t x_stride, int64_t maps, int64_t h, int64_t w, int64_t c, int64_t s,
                     float* y);

// SAM2 Hiera windows: x [h, w, c] -> y [⌈h/win_h⌉·⌈w/win_w⌉, win_h·win_w, c], windows row-major,
// zero padding at the bottom and right.
void window_partition(const float* x, int64_t h, int64_t w, int64_t c, int64_t win_h, int64_t win_w, float* y);
// The inverse, cropping the padding: windows [⌈h/win_h⌉·⌈w/win_w⌉, win_h·win_w, c] -> y [h, w, c].
// With a residual [h, w, c]: y = residual + the un-partitioned windows (the residual add fused in).
void window_unpartition(const float* windows, int64_t win_h, int64_t win_w, int64_t h, int64_t w, int64_t c,
                        float* y, const float* residual = nullptr);

// x [H, W, C] += nearest 2× upsampling of src [H/2, W/2, C]: x[y, x', :] += src[y/2, x'/2, :]
// (the SAM2 FPN top-down path; F32, both contiguous).
void add_upsampled_nearest_2x(const Tensor& x, const Tensor& src);
// x [C, H, W] += tile [C, th, tw] repeated over each plane: x[c, y, x'] += tile[c, y mod th, x' mod tw] (F32).
void add_tiled(const Tensor& x, const Tensor& tile);

// ---- element-wise, more (in place) ---------------------------------------------------------
void scale_shift(float* x, float scale, float shift, int64_t n);      // x = x·scale + shift
void add_scaled(float* x, const float* y, float alpha, int64_t n);   // x += alpha·y
void round_bf16(float* x, int64_t n);                                 // x = round_to_bf16(x) (nearest even)

// ---- batched attention ---------------------------------------------------------------------
// `count` independent ops::attention problems (SAM2 Hiera's windows): problem b reads q + b·q,
// k + b·k, v + b·v and writes out + b·out (offsets in elements from args' pointers); everything
// else is as in args. Several problems run in parallel, one per task (attention inside inline);
// a single problem parallelises inside ops::attention.
struct AttentionBatch {
  int64_t count = 1;
  int64_t q = 0, k = 0, v = 0, out = 0;  // batch strides
};
void attention_batched(const AttentionArgs& args, const AttentionBatch& batch);

// ---- generated tables ----------------------------------------------------------------------
// SAM2 PositionEmbeddingSine (normalize, scale 2π, temperature 10000) for an h × w map, float32 as
// upstream -> [channels, h, w]: channels/2 planes of the row coordinate, then channels/2 of the
// column, sin at even and cos at odd plane index. channels: a positive multiple of 4.
Tensor position_embedding_sine(int64_t channels, int64_t h, int64_t w);
// SAM2 PositionEmbeddingRandom on the cell centres of an n × n grid: gaussian [2, half] ->
// [2·half, n, n] with p = 2π·(u·g[0, k] + v·g[1, k]) (u: column, v: row, both mapped to [-1, 1]),
// sin p in plane k and cos p in plane half + k.
Tensor position_embedding_random(const Tensor& gaussian, int64_t n);
// Fills a contiguous BF16 or F32 tensor with mean + stddev·z, z approximately standard normal
// (Irwin-Hall of 4 splitmix64 uniforms, core/random.h). Element i comes from the stream of its
// chunk of 65536 elements (seed + chunk·0x632be59bd9b4e019), so values do not depend on threads.
void fill_random_normal(const Tensor& t, float mean, float stddev, uint64_t seed);

// ---- 8-bit images ---------------------------------------------------------------------------
// Fixed-point taps along one axis (Pillow's separable resampling): output i reads source indices
// [first[i], first[i] + count[i]) with weights weights[i·ksize + t], in units of 2^-precision_bits.
struct FixedPointTaps {
  int ksize = 0;
  int precision_bits = 22;
  std::vector<int> first, count;
  std::vector<int32_t> weights;  // [out, ksize]
  int64_t size() const { return static_cast<int64_t>(first.size()); }
  const int32_t* taps(int64_t i) const { return weights.data() + i * ksize; }
};
// Pillow's horizontal pass on interleaved RGB rows: src [rows, in_w, 3] -> dst [rows, taps.size(), 3];
// per channel (½ + Σ src·w) >> precision_bits, clipped to [0, 255].
void resample_rgb8_horizontal(const uint8_t* src, int64_t in_w, int64_t rows, const FixedPointTaps& taps,
                              uint8_t* dst);
// Pillow's vertical pass on rows of row_len bytes: src holds in_rows rows starting at source row row0;
// dst row y [taps.size() rows] = (½ + Σ_t src row (first[y] − row0 + t) · w[t]) >> precision_bits, clipped.
void resample_u8_vertical(const uint8_t* src, int64_t in_rows, int64_t row_len, int64_t row0,
                          const FixedPointTaps& taps, uint8_t* dst);
// ToTensor + Normalize: RGB u8 [h, w, 3] -> F32 [3, h, w] with (v/255 − mean[c]) / stdev[c] in float32.
void normalize_rgb8_chw(const uint8_t* src, int64_t h, int64_t w, const float mean[3], const float stdev[3],
                        float* dst);

}  // namespace sa2va::ops
