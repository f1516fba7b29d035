// Large-M product y[M,N] = x[M,K] · Wᵀ with BF16 weights W[N,K] on AVX-512 BF16 (vdpbf16ps) or,
// where the CPU has them, AMX tiles (TDPBF16PS): x is rounded to bf16 once; each instruction
// multiplies bf16 pairs and accumulates in f32. On AVX2 the same blocking and panels run with x in
// f32, the panels widened in registers for f32 FMA (6-row tiles; see "AVX2" below).
//
// Blocking (per task: a range of output columns, or of rows when W has few columns):
//   for each NC-column block, for each slice of K (512 pairs: K up to 1024 in one slice):
//     pack W into 32-column panels, word-interleaved: panel[kp][lane] = (W[n][2kp], W[n][2kp+1])
//     for each row block of x: for each panel: a rows×32 tile += x pairs · panel
// A packed block (at most NC·512·4 bytes = 512 KiB) stays in L2; one x micro-panel in L1. Each slice
// after the first reloads the block of C, so K = 1024 as one slice rather than two of 256 pairs made
// the 1025x1024x4096 product 1.04-1.11x faster (bench/README.md).
// Row blocks: 12 rows in zmm accumulators (AVX-512), or 32 rows in four AMX accumulator tiles
// (rows 0-15 | 16-31 × columns 0-15 | 16-31), whose operands are two 16-row tiles of x pairs and the
// panel's two 16-column halves read in place (a panel row of 16 pairs is one 64-byte tile row), or
// on AVX2 6 rows × 16 columns in ymm accumulators, a panel's halves one after the other, with column
// blocks of half the width (256 KiB).
#include <algorithm>
#include <array>
#include <cstring>
#include <utility>
#include <vector>

#include "core/dtype.h"
#include "core/tensor.h"
#include "core/threadpool.h"
#include "ops/cpu/simd.h"
#include "ops/cpu/simd_x86.h"

namespace sa2va::ops::simd {
namespace {

constexpr int64_t kMR = kBf16TileRows;   // rows of the register tile
constexpr int64_t kNR = kBf16PanelCols;  // columns of the register tile (two zmm of f32)
constexpr int64_t kKC = kBf16SlicePairs;  // k pairs a panel source packs at a time
constexpr int64_t kNC = 256;  // columns per packed block
// k pairs per slice of the GEMM's blocking (a packed block of kNC columns: 512 KiB).
constexpr int64_t kMaxSlicePairs = 2 * kKC;

// 16 rows x 16 pairs of W (rows row_bytes apart from `rows`) transposed into 16 panel rows of 16 lanes
// (dst[j·kNR + i] = pair j of row i): 16 loads, 64 register shuffles, 16 stores.
SA2VA_AVX512 void transpose_16_pairs(const char* rows, int64_t row_bytes, uint32_t* dst) {
  __m512i a[16], b[16], c[16];
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) a[i] = _mm512_loadu_si512(rows + i * row_bytes);
  // Within each 128-bit lane L: b[2i], b[2i+1] interleave rows 2i and 2i+1; c[4i+k] holds pair 4L+k
  // of rows 4i..4i+3.
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    b[2 * i] = _mm512_unpacklo_epi32(a[2 * i], a[2 * i + 1]);
    b[2 * i + 1] = _mm512_unpackhi_epi32(a[2 * i], a[2 * i + 1]);
  }
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    c[4 * i] = _mm512_unpacklo_epi64(b[4 * i], b[4 * i + 2]);
    c[4 * i + 1] = _mm512_unpackhi_epi64(b[4 * i], b[4 * i + 2]);
    c[4 * i + 2] = _mm512_unpacklo_epi64(b[4 * i + 1], b[4 * i + 3]);
    c[4 * i + 3] = _mm512_unpackhi_epi64(b[4 * i + 1], b[4 * i + 3]);
  }
  // A 4x4 transpose of 128-bit lanes gathers pair 4L+k of all 16 rows.
#pragma GCC unroll 4
  for (int k = 0; k < 4; ++k) {
    const __m512i d0 = _mm512_shuffle_i32x4(c[k], c[4 + k], 0x44), d1 = _mm512_shuffle_i32x4(c[k], c[4 + k], 0xEE);
    const __m512i d2 = _mm512_shuffle_i32x4(c[8 + k], c[12 + k], 0x44);
    const __m512i d3 = _mm512_shuffle_i32x4(c[8 + k], c[12 + k], 0xEE);
    _mm512_storeu_si512(dst + k * kNR, _mm512_shuffle_i32x4(d0, d2, 0x88));
    _mm512_storeu_si512(dst + (4 + k) * kNR, _mm512_shuffle_i32x4(d0, d2, 0xDD));
    _mm512_storeu_si512(dst + (8 + k) * kNR, _mm512_shuffle_i32x4(d1, d3, 0x88));
    _mm512_storeu_si512(dst + (12 + k) * kNR, _mm512_shuffle_i32x4(d1, d3, 0xDD));
  }
}

// A whole panel (32 rows of W, pairs inside the rows): 16 pairs at a time by register transposes of
// each half's rows, the last few pairs by two 16-lane gathers each.
SA2VA_AVX512 void pack_panel_avx512(const uint16_t* w, int64_t K, int64_t n0, int64_t kp0, int64_t kpn, uint32_t* dst) {
  const __m512i lanes = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                           _mm512_set1_epi32(static_cast<int>(2 * K)));  // byte offsets of 16 rows
  const char* base0 = reinterpret_cast<const char*>(w + n0 * K + 2 * kp0);
  const char* base1 = base0 + 16 * 2 * K;
  int64_t kp = 0;
  for (; kp + 16 <= kpn; kp += 16) {
    transpose_16_pairs(base0 + 4 * kp, 2 * K, dst + kp * kNR);
    transpose_16_pairs(base1 + 4 * kp, 2 * K, dst + kp * kNR + 16);
  }
  for (; kp < kpn; ++kp) {
    _mm512_storeu_si512(dst + kp * kNR, _mm512_i32gather_epi32(lanes, base0 + 4 * kp, 1));
    _mm512_storeu_si512(dst + kp * kNR + 16, _mm512_i32gather_epi32(lanes, base1 + 4 * kp, 1));
  }
}

// AVX2: 8 pairs x 8 rows at a time by register transposes, the last few pairs word by word.
SA2VA_AVX2 void pack_panel_avx2(const uint16_t* w, int64_t K, int64_t n0, int64_t kp0, int64_t kpn, uint32_t* dst) {
  const char* base = reinterpret_cast<const char*>(w + n0 * K + 2 * kp0);
  int64_t kp = 0;
  for (; kp + 8 <= kpn; kp += 8)
    for (int64_t lane = 0; lane < kNR; lane += 8)
      transpose_8x8_words(base + lane * 2 * K + 4 * kp, 2 * K, reinterpret_cast<float*>(dst + kp * kNR + lane), kNR);
  for (; kp < kpn; ++kp)
    for (int64_t lane = 0; lane < kNR; ++lane) std::memcpy(dst + kp * kNR + lane, base + lane * 2 * K + 4 * kp, 4);
}

