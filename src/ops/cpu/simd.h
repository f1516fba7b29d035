// Run-time selected SIMD kernels shared by the CPU kernels (ops/cpu/).
// The instruction set is detected once (AVX-512 with BF16 and VNNI dot products, AVX2+FMA+F16C, or
// plain C++);
// every kernel here has all three variants so the same binary runs on any x86-64 CPU.
#pragma once
#include <cstdint>
#include <vector>

namespace sa2va::ops::simd {

enum class Isa : int { Scalar = 0, Avx2 = 1, Avx512 = 2 };

// The instruction set in use: the best the CPU supports, capped by set_max_isa.
Isa isa();
// Caps the instruction set (tests use it to exercise the fallbacks); returns the previous cap.
Isa set_max_isa(Isa cap);
const char* isa_name(Isa isa);
// AMX tiles with bf16 (Intel Xeon since Sapphire Rapids), granted by the OS, under an AVX-512 level:
// the bf16 GEMM then multiplies on tiles (TDPBF16PS) instead of vdpbf16ps. Tests switch it off to
// exercise the AVX-512 tile kernel; set_amx_enabled returns the previous setting.
bool amx();
bool set_amx_enabled(bool on);
// True only in the test build whose AVX-512 and AMX variants run emulated over AVX2
// (SA2VA_EMULATE_WIDE_X86, x86_emulation.h): the operator tests then exercise those variants alone.
bool wide_x86_emulated();

// One row of LayerNorm: y = (x - mean) / sqrt(var + eps) · w + b (w, b may be null), the mean
// first and then the centred variance (accurate for rows with a large mean). y may be x.
void layer_norm_row(const float* x, int64_t n, const float* w, const float* b, float eps, float* y);
// y[i] += alpha · x[i]
void axpy(float alpha, const float* x, float* y, int64_t n);
// y[i] = alpha · x[i] (y may be x)
void scale(float alpha, const float* x, float* y, int64_t n);
// out[j] = scale · Σ_i q[i]·rows[j·ld + i] for j < count (a query against `count` keys)
void dot_rows(const float* q, const float* rows, int64_t ld, int64_t count, int64_t n, float scale, float* out);
// out[i] = Σ_j w[j]·rows[j·ld + i] for i < n (attention weights times values; zeros when count is 0)
void weighted_sum_rows(const float* w, const float* rows, int64_t ld, int64_t count, int64_t n, float* out);

// Small-M product with BF16 weight rows and f32 accumulation:
// y[i·ldy + r] = Σ_k w[r·ldw + k] · x[i·ldx + k]   for r < rows, i < m.
// AVX-512 BF16 rounds x to bf16 (round to nearest even) and uses bf16 dot products; AVX2 and scalar
// widen the weights and keep x in f32.
void bf16_rows_times_f32(const uint16_t* w, int64_t ldw, int64_t rows, int64_t k, const float* x,
                         int64_t ldx, int64_t m, float* y, int64_t ldy);

// Large-M product y[M,N] = x[M,K] · Wᵀ (+ bias[N] on every row, when given) with BF16 weights W[N,K]
// using AVX-512 BF16 dot products or AMX tiles (x rounded to bf16, accumulation in f32), or on AVX2
// f32 FMA with the panels widened in registers (x kept in f32). Returns false (doing nothing) on the
// scalar instruction set.
// GemmOutput::Relu / GeluErf: relu_inplace / gelu_erf_inplace applied to each block of y once it
// is complete (while it is in cache).
enum class GemmOutput { Plain, Relu, GeluErf };
bool bf16_gemm(const float* x, int64_t M, int64_t K, const uint16_t* w, int64_t N, float* y, const float* bias = nullptr,
               GemmOutput output = GemmOutput::Plain);
// The same product with W given by how to pack its panels: pack(self, n0, kp0, kpn, panel) writes
// panel[kp·kBf16PanelCols + lane] = bf16 pair kp0 + kp of row n0 + lane (zero beyond N or K), for
// kp < kpn. kp0 is a multiple of kBf16SlicePairs. Quantized weights are dequantized while packing.
struct Bf16PanelSource {
  void (*pack)(const void* self, int64_t n0, int64_t kp0, int64_t kpn, uint32_t* panel);
  const void* self;
};
constexpr int64_t kBf16SlicePairs = 256;
bool bf16_gemm(const float* x, int64_t M, int64_t K, const Bf16PanelSource& w, int64_t N, float* y,
               const float* bias = nullptr, GemmOutput output = GemmOutput::Plain);
// The same product with W already in panels (WeightMatrix::bf16_panels): panel p at
// panels + p·panel_pairs·kBf16PanelCols, panel_pairs a multiple of 16 and >= ceil(K/2).
bool bf16_gemm_panels(const float* x, int64_t M, int64_t K, const uint32_t* panels, int64_t panel_pairs, int64_t N,
                      float* y, const float* bias = nullptr, GemmOutput output = GemmOutput::Plain);
// An MLP on two matrices in panels: hidden = activation(x·W1ᵀ + b1) [M, hidden_width], then
// y = hidden·W2ᵀ + b2 [M, N]. Each finished block of the hidden layer is rounded to bf16, while in
// cache, into the rows the second product reads, instead of a pass of its own over the whole hidden
// layer; the result is bit for bit that of the two bf16_gemm_panels calls. `hidden` is scratch (its
// contents afterwards unspecified): where K is one slice of the blocking, each block of the hidden
// layer stays in a per-thread buffer and the f32 layer is never written. Returns false (nothing
// done) without AVX-512 BF16 (AVX2 keeps the hidden layer in f32: two products) or where AMX is in
// use (its x arrangement differs).
bool bf16_mlp_panels(const float* x, int64_t M, int64_t K, const uint32_t* w1, int64_t w1_pairs, int64_t hidden_width,
                     const float* b1, GemmOutput activation, float* hidden, const uint32_t* w2, int64_t w2_pairs,
                     int64_t N, const float* b2, float* y);

// A gated MLP (Qwen2's, InternLM2's) on BF16 weight rows: y [M, N] = (SiLU(x·Wgᵀ) ⊙ x·Wuᵀ)·Wdᵀ, with
// Wg, Wu [hidden_width, K] and Wd [N, hidden_width]. Gate and up are multiplied together, block by
// block (their panels packed side by side), and each finished block of SiLU(gate) ⊙ up is rounded
// straight into the down product's bf16 operand `hidden` (M rows of hidden_width rounded up to a
// multiple of 32): neither product's f32 output nor the separate activation and rounding passes exist. Bit
// for bit the result of the two products, silu_inplace, the product with up and the bf16 GEMM of the
// down projection. Returns false (nothing done) without AVX-512 BF16, with AMX in use, or where K
// exceeds one slice of the blocking (1024).
bool bf16_gated_mlp(const float* x, int64_t M, int64_t K, const uint16_t* w_gate, const uint16_t* w_up,
                    int64_t hidden_width, uint16_t* hidden, const uint16_t* w_down, int64_t N, float* y);

// One panel of a BF16 matrix W [N, K] for WeightMatrix::bf16_panels: columns [n0, n0 + 32) (zero
// beyond N), pairs [0, pairs) (zero beyond K), on any instruction set.
void pack_bf16_weight_panel(const uint16_t* w, int64_t K, int64_t N, int64_t n0, int64_t pairs, uint32_t* panel);

// The pieces of bf16_gemm, shared with the fused bf16 attention (AVX-512 BF16 only).
// A "pair" is two bf16 values in one 32-bit word (the lower index in the low half), the unit
// vdpbf16ps multiplies. A panel holds kBf16PanelCols columns of a product's right operand,
// pair-interleaved: panel[kp·kBf16PanelCols + lane].
constexpr int64_t kBf16TileRows = 12;
constexpr int64_t kBf16PanelCols = 32;
// Rounds x[0, n) to bf16 (round to nearest even; AVX-512 takes a denormal as zero, as vcvtneps2bf16
// does) into out[0, n_padded), zero beyond n. pack_bf16_panel rounds the same way.
void round_to_bf16(const float* x, int64_t n, int64_t n_padded, uint16_t* out);
// Packs a panel from f32: lane l, pair kp holds (src(l, 2kp), src(l, 2kp + 1)) rounded to bf16,
// where src(l, r) = src[l·lane_stride + r·pair_stride] for l < lanes and r < length, else 0.
void pack_bf16_panel(const float* src, int64_t lane_stride, int64_t pair_stride, int64_t lanes, int64_t length,
                     int64_t pairs, uint32_t* panel);
// The two passes of an online-softmax step over one row of a score block:
// s[i] = s[i]·scale (+ mask[i]) in place, returning the max (mask may be null) — or, without a mask,
// max_value(s, n) and the scale applied inside the exponential;
// out[i] = bf16(exp(scale·s[i] - shift)) for i < n and 0 up to n_padded, returning Σ exp (in f32,
// of the values before rounding; about 6e-5 relative error on AVX-512, where bf16 keeps 2^-9).
float scale_mask_max(float* s, int64_t n, float scale, const float* mask);
float exp_to_bf16(const float* s, int64_t n, float scale, float shift, int64_t n_padded, uint16_t* out);

// The pieces of the fused f32 attention (AVX2). Keys are packed in panels of kF32PanelKeys keys,
// key-minor: panel[e·kF32PanelKeys + lane] = k(lane, e). Tiles have up to kF32TileRows query rows.
constexpr int64_t kF32PanelKeys = 8;
constexpr int64_t kF32TileRows = 6;
// panel[e·8 + l] = keys[l·ld + e] for l < count (<= 8), 0 for the other lanes, e < dim (keys may
// be null when count is 0).
void pack_f32_key_panel(const float* keys, int64_t ld, int64_t count, int64_t dim, float* panel);
// s[r·lds + j] = Σ_e q[r·ldq + e]·panel(j / 8)[e·8 + j mod 8] for r < rows, j < 8·panels (panels 1
// or 2, consecutive, each `dim` rows long). Requires isa() >= Avx2.
void f32_scores_tile(const float* q, int64_t ldq, int64_t rows, const float* panels, int64_t dim, int64_t panel_count,
                     float* s, int64_t lds);
// o[r·ldo + c] += Σ_j p[r·ldp + j]·v[j·ldv + c] for r < rows, j < keys, c < cols (8 or 16).
// Requires isa() >= Avx2.
void f32_values_tile(const float* p, int64_t ldp, int64_t rows, const float* v, int64_t ldv, int64_t keys, float* o,
                     int64_t ldo, int64_t cols);
// c[r·ldc + j] (+)= Σ_kp a[r·lda + kp] · panel[kp][j] over pairs of bf16, for r < rows (<= kBf16BlockRows),
// j < cols (<= kBf16PanelCols). Requires isa() == Avx512. Inside a Bf16TileScope it runs on AMX tiles,
// 16 rows at a time: a's rows up to the next multiple of 16 must be readable, and `pairs` a multiple
// of bf16_tile_pairs' step (zero padded: bf16_tile_pairs gives the padded count).
constexpr int64_t kBf16BlockRows = 48;
void bf16_tile(int64_t rows, const uint32_t* a, int64_t lda, const uint32_t* panel, int64_t pairs, float* c,
               int64_t ldc, int64_t cols, bool accumulate);
// The pairs count bf16_tile wants for `pairs` pairs of data: rounded up to 16 where AMX is in use.
int64_t bf16_tile_pairs(int64_t pairs);
// Configures the calling thread's AMX tiles for bf16_tile for its lifetime (nothing without amx()).
class Bf16TileScope {
 public:
  Bf16TileScope();
  ~Bf16TileScope();
  Bf16TileScope(const Bf16TileScope&) = delete;
  Bf16TileScope& operator=(const Bf16TileScope&) = delete;