// Packs columns [n0, n0 + kNR) (zero beyond N) and pairs [kp0, kp0 + kpn) of W.
void pack_panel(const uint16_t* w, int64_t K, int64_t N, int64_t n0, int64_t kp0, int64_t kpn, uint32_t* dst) {
  const bool whole = n0 + kNR <= N && 2 * (kp0 + kpn) <= K;  // every lane a row, every pair inside it
  if (isa() == Isa::Avx512 && whole && 32 * 2 * K < (int64_t{1} << 31))
    return pack_panel_avx512(w, K, n0, kp0, kpn, dst);
  if (isa() == Isa::Avx2 && whole) return pack_panel_avx2(w, K, n0, kp0, kpn, dst);
  for (int64_t lane = 0; lane < kNR; ++lane) {
    const int64_t n = n0 + lane;
    if (n >= N) {
      for (int64_t kp = 0; kp < kpn; ++kp) dst[kp * kNR + lane] = 0;
      continue;
    }
    const uint16_t* row = w + n * K;
    const int64_t full = std::min(kpn, K / 2 - kp0);  // pairs with both halves inside the row
    for (int64_t kp = 0; kp < full; ++kp) {
      uint32_t word;
      std::memcpy(&word, row + 2 * (kp0 + kp), 4);
      dst[kp * kNR + lane] = word;
    }
    for (int64_t kp = std::max<int64_t>(full, 0); kp < kpn; ++kp)  // odd K: last pair is (W[n][K-1], 0)
      dst[kp * kNR + lane] = 2 * (kp0 + kp) < K ? row[2 * (kp0 + kp)] : 0;
  }
}

// c[r][:] (+)= Σ_kp a[r][kp] · panel[kp][:] for r < rows (rows <= kMR), columns < cols; where c is
// not accumulated, the sums start from bias[:] when given (saving a pass over c to add it).
// Wide: both 16-column halves of the panel; otherwise the first only (cols <= 16: a last panel of
// 8 or 16 columns, as Hiera's head size 72 and widths 144 and 432 leave, costs half a tile).
template <int MR, bool Wide>
SA2VA_AVX512 void tile_kernel(const uint32_t* a, int64_t lda, const uint32_t* panel, int64_t kpn, float* c,
                              int64_t ldc, int64_t cols, bool accumulate, const float* bias) {
  const __mmask16 m0 = cols >= 16 ? __mmask16(0xffff) : __mmask16((1u << cols) - 1);
  const __mmask16 m1 = cols >= 32 ? __mmask16(0xffff) : cols <= 16 ? __mmask16(0) : __mmask16((1u << (cols - 16)) - 1);
  const __m512 start0 = bias && !accumulate ? _mm512_maskz_loadu_ps(m0, bias) : _mm512_setzero_ps();
  const __m512 start1 = bias && !accumulate ? _mm512_maskz_loadu_ps(m1, bias + 16) : _mm512_setzero_ps();
  __m512 acc0[MR], acc1[MR];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
    acc0[r] = start0;
    acc1[r] = start1;
  }
  for (int64_t kp = 0; kp < kpn; ++kp) {
    const __m512bh b0 = (__m512bh)_mm512_loadu_si512(panel + kp * kNR);
    const __m512bh b1 = Wide ? (__m512bh)_mm512_loadu_si512(panel + kp * kNR + 16) : b0;
  #pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
      const __m512bh av = (__m512bh)_mm512_set1_epi32(static_cast<int>(a[r * lda + kp]));
      acc0[r] = _mm512_dpbf16_ps(acc0[r], av, b0);
      if constexpr (Wide) acc1[r] = _mm512_dpbf16_ps(acc1[r], av, b1);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
    float* cr = c + r * ldc;
    if (accumulate) {
      acc0[r] = _mm512_add_ps(acc0[r], _mm512_maskz_loadu_ps(m0, cr));
      if constexpr (Wide) acc1[r] = _mm512_add_ps(acc1[r], _mm512_maskz_loadu_ps(m1, cr + 16));
    }
    _mm512_mask_storeu_ps(cr, m0, acc0[r]);
    if constexpr (Wide) _mm512_mask_storeu_ps(cr + 16, m1, acc1[r]);
  }
}

using TileFn = void (*)(const uint32_t*, int64_t, const uint32_t*, int64_t, float*, int64_t, int64_t, bool,
                       const float*);
template <bool Wide, int... R>
constexpr std::array<TileFn, sizeof...(R)> make_tiles(std::integer_sequence<int, R...>) {
  return {tile_kernel<R + 1, Wide>...};
}
// kTiles[rows - 1] handles a block of `rows` rows, kHalfTiles the same where cols <= 16.
constexpr auto kTiles = make_tiles<true>(std::make_integer_sequence<int, kMR>{});
constexpr auto kHalfTiles = make_tiles<false>(std::make_integer_sequence<int, kMR>{});
TileFn tile_for(int64_t rows, int64_t cols) { return (cols > 16 ? kTiles : kHalfTiles)[rows - 1]; }

// ---------------------------------------------------------------------------- AVX2
// Without AVX-512 BF16, x stays f32 and the panels are widened in registers: the 8 words of a panel
// row's quarter give two vectors of exact f32 weights, the low halves shifted up (column 2kp) and
// the high halves masked (2kp + 1): 4 integer ops per 24 FMAs of a 6 x 16 tile. The sums are those of
// f32 products of x with the bf16 weights, as sgemm on widened rows gives, in another order.
constexpr int64_t kAvx2MR = 6;  // rows of the register tile: 12 accumulators of 8 columns

SA2VA_AVX2 inline __m256i lanes_below(int64_t n) {  // mask of the first n of 8 lanes
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// c[r][:] (+)= Σ_k a[r][k] · W[k][:] for r < MR over 16 columns (a half of a panel): as tile_kernel,
// with x as f32 rows (a[r·lda + 2kp + half], zeros past K) and cols <= 16. Where cols <= 8 the upper
// 8 columns are computed (zero weights) but neither loaded nor stored: no masked access lies wholly
// past the end of bias or c (see round_to_bf16_avx512).
template <int MR>
SA2VA_AVX2 void half_panel_avx2(const float* a, int64_t lda, const uint32_t* half, int64_t kpn, float* c,
                                int64_t ldc, int64_t cols, bool accumulate, const float* bias) {
  const __m256i m0 = lanes_below(cols), m1 = lanes_below(cols - 8);
  const bool upper = cols > 8;
  const __m256 start0 = bias && !accumulate ? _mm256_maskload_ps(bias, m0) : _mm256_setzero_ps();
  const __m256 start1 = bias && !accumulate && upper ? _mm256_maskload_ps(bias + 8, m1) : _mm256_setzero_ps();
  __m256 acc0[MR], acc1[MR];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
    acc0[r] = start0;
    acc1[r] = start1;
  }
  const __m256i high = _mm256_set1_epi32(static_cast<int>(0xffff0000u));
  for (int64_t kp = 0; kp < kpn; ++kp) {
    const __m256i raw0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(half + kp * kNR));
    const __m256i raw1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(half + kp * kNR + 8));
    const __m256 even0 = _mm256_castsi256_ps(_mm256_slli_epi32(raw0, 16));
    const __m256 even1 = _mm256_castsi256_ps(_mm256_slli_epi32(raw1, 16));
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m256 av = _mm256_broadcast_ss(a + r * lda + 2 * kp);
      acc0[r] = _mm256_fmadd_ps(av, even0, acc0[r]);
      acc1[r] = _mm256_fmadd_ps(av, even1, acc1[r]);
    }
    const __m256 odd0 = _mm256_castsi256_ps(_mm256_and_si256(raw0, high));
    const __m256 odd1 = _mm256_castsi256_ps(_mm256_and_si256(raw1, high));
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m256 av = _mm256_broadcast_ss(a + r * lda + 2 * kp + 1);
      acc0[r] = _mm256_fmadd_ps(av, odd0, acc0[r]);
      acc1[r] = _mm256_fmadd_ps(av, odd1, acc1[r]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
    float* cr = c + r * ldc;
    if (cols >= 16) {
      if (accumulate) {
        acc0[r] = _mm256_add_ps(acc0[r], _mm256_loadu_ps(cr));
        acc1[r] = _mm256_add_ps(acc1[r], _mm256_loadu_ps(cr + 8));
      }
      _mm256_storeu_ps(cr, acc0[r]);
      _mm256_storeu_ps(cr + 8, acc1[r]);
    } else {
      if (accumulate) acc0[r] = _mm256_add_ps(acc0[r], _mm256_maskload_ps(cr, m0));
      _mm256_maskstore_ps(cr, m0, acc0[r]);
      if (!upper) continue;
      if (accumulate) acc1[r] = _mm256_add_ps(acc1[r], _mm256_maskload_ps(cr + 8, m1));
      _mm256_maskstore_ps(cr + 8, m1, acc1[r]);
    }
  }
}

// A whole panel (cols <= 32) as its two halves, each a pass over the rows' x (in L1).
template <int MR>
void panel_tile_avx2(const float* a, int64_t lda, const uint32_t* panel, int64_t kpn, float* c, int64_t ldc,
                     int64_t cols, bool accumulate, const float* bias) {
  for (int64_t h = 0; h < 2 && 16 * h < cols; ++h)
    half_panel_avx2<MR>(a, lda, panel + 16 * h, kpn, c + 16 * h, ldc, std::min<int64_t>(16, cols - 16 * h), accumulate,
                        bias ? bias + 16 * h : nullptr);
}

using Avx2TileFn = void (*)(const float*, int64_t, const uint32_t*, int64_t, float*, int64_t, int64_t, bool,
                            const float*);
constexpr Avx2TileFn kAvx2Tiles[kAvx2MR] = {panel_tile_avx2<1>, panel_tile_avx2<2>, panel_tile_avx2<3>,
                                            panel_tile_avx2<4>, panel_tile_avx2<5>, panel_tile_avx2<6>};

// Whole blocks of 32 values by plain loads and stores; masks only for the last block of x and the
// padding after it (a mask worked out at every step made this 1.4-3x slower on AMD Zen 5, and it is
// a few per cent of an image answer: bench/README.md). Masked loads are issued only where some lane
// is inside x: a fully masked load whose address lies past the buffer (on a page that may not be
// mapped) costs a microcode assist on some cores.
SA2VA_AVX512 void round_to_bf16_avx512(const float* x, int64_t n, int64_t n_padded, uint16_t* out) {
  const int64_t whole = std::min(n, n_padded);
  int64_t k = 0;
  for (; k + 32 <= whole; k += 32)  // cvtne2ps_pbh(b, a): bf16(a) in elements 0-15, bf16(b) in 16-31
    _mm512_storeu_si512(out + k, (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + k + 16), _mm512_loadu_ps(x + k)));
  for (; k < n_padded; k += 16) {
    const int64_t valid = std::min<int64_t>(16, n - k);
    const __mmask16 mask = valid >= 16 ? __mmask16(0xffff) : valid <= 0 ? __mmask16(0) : __mmask16((1u << valid) - 1);
    const __m256bh v = _mm512_cvtneps_pbh(mask ? _mm512_maskz_loadu_ps(mask, x + k) : _mm512_setzero_ps());
    const int64_t store = std::min<int64_t>(16, n_padded - k);
    _mm256_mask_storeu_epi16(out + k, static_cast<__mmask16>((1u << store) - 1), (__m256i)v);
  }
}

// ---------------------------------------------------------------------------- AMX
constexpr int64_t kAmxRows = 32;   // rows of x per AMX block (two tiles of 16)
constexpr int64_t kAmxPairs = 16;  // pairs per tile step (one 64-byte tile row)
constexpr int64_t kAmxPackedWords = int64_t{1} << 18;  // 1 MiB of packed panels per column block (L2)

struct alignas(64) TileConfig {  // the layout ldtilecfg reads (palette 1)
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t bytes_per_row[16] = {};
  uint8_t rows[16] = {};
};

// Tiles 0-3 accumulate, 4-5 hold x, 6-7 the panel's halves: all 16 rows of 64 bytes.
SA2VA_AMX void amx_begin() {
  TileConfig config;
  for (int t = 0; t < 8; ++t) {
    config.bytes_per_row[t] = 64;
    config.rows[t] = 16;
  }
  // ldtilecfg reads the bytes through an asm the compiler cannot see into: make them land first
  __asm__ volatile("" : : "r"(&config) : "memory");
  _tile_loadconfig(&config);
}
SA2VA_AMX void amx_end() { _tile_release(); }