 private:
  bool on_;
};

// Quantized weights (Q8_0, Q4_0: 32-value blocks with f16 scales, layout in ops/weight_matrix.h)
// times activations quantized to 8 bits per block (scale amax/127, codes rounded to nearest even).
// Kernels: AVX-512 VNNI, AVX2, scalar reference; results differ between them only by f32 summation order.
constexpr int64_t kQ8Block = 32;
struct QuantizedActivations {
  int64_t rows = 0, k = 0, blocks = 0;
  std::vector<int8_t> codes;   // [rows, blocks·32], zero beyond k
  std::vector<float> scales;   // [rows, blocks]
  std::vector<float> sums;     // [rows, blocks]: scale·Σcodes (removes the weight codes' offset)
  static int64_t blocks_for(int64_t k);
  // Quantizes x[rows, k] (row stride ldx); the buffers grow once and are reused.
  void quantize(const float* x, int64_t rows, int64_t k, int64_t ldx);
};
// y[i·ldy + r] = Σ_b ws[r·ldws + b] · x.scale[i][b] · Σ_j (code(w, r, b, j) − offset) · x.code[i][b][j]
// for r < rows, i < x.rows; w holds rows of Q8_0 (q4 false) or Q4_0 (q4 true) values, row stride ldw bytes.
// Q8_0: AVX-512 VNNI, AVX2, scalar; plain Q4_0 rows: the scalar reference (the SIMD Q4_0 kernels read
// the interleaved layout below, which loaders arrange through ops::kernel_layout).
void quantized_rows_times_q8(bool q4, const uint8_t* w, int64_t ldw, const uint16_t* ws, int64_t ldws, int64_t rows,
                             const QuantizedActivations& x, float* y, int64_t ldy);
// The same for Q4_0 rows interleaved by eight (ops/weight_matrix.h): `groups` groups of 8 rows from w
// (group stride group_bytes), of which the first `rows` are written (the last group may be partial).
// Kernels: AVX-512 VNNI, AVX2 and the scalar reference.
void q4_interleaved_times_q8(const uint8_t* w, int64_t group_bytes, int64_t groups, int64_t rows,
                             const QuantizedActivations& x, float* y, int64_t ldy);

// Softmax steps and element-wise maps, in place (vectorised exp/erf/tanh with ~1e-7 relative error).
// max over x[0, n) (-inf when n = 0); x[i] = exp(scale·x[i] - shift) in place, returning the sum
// (a softmax step: the exponents are <= 0, or a rounding above it; -inf gives 0).
float max_value(const float* x, int64_t n);
float exp_shifted_sum(float* x, int64_t n, float scale, float shift);
// Stable softmax over x[0, visible); x[visible, total) and a row with nothing visible (all -inf)
// become 0. Shared by softmax_rows and attention.
void softmax_inplace(float* x, int64_t visible, int64_t total);
void silu_inplace(float* x, int64_t n);
// gate[i] = SiLU(gate[i])·up[i] (a gated MLP's hidden layer; ops::silu_mul and the fused GEMM share it).
void silu_mul_inplace(float* gate, const float* up, int64_t n);
void sigmoid_inplace(float* x, int64_t n);
void relu_inplace(float* x, int64_t n);
// Rotates the interleaved complex pairs (v[2j], v[2j+1]) of v[0, n) (n even): with the tables
// holding cos(a_j) twice and (−sin(a_j), +sin(a_j)),  v[i] = v[i]·cos_pairs[i] + v[i^1]·sin_pairs[i].
void rotate_pairs(float* v, const float* cos_pairs, const float* sin_pairs, int64_t n);  // max(x, 0); NaN becomes 0
void gelu_erf_inplace(float* x, int64_t n);
void gelu_tanh_inplace(float* x, int64_t n);

}  // namespace sa2va::ops::simd