// c[32][32] (+)= Σ_kp a(r, kp) · panel[kp][:], kpn a multiple of 16; all of c in bounds (row stride
// ldc). a: the row block's tile steps from the first one, [step][32 rows][16 pairs].
SA2VA_AMX void amx_block(const uint32_t* a, const uint32_t* panel, int64_t kpn, float* c, int64_t ldc, bool accumulate) {
  constexpr int64_t a_stride = kAmxPairs * 4, b_stride = kNR * 4;
  const int64_t c_stride = ldc * 4;
  if (accumulate) {
    _tile_loadd(0, c, c_stride);
    _tile_loadd(1, c + 16, c_stride);
    _tile_loadd(2, c + 16 * ldc, c_stride);
    _tile_loadd(3, c + 16 * ldc + 16, c_stride);
  } else {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
  }
  for (int64_t kp = 0; kp < kpn; kp += kAmxPairs, a += kAmxRows * kAmxPairs) {
    _tile_loadd(4, a, a_stride);
    _tile_loadd(5, a + 16 * kAmxPairs, a_stride);
    _tile_loadd(6, panel + kp * kNR, b_stride);
    _tile_loadd(7, panel + kp * kNR + 16, b_stride);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, c, c_stride);
  _tile_stored(1, c + 16, c_stride);
  _tile_stored(2, c + 16 * ldc, c_stride);
  _tile_stored(3, c + 16 * ldc + 16, c_stride);
}

// Where tile step `step` of row block `block` starts in the AMX arrangement of x (in pairs).
inline int64_t amx_step_offset(int64_t block, int64_t step, int64_t lda) {
  return block * kAmxRows * lda + step * kAmxRows * kAmxPairs;
}

// ---------------------------------------------------------------------------- blocking
struct GemmOperands {
  // x as bf16 pairs, rows padded to kAmxRows: row stride lda, or AMX's arrangement (null with avx2_x)
  const uint32_t* a;
  int64_t lda, M, pairs;  // lda in pairs, or floats with avx2_x
  const Bf16PanelSource* w;  // packs W's panels; or
  const uint32_t* panels;    // W already in panels of panel_pairs pairs (read in place)
  int64_t panel_pairs;
  int64_t N;
  float* y;
  const float* bias;  // where the first slice of K starts a block of C (AMX: added once the block is complete)
  GemmOutput output;  // Relu, GeluErf: applied to a block of rows x columns once its last slice is done
  bool amx;
  // When set (not with AMX): each finished block of y is also rounded to bf16 into these rows
  // (rounded_ld elements apart), the x operand of a following product.
  uint16_t* rounded = nullptr;
  int64_t rounded_ld = 0;
  // With `rounded`, where K is one slice: y is not written; each block of C lives in a per-thread
  // buffer from its tile to its rounding (the f32 hidden layer of an MLP never goes out to memory).
  bool rounded_only = false;
  // A gated MLP's first half (with rounded_only, K one slice): W is the gate, `up` the up projection
  // of the same shape; the block rounded into `rounded` is SiLU(x·Wᵀ) ⊙ x·upᵀ.
  const Bf16PanelSource* up = nullptr;
  // Instead of `a`, on AVX2: x as f32 rows lda floats apart, each readable up to 2·pairs (zeros past
  // K), multiplied by the AVX2 tiles (no AMX, rounding or gated MLP).
  const float* avx2_x = nullptr;
};

SA2VA_AVX512 void add_bias(float* c, int64_t ldc, int64_t rows, const float* bias, int64_t cols) {
  const __mmask16 m0 = cols >= 16 ? __mmask16(0xffff) : __mmask16((1u << cols) - 1);
  const __mmask16 m1 = cols >= 32 ? __mmask16(0xffff) : cols <= 16 ? __mmask16(0) : __mmask16((1u << (cols - 16)) - 1);
  const __m512 b0 = _mm512_maskz_loadu_ps(m0, bias), b1 = _mm512_maskz_loadu_ps(m1, bias + 16);
  for (int64_t r = 0; r < rows; ++r) {
    float* cr = c + r * ldc;
    _mm512_mask_storeu_ps(cr, m0, _mm512_add_ps(_mm512_maskz_loadu_ps(m0, cr), b0));
    _mm512_mask_storeu_ps(cr + 16, m1, _mm512_add_ps(_mm512_maskz_loadu_ps(m1, cr + 16), b1));
  }
}

// The output function over rows [m0, m0 + rows) x columns [n0, n1) of y, just completed (in L1/L2):
// c is where row m0, column n0 of the block lies, ldc apart (y itself, or the per-thread block).
void finish_rows(const GemmOperands& op, float* c, int64_t ldc, int64_t m0, int64_t rows, int64_t n0, int64_t n1,
                 const float* up = nullptr) {
  if (up)  // the gated MLP: c = SiLU(c) ⊙ up (the block of up laid out as c)
    for (int64_t r = 0; r < rows; ++r) silu_mul_inplace(c + r * ldc, up + r * ldc, n1 - n0);
  if (op.output != GemmOutput::Plain) {
    const auto apply = op.output == GemmOutput::Relu ? relu_inplace : gelu_erf_inplace;
    for (int64_t r = 0; r < rows; ++r) apply(c + r * ldc, n1 - n0);
  }
  if (op.rounded)  // n0 is a multiple of 32: whole pairs
    for (int64_t r = 0; r < rows; ++r)
      round_to_bf16_avx512(c + r * ldc, n1 - n0, n1 - n0, op.rounded + (m0 + r) * op.rounded_ld + n0);
}

// Pairs [kp0, kp0 + kpn) of columns [n0, n0 + kNR) of W from its source, zeros after them up to
// padded_pairs (the AMX steps' whole 16 pairs).
void pack_from_source(const Bf16PanelSource& w, int64_t n0, int64_t kp0, int64_t kpn, int64_t padded_pairs,
                      uint32_t* panel) {
  for (int64_t j = 0; j < kpn; j += kKC)  // the source packs at most kKC pairs at a time
    w.pack(w.self, n0, kp0 + j, std::min(kKC, kpn - j), panel + j * kNR);
  std::memset(panel + kpn * kNR, 0, static_cast<size_t>((padded_pairs - kpn) * kNR) * 4);
}

// Rows [m_begin, m_end) (m_begin a multiple of kAmxRows with AMX) times panels [p_begin, p_end) of W.
void gemm_blocks(const GemmOperands& op, int64_t m_begin, int64_t m_end, int64_t p_begin, int64_t p_end) {
  const int64_t N = op.N;
  // AMX keeps a block of C in its tiles over the whole of K (one store, no reload), so its slice is
  // all of K and its column block as wide as fits kAmxPackedWords.
  // Otherwise slices of kMaxSlicePairs (each slice after the first reloads the block of C), which
  // start on whole source slices (kKC).
  const int64_t slice = op.amx ? op.lda : std::min(op.pairs, kMaxSlicePairs);
  // A gated MLP packs two blocks (gate and up) of half the width: together as large as one.
  // AVX2 keeps the block at half the size (256 KiB: the L2 of the AVX2 cores it was measured on is
  // 512 KiB, which a 512 KiB block and the tiles' C overflow).
  const int64_t nc = op.amx ? std::clamp(kAmxPackedWords / slice / kNR * kNR, kNR, kNC)
                     : op.up || op.avx2_x ? kNC / 2
                                          : kNC;
  const int64_t packed_words = (op.up ? 2 : 1) * nc * slice;
  // The thread's packing buffer, kept between calls: no allocation, zeroing or page faults per call.
  thread_local std::vector<uint32_t> packed;
  if (!op.panels && packed.size() < static_cast<size_t>(packed_words)) packed.resize(static_cast<size_t>(packed_words));
  alignas(64) float edge[kAmxRows * kNR];  // an AMX block that overhangs M or N
  const bool through_block = op.rounded_only && !op.amx && slice >= op.pairs;
  alignas(64) float block_c[kMR * kNC];
  alignas(64) float block_up[kMR * kNC];  // the gated MLP's up block, laid out as block_c
  const Bf16TileScope tiles;  // AMX tiles configured (already, inside a scope of the caller's)
  for (int64_t nb = p_begin * kNR; nb < std::min(p_end * kNR, N); nb += nc) {
    const int64_t nb_end = std::min({nb + nc, p_end * kNR, N});
    const int64_t block_panels = (nb_end - nb + kNR - 1) / kNR;
    for (int64_t kp0 = 0; kp0 < op.pairs; kp0 += slice) {
      const int64_t kpn = std::min(slice, op.pairs - kp0);
      // AMX steps 16 pairs at a time: the panel's rows beyond kpn are zeros
      const int64_t panel_pairs = op.amx ? (kpn + kAmxPairs - 1) / kAmxPairs * kAmxPairs : kpn;
      // Panel p of the block for this slice: packed here, or where W's panels lie.
      const uint32_t* base = op.panels ? op.panels + (nb / kNR * op.panel_pairs + kp0) * kNR : packed.data();
      const int64_t panel_stride = (op.panels ? op.panel_pairs : panel_pairs) * kNR;
      for (int64_t p = 0; !op.panels && p < block_panels; ++p)
        pack_from_source(*op.w, nb + p * kNR, kp0, kpn, panel_pairs, packed.data() + p * panel_stride);
      uint32_t* const up_base = op.up ? packed.data() + nc * slice : nullptr;  // the up block after the gate's
      for (int64_t p = 0; op.up && p < block_panels; ++p)
        pack_from_source(*op.up, nb + p * kNR, kp0, kpn, panel_pairs, up_base + p * panel_stride);
      const bool accumulate = kp0 > 0;
      if (op.amx) {  // (one slice: the last)
        for (int64_t m0 = m_begin; m0 < m_end; m0 += kAmxRows) {
          const int64_t rows = std::min(kAmxRows, m_end - m0);
          for (int64_t p = 0; p < block_panels; ++p) {
            const int64_t n0 = nb + p * kNR, cols = std::min(kNR, nb_end - n0);
            const uint32_t* panel = base + p * panel_stride;
            float* c = op.y + m0 * N + n0;
            const uint32_t* a = op.a + amx_step_offset(m0 / kAmxRows, kp0 / kAmxPairs, op.lda);
            if (rows == kAmxRows && cols == kNR) {
              amx_block(a, panel, panel_pairs, c, N, accumulate);
            } else {
              if (accumulate)
                for (int64_t r = 0; r < rows; ++r) std::memcpy(edge + r * kNR, c + r * N, static_cast<size_t>(cols) * 4);
              amx_block(a, panel, panel_pairs, edge, kNR, accumulate);
              for (int64_t r = 0; r < rows; ++r) std::memcpy(c + r * N, edge + r * kNR, static_cast<size_t>(cols) * 4);
            }
            if (op.bias) add_bias(c, N, rows, op.bias + n0, cols);
          }
          finish_rows(op, op.y + m0 * N + nb, N, m0, rows, nb, nb_end);
        }
        continue;
      }
      if (op.avx2_x) {
        for (int64_t m0 = m_begin; m0 < m_end; m0 += kAvx2MR) {
          const Avx2TileFn tile = kAvx2Tiles[std::min(kAvx2MR, m_end - m0) - 1];
          for (int64_t p = 0; p < block_panels; ++p) {
            const int64_t n0 = nb + p * kNR;
            tile(op.avx2_x + m0 * op.lda + 2 * kp0, op.lda, base + p * panel_stride, kpn, op.y + m0 * N + n0, N,
                 std::min(kNR, nb_end - n0), accumulate, op.bias ? op.bias + n0 : nullptr);
          }
          if (kp0 + kpn >= op.pairs) finish_rows(op, op.y + m0 * N + nb, N, m0, std::min(kAvx2MR, m_end - m0), nb, nb_end);
        }
        continue;
      }
      for (int64_t m0 = m_begin; m0 < m_end; m0 += kMR) {
        const int64_t rows = std::min(kMR, m_end - m0);
        float* const c = through_block ? block_c : op.y + m0 * N + nb;
        const int64_t ldc = through_block ? kNC : N;
        for (int64_t p = 0; p < block_panels; ++p) {
          const int64_t n0 = nb + p * kNR, cols = std::min(kNR, nb_end - n0);
          const TileFn tile = tile_for(rows, cols);
          tile(op.a + m0 * op.lda + kp0, op.lda, base + p * panel_stride, kpn, c + p * kNR, ldc, cols, accumulate,
               op.bias ? op.bias + n0 : nullptr);
          if (op.up)  // (through_block: one slice, no bias)
            tile(op.a + m0 * op.lda + kp0, op.lda, up_base + p * panel_stride, kpn, block_up + p * kNR, ldc, cols,
                 false, nullptr);
        }
        if (kp0 + kpn >= op.pairs) finish_rows(op, c, ldc, m0, rows, nb, nb_end, op.up ? block_up : nullptr);
      }
    }
  }
}

}  // namespace

void round_to_bf16(const float* x, int64_t n, int64_t n_padded, uint16_t* out) {
  if (isa() == Isa::Avx512) return round_to_bf16_avx512(x, n, n_padded, out);
  for (int64_t i = 0; i < n_padded; ++i) out[i] = i < n ? f32_to_bf16(x[i]) : 0;
}

namespace {
// pack_bf16_panel where each lane's values are contiguous (pair_stride 1: weight rows, keys): every
// lane rounded into a row of pairs, then the rows transposed by gathers.
SA2VA_AVX512 void pack_lanes_contiguous(const float* src, int64_t lane_stride, int64_t lanes, int64_t length,
                                        int64_t pairs, uint32_t* panel) {
  thread_local std::vector<uint32_t> rows;
  if (rows.size() < static_cast<size_t>(kNR * pairs)) rows.resize(static_cast<size_t>(kNR * pairs));
  for (int64_t l = 0; l < kNR; ++l) {
    uint16_t* row = reinterpret_cast<uint16_t*>(rows.data() + l * pairs);
    if (l < lanes) round_to_bf16_avx512(src + l * lane_stride, std::min(length, 2 * pairs), 2 * pairs, row);
    else std::memset(row, 0, static_cast<size_t>(pairs) * 4);
  }
  const __m512i index = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                           _mm512_set1_epi32(static_cast<int>(pairs)));
  for (int64_t kp = 0; kp < pairs; ++kp) {
    _mm512_storeu_si512(panel + kp * kNR, _mm512_i32gather_epi32(index, rows.data() + kp, 4));
    _mm512_storeu_si512(panel + kp * kNR + 16, _mm512_i32gather_epi32(index, rows.data() + 16 * pairs + kp, 4));
  }
}

// pack_bf16_panel where the lanes are contiguous (lane_stride 1: values): per pair, the two rows'
// 32 lanes rounded and interleaved.
SA2VA_AVX512 void pack_pairs_of_rows(const float* src, int64_t pair_stride, int64_t lanes, int64_t length,
                                     int64_t pairs, uint32_t* panel) {
  // cvtne2ps_pbh(b, a) puts bf16(a) in elements 0-15 and bf16(b) in 16-31; word 2l takes a[l], 2l+1 b[l]
  const __m512i interleave = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7,
                                              22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  for (int64_t kp = 0; kp < pairs; ++kp) {
    const int64_t r = 2 * kp;
    for (int64_t half = 0; half < 2; ++half) {
      const int64_t valid = std::clamp<int64_t>(lanes - 16 * half, 0, 16);
      const __mmask16 m = valid >= 16 ? __mmask16(0xffff) : __mmask16((1u << valid) - 1);
      const __mmask16 m0 = r < length ? m : __mmask16(0), m1 = r + 1 < length ? m : __mmask16(0);
      const float* p = src + r * pair_stride + 16 * half;  // rows past `length`: no load (see round_to_bf16_avx512)
      const __m512 lo = m0 ? _mm512_maskz_loadu_ps(m0, p) : _mm512_setzero_ps();
      const __m512 hi = m1 ? _mm512_maskz_loadu_ps(m1, p + pair_stride) : _mm512_setzero_ps();
      const __m512i both = (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
      _mm512_storeu_si512(panel + kp * kNR + 16 * half, _mm512_permutexvar_epi16(interleave, both));
    }
  }
}
}  // namespace

void pack_bf16_panel(const float* src, int64_t lane_stride, int64_t pair_stride, int64_t lanes, int64_t length,
                     int64_t pairs, uint32_t* panel) {
  if (isa() == Isa::Avx512 && pair_stride == 1 && int64_t{4} * kNR * pairs < (int64_t{1} << 31))
    return pack_lanes_contiguous(src, lane_stride, lanes, length, pairs, panel);
  if (isa() == Isa::Avx512 && lane_stride == 1) return pack_pairs_of_rows(src, pair_stride, lanes, length, pairs, panel);
  for (int64_t kp = 0; kp < pairs; ++kp) {
    const int64_t r = 2 * kp;
    uint32_t* dst = panel + kp * kNR;
    for (int64_t l = 0; l < kNR; ++l) {
      if (l >= lanes || r >= length) {
        dst[l] = 0;
        continue;
      }
      const float* p = src + l * lane_stride + r * pair_stride;
      const uint32_t lo = f32_to_bf16(p[0]);
      const uint32_t hi = r + 1 < length ? f32_to_bf16(p[pair_stride]) : 0;
      dst[l] = lo | (hi << 16);
    }
  }
}

namespace {
thread_local bool t_tiles_configured = false;

// bf16_tile on AMX: 16 rows at a time, both halves of the panel (C in tiles 0-1, a in 4, the
// halves in 6-7); C goes through `edge` where it overhangs rows or cols.
SA2VA_AMX void bf16_tile_amx(int64_t rows, const uint32_t* a, int64_t lda, const uint32_t* panel, int64_t pairs,
                             float* c, int64_t ldc, int64_t cols, bool accumulate) {
  alignas(64) float edge[16 * kNR];
  for (int64_t r0 = 0; r0 < rows; r0 += 16) {
    const int64_t n = std::min<int64_t>(16, rows - r0);
    const bool whole = n == 16 && cols == kNR;
    float* out = whole ? c + r0 * ldc : edge;
    const int64_t out_stride = whole ? ldc * 4 : kNR * 4;
    if (accumulate) {
      if (!whole)
        for (int64_t r = 0; r < n; ++r) std::memcpy(edge + r * kNR, c + (r0 + r) * ldc, static_cast<size_t>(cols) * 4);
      _tile_loadd(0, out, out_stride);
      _tile_loadd(1, out + 16, out_stride);
    } else {
      _tile_zero(0);
      _tile_zero(1);
    }
    for (int64_t kp = 0; kp < pairs; kp += kAmxPairs) {
      _tile_loadd(4, a + r0 * lda + kp, lda * 4);
      _tile_loadd(6, panel + kp * kNR, kNR * 4);
      _tile_loadd(7, panel + kp * kNR + 16, kNR * 4);
      _tile_dpbf16ps(0, 4, 6);
      _tile_dpbf16ps(1, 4, 7);
    }
    _tile_stored(0, out, out_stride);
    _tile_stored(1, out + 16, out_stride);
    if (!whole)
      for (int64_t r = 0; r < n; ++r) std::memcpy(c + (r0 + r) * ldc, edge + r * kNR, static_cast<size_t>(cols) * 4);
  }
}
}  // namespace

void bf16_tile(int64_t rows, const uint32_t* a, int64_t lda, const uint32_t* panel, int64_t pairs, float* c,
               int64_t ldc, int64_t cols, bool accumulate) {
  if (t_tiles_configured) return bf16_tile_amx(rows, a, lda, panel, pairs, c, ldc, cols, accumulate);
  for (int64_t r0 = 0; r0 < rows; r0 += kMR)
    tile_for(std::min(kMR, rows - r0), cols)(a + r0 * lda, lda, panel, pairs, c + r0 * ldc, ldc, cols, accumulate,
                                             nullptr);
}

int64_t bf16_tile_pairs(int64_t pairs) { return amx() ? (pairs + kAmxPairs - 1) / kAmxPairs * kAmxPairs : pairs; }

Bf16TileScope::Bf16TileScope() : on_(amx() && !t_tiles_configured) {
  if (!on_) return;
  amx_begin();
  t_tiles_configured = true;
}

Bf16TileScope::~Bf16TileScope() {
  if (!on_) return;
  amx_end();
  t_tiles_configured = false;
}

void pack_bf16_weight_panel(const uint16_t* w, int64_t K, int64_t N, int64_t n0, int64_t pairs, uint32_t* panel) {
  const int64_t whole = std::min(pairs, K / 2);  // pairs with both values inside K: the gathers where they fit
  pack_panel(w, K, N, n0, 0, whole, panel);
  if (pairs > whole) pack_panel(w, K, N, n0, whole, pairs - whole, panel + whole * kNR);
}

namespace {
// BF16 weight rows W [N, K] as a panel source (the source refers to this object: keep it alive).
struct Bf16Rows {
  const uint16_t* w;
  int64_t K, N;
  Bf16PanelSource source() const {
    return {[](const void* self, int64_t n0, int64_t kp0, int64_t kpn, uint32_t* panel) {
              const auto* r = static_cast<const Bf16Rows*>(self);
              pack_panel(r->w, r->K, r->N, n0, kp0, kpn, panel);
            }, this};
  }
};
}  // namespace

bool bf16_gemm(const float* x, int64_t M, int64_t K, const uint16_t* w, int64_t N, float* y, const float* bias,
               GemmOutput output) {
  const Bf16Rows rows{w, K, N};
  return bf16_gemm(x, M, K, rows.source(), N, y, bias, output);
}

namespace {
// The pairs a row of x holds in the GEMM's bf16 copy: ceil(K/2) rounded up to a whole AMX tile step.
int64_t rounded_row_pairs(int64_t K) { return ((K + 1) / 2 + kAmxPairs - 1) / kAmxPairs * kAmxPairs; }

// The row stride, in pairs, of x's bf16 copy: rounded_row_pairs, and for the zmm tiles 64 bytes more
// where that is a whole multiple of 4 KiB. A tile reads 12 rows at the same column: rows 4 KiB apart
// fall in one set of L1 (64 sets of 64 bytes), which the 12 rows fill alone, so the panel's lines
// evict them at every step. InternViT's fc2 operand (4,096 bf16 = 8 KiB rows) is the case: its
// MLP 1.12x with the 64 bytes (bench/README.md). AMX reads x in its own arrangement, unpadded.
int64_t operand_row_pairs(int64_t K, bool tiles) {
  const int64_t pairs = rounded_row_pairs(K);
  return !tiles && pairs * 4 % 4096 == 0 ? pairs + kAmxPairs : pairs;
}

// A hidden layer of `width` about to be rounded block by block into M rows of the next product's
// operand (zmm tiles): zeros past the width (the blocks write the rest). Returns the row length in
// elements.
int64_t zero_row_padding(uint16_t* rows, int64_t M, int64_t width) {
  const int64_t ld = 2 * operand_row_pairs(width, false);
  for (int64_t m = 0; m < M; ++m) std::fill(rows + m * ld + width, rows + (m + 1) * ld, uint16_t{0});
  return ld;
}

// x rounded to bf16, rows padded to a whole AMX row block and pairs to a whole tile step (zeros);
// on AMX each row block's tile steps contiguous ([step][32 rows][16 pairs]), so a tile is 1 KB read
// at a 64-byte stride (rows a whole row apart would share a few cache sets).
Tensor round_rows(const float* x, int64_t M, int64_t K, bool tiles) {
  const int64_t lda = operand_row_pairs(K, tiles);
  const int64_t padded_rows = (M + kAmxRows - 1) / kAmxRows * kAmxRows;
  Tensor xb = Tensor::empty({padded_rows * lda * 2}, DType::BF16);
  uint16_t* xbp = xb.data<uint16_t>();
  parallel_for(padded_rows / kAmxRows, [&](int64_t b0, int64_t b1) {
    std::vector<uint16_t> row(tiles ? static_cast<size_t>(2 * lda) : 0);
    for (int64_t m = b0 * kAmxRows; m < b1 * kAmxRows; ++m) {
      uint16_t* out = tiles ? row.data() : xbp + m * 2 * lda;
      if (m < M) round_to_bf16_avx512(x + m * K, K, 2 * lda, out);
      else std::fill(out, out + 2 * lda, uint16_t{0});
      if (!tiles) continue;
      for (int64_t step = 0; step < lda / kAmxPairs; ++step)
        std::memcpy(xbp + 2 * (amx_step_offset(m / kAmxRows, step, lda) + (m % kAmxRows) * kAmxPairs),
                    row.data() + 2 * step * kAmxPairs, kAmxPairs * 4);
    }
  });
  return xb;
}

// W from its source packed whole into panels of `panel_pairs` pairs (zeros past K), in parallel.
Tensor pack_all_panels(const Bf16PanelSource& w, int64_t pairs, int64_t panel_pairs, int64_t N) {
  const int64_t panel_count = (N + kNR - 1) / kNR;
  Tensor packed = Tensor::empty({panel_count * panel_pairs * kNR}, DType::I32);
  uint32_t* const base = reinterpret_cast<uint32_t*>(packed.data<int32_t>());
  parallel_for(panel_count, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) pack_from_source(w, p * kNR, 0, pairs, panel_pairs, base + p * panel_pairs * kNR);
  });
  return packed;
}

// Runs the product described by op (x already rounded into op.a, or in op.avx2_x).
void run(const GemmOperands& op) {
  const int64_t M = op.M, N = op.N;
  const int64_t panel_count = (N + kNR - 1) / kNR;
  // Columns per task where there are enough of them (each task packs its own columns of W once);
  // else rows, every task running over all of W.
  if (panel_count >= 4 * kNC / kNR * num_threads() || M < 2 * kAmxRows) {
    parallel_for(panel_count, [&](int64_t p0, int64_t p1) { gemm_blocks(op, 0, M, p0, p1); }, kNC / kNR);
    return;
  }
  // Rows go in units of the row block (AMX's 32 rows in their arrangement of x; else the tile's 12,
  // or 6 on AVX2): 288 rows split 144/144, where whole units of 32 would split them 128/160.
  const int64_t unit = op.amx ? kAmxRows : op.avx2_x ? kAvx2MR : kMR;
  // Every task runs over all of W: tasks of kMinTaskRows rows at least, so that on many threads the
  // chunks handed out in turn (core/threadpool.h) do not stream W once per few row blocks, but two
  // per thread at least (an MLP chunk of 288 rows as 4 x 72 on two threads, not 96 + 96 + 96).
  constexpr int64_t kMinTaskRows = 96;
  const int64_t units = (M + unit - 1) / unit;
  const int64_t grain = std::max<int64_t>(1, std::min((kMinTaskRows + unit - 1) / unit, units / (2 * num_threads())));
  auto by_rows = [&](const GemmOperands& o) {
    parallel_for(units, [&](int64_t b0, int64_t b1) {
      gemm_blocks(o, b0 * unit, std::min(M, b1 * unit), 0, panel_count);
    }, grain);
  };
  if (op.panels || num_threads() == 1) return by_rows(op);
  // Split by rows, every task would pack all of W for itself: pack it once, together, and let the
  // tasks read the panels in place.
  const int64_t panel_pairs = (op.pairs + kAmxPairs - 1) / kAmxPairs * kAmxPairs;
  const Tensor packed = pack_all_panels(*op.w, op.pairs, panel_pairs, N);
  GemmOperands in_place = op;
  in_place.w = nullptr;
  in_place.panels = reinterpret_cast<const uint32_t*>(packed.data<int32_t>());
  in_place.panel_pairs = panel_pairs;
  by_rows(in_place);
}

// The product on AVX2 (x in f32; see GemmOperands::avx2_x). x is read in place where K is even; an
// odd K is copied with a zero after each row (the panels' last pair is (W[n][K-1], 0), and the value
// read beside it must be finite). Rows a multiple of 4 KiB long need no padding here: read in place
// or padded by 16 floats, InternViT's products ran alike (0.99-1.00x, bench/README.md).
void gemm_avx2(const float* x, int64_t M, int64_t K, const Bf16PanelSource* source, const uint32_t* panels,
               int64_t panel_pairs, int64_t N, float* y, const float* bias, GemmOutput output) {
  const int64_t ld = (K + 1) / 2 * 2;
  Tensor copy;
  if (ld != K) {
    copy = Tensor::empty({M, ld});
    float* const out = copy.f32();
    parallel_for(M, [&](int64_t m0, int64_t m1) {
      for (int64_t m = m0; m < m1; ++m) {
        std::memcpy(out + m * ld, x + m * K, static_cast<size_t>(K) * 4);
        std::fill(out + m * ld + K, out + (m + 1) * ld, 0.f);
      }
    }, 64);
  }
  GemmOperands op{nullptr, ld, M, (K + 1) / 2, source, panels, panel_pairs, N, y, bias, output, false};
  op.avx2_x = ld != K ? copy.f32() : x;
  run(op);
}

// The product with W from a panel source or in panels already (GemmOperands::w / panels).
bool gemm(const float* x, int64_t M, int64_t K, const Bf16PanelSource* source, const uint32_t* panels,
          int64_t panel_pairs, int64_t N, float* y, const float* bias, GemmOutput output) {
  if (isa() == Isa::Avx2) {
    gemm_avx2(x, M, K, source, panels, panel_pairs, N, y, bias, output);
    return true;
  }
  if (isa() != Isa::Avx512) return false;
  const bool tiles = amx();
  const Tensor xb = round_rows(x, M, K, tiles);
  run(GemmOperands{reinterpret_cast<const uint32_t*>(xb.data<uint16_t>()), operand_row_pairs(K, tiles), M, (K + 1) / 2,
                   source, panels, panel_pairs, N, y, bias, output, tiles});
  return true;
}
}  // namespace

bool bf16_gemm(const float* x, int64_t M, int64_t K, const Bf16PanelSource& w, int64_t N, float* y,
               const float* bias, GemmOutput output) {
  return gemm(x, M, K, &w, nullptr, 0, N, y, bias, output);
}

bool bf16_gemm_panels(const float* x, int64_t M, int64_t K, const uint32_t* panels, int64_t panel_pairs, int64_t N,
                      float* y, const float* bias, GemmOutput output) {
  return gemm(x, M, K, nullptr, panels, panel_pairs, N, y, bias, output);
}

bool bf16_mlp_panels(const float* x, int64_t M, int64_t K, const uint32_t* w1, int64_t w1_pairs, int64_t hidden_width,
                     const float* b1, GemmOutput activation, float* hidden, const uint32_t* w2, int64_t w2_pairs,
                     int64_t N, const float* b2, float* y) {
  if (isa() != Isa::Avx512 || amx() || M <= 0) return false;
  Tensor rounded_t = Tensor::empty({M * 2 * operand_row_pairs(hidden_width, false)}, DType::BF16);
  uint16_t* rounded = rounded_t.data<uint16_t>();
  const int64_t ld = zero_row_padding(rounded, M, hidden_width);
  const Tensor xb = round_rows(x, M, K, false);
  GemmOperands first{reinterpret_cast<const uint32_t*>(xb.data<uint16_t>()), operand_row_pairs(K, false), M,
                     (K + 1) / 2, nullptr, w1, w1_pairs, hidden_width, hidden, b1, activation, false};
  first.rounded = rounded;
  first.rounded_ld = ld;
  first.rounded_only = true;  // `hidden` is only needed as C across slices of K
  run(first);
  run(GemmOperands{reinterpret_cast<const uint32_t*>(rounded), ld / 2, M, (hidden_width + 1) / 2, nullptr, w2,
                   w2_pairs, N, y, b2, GemmOutput::Plain, false});
  return true;
}

bool bf16_gated_mlp(const float* x, int64_t M, int64_t K, const uint16_t* w_gate, const uint16_t* w_up,
                    int64_t hidden_width, uint16_t* hidden, const uint16_t* w_down, int64_t N, float* y) {
  const int64_t pairs = (K + 1) / 2;
  if (isa() != Isa::Avx512 || amx() || M <= 0 || pairs > kMaxSlicePairs) return false;
  const Bf16Rows gate_rows{w_gate, K, hidden_width}, up_rows{w_up, K, hidden_width}, down_rows{w_down, hidden_width, N};
  const Bf16PanelSource gate = gate_rows.source(), up = up_rows.source(), down = down_rows.source();
  const int64_t ld = zero_row_padding(hidden, M, hidden_width);
  const Tensor xb = round_rows(x, M, K, false);
  GemmOperands first{reinterpret_cast<const uint32_t*>(xb.data<uint16_t>()), operand_row_pairs(K, false), M, pairs,
                     &gate, nullptr, 0, hidden_width, nullptr, nullptr, GemmOutput::Plain, false};
  first.rounded = hidden;
  first.rounded_ld = ld;
  first.rounded_only = true;
  first.up = &up;
  // Columns per task always: each task packs its own columns of both matrices.
  const int64_t panel_count = (hidden_width + kNR - 1) / kNR;
  parallel_for(panel_count, [&](int64_t p0, int64_t p1) { gemm_blocks(first, 0, M, p0, p1); }, kNC / 2 / kNR);
  run(GemmOperands{reinterpret_cast<const uint32_t*>(hidden), ld / 2, M, (hidden_width + 1) / 2, &down, nullptr, 0, N,
                   y, nullptr, GemmOutput::Plain, false});
  return true;
}

}  // namespace sa2va::ops::simd
