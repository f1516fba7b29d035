// Large-M product y[M,N] = x[M,K] · Wᵀ with BF16 weights W[N,K] on AVX-512 BF16 (vdpbf16ps).
// x is rounded to bf16 once; each instruction multiplies bf16 pairs and accumulates in f32.
//
// Blocking (per thread, over its own range of output columns):
//   for each NC-column block, for each KC-pair slice of K:
//     pack W into 32-column panels, word-interleaved: panel[kp][lane] = (W[n][2kp], W[n][2kp+1])
//     for each MR-row block of x: for each panel: MR×32 register tile += x pairs · panel
// A packed block (NC·KC·4 bytes = 256 KiB) stays in L2; one x micro-panel (MR·KC·4 bytes) in L1.
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <utility>
#include <vector>

#include "core/dtype.h"
#include "core/tensor.h"
#include "core/threadpool.h"
#include "ops/cpu/simd.h"

#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace sa2va::ops::simd {
namespace {

#define SA2VA_AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma")))

constexpr int64_t kMR = kBf16TileRows;   // rows of the register tile
constexpr int64_t kNR = kBf16PanelCols;  // columns of the register tile (two zmm of f32)
constexpr int64_t kKC = kBf16SlicePairs;  // k pairs per slice
constexpr int64_t kNC = 256;  // columns per packed block

// Packs columns [n0, n0 + kNR) (zero beyond N) and pairs [kp0, kp0 + kpn) of W.
void pack_panel(const uint16_t* w, int64_t K, int64_t N, int64_t n0, int64_t kp0, int64_t kpn, uint32_t* dst) {
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

// c[r][:] (+)= Σ_kp a[r][kp] · panel[kp][:] for r < rows (rows <= kMR), columns < cols.
template <int MR>
SA2VA_AVX512BF16 void tile_kernel(const uint32_t* a, int64_t lda, const uint32_t* panel, int64_t kpn, float* c,
                                  int64_t ldc, int64_t cols, bool accumulate) {
  __m512 acc0[MR], acc1[MR];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) acc0[r] = acc1[r] = _mm512_setzero_ps();
  for (int64_t kp = 0; kp < kpn; ++kp) {
    const __m512bh b0 = (__m512bh)_mm512_loadu_si512(panel + kp * kNR);
    const __m512bh b1 = (__m512bh)_mm512_loadu_si512(panel + kp * kNR + 16);
  #pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
      const __m512bh av = (__m512bh)_mm512_set1_epi32(static_cast<int>(a[r * lda + kp]));
      acc0[r] = _mm512_dpbf16_ps(acc0[r], av, b0);
      acc1[r] = _mm512_dpbf16_ps(acc1[r], av, b1);
    }
  }
  const __mmask16 m0 = cols >= 16 ? __mmask16(0xffff) : __mmask16((1u << cols) - 1);
  const __mmask16 m1 = cols >= 32 ? __mmask16(0xffff) : cols <= 16 ? __mmask16(0) : __mmask16((1u << (cols - 16)) - 1);
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
    float* cr = c + r * ldc;
    if (accumulate) {
      acc0[r] = _mm512_add_ps(acc0[r], _mm512_maskz_loadu_ps(m0, cr));
      acc1[r] = _mm512_add_ps(acc1[r], _mm512_maskz_loadu_ps(m1, cr + 16));
    }
    _mm512_mask_storeu_ps(cr, m0, acc0[r]);
    _mm512_mask_storeu_ps(cr + 16, m1, acc1[r]);
  }
}

using TileFn = void (*)(const uint32_t*, int64_t, const uint32_t*, int64_t, float*, int64_t, int64_t, bool);
template <int... R>
constexpr std::array<TileFn, sizeof...(R)> make_tiles(std::integer_sequence<int, R...>) {
  return {tile_kernel<R + 1>...};
}
// kTiles[rows - 1] handles a block of `rows` rows.
constexpr auto kTiles = make_tiles(std::make_integer_sequence<int, kMR>{});

SA2VA_AVX512BF16 void round_to_bf16_avx512(const float* x, int64_t n, int64_t n_padded, uint16_t* out) {
  for (int64_t k = 0; k < n_padded; k += 16) {
    const int64_t valid = std::min<int64_t>(16, n - k);
    const __mmask16 mask = valid >= 16 ? __mmask16(0xffff) : valid <= 0 ? __mmask16(0) : __mmask16((1u << valid) - 1);
    const __m256bh v = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mask, x + k));
    const int64_t store = std::min<int64_t>(16, n_padded - k);
    _mm256_mask_storeu_epi16(out + k, static_cast<__mmask16>((1u << store) - 1), (__m256i)v);
  }
}

}  // namespace

void round_to_bf16(const float* x, int64_t n, int64_t n_padded, uint16_t* out) {
  if (isa() == Isa::Avx512) return round_to_bf16_avx512(x, n, n_padded, out);
  for (int64_t i = 0; i < n_padded; ++i) out[i] = i < n ? f32_to_bf16(x[i]) : 0;
}

void pack_bf16_panel(const float* src, int64_t lane_stride, int64_t pair_stride, int64_t lanes, int64_t length,
                     int64_t pairs, uint32_t* panel) {
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

void bf16_tile(int64_t rows, const uint32_t* a, int64_t lda, const uint32_t* panel, int64_t pairs, float* c,
               int64_t ldc, int64_t cols, bool accumulate) {
  kTiles[rows - 1](a, lda, panel, pairs, c, ldc, cols, accumulate);
}

bool bf16_gemm(const float* x, int64_t M, int64_t K, const uint16_t* w, int64_t N, float* y) {
  struct Source {
    const uint16_t* w;
    int64_t K, N;
  } source{w, K, N};
  return bf16_gemm(x, M, K, Bf16PanelSource{[](const void* self, int64_t n0, int64_t kp0, int64_t kpn, uint32_t* panel) {
                     const auto* s = static_cast<const Source*>(self);
                     pack_panel(s->w, s->K, s->N, n0, kp0, kpn, panel);
                   }, &source}, N, y);
}

bool bf16_gemm(const float* x, int64_t M, int64_t K, const Bf16PanelSource& w, int64_t N, float* y) {
  if (isa() != Isa::Avx512) return false;
  const int64_t Kp = (K + 1) & ~int64_t{1}, pairs = Kp / 2;
  const Tensor xb = Tensor::empty({M * Kp}, DType::BF16);  // every element is written
  parallel_for(M, [&](int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; ++m) round_to_bf16_avx512(x + m * K, K, Kp, xb.data<uint16_t>() + m * Kp);
  }, 16);
  const uint32_t* a = reinterpret_cast<const uint32_t*>(xb.data<uint16_t>());
  const int64_t panels = (N + kNR - 1) / kNR;
  parallel_for(panels, [&](int64_t p_begin, int64_t p_end) {
    std::vector<uint32_t> packed(static_cast<size_t>(kNC * kKC));
    for (int64_t nb = p_begin * kNR; nb < std::min(p_end * kNR, N); nb += kNC) {
      const int64_t nb_end = std::min({nb + kNC, p_end * kNR, N});
      const int64_t block_panels = (nb_end - nb + kNR - 1) / kNR;
      for (int64_t kp0 = 0; kp0 < pairs; kp0 += kKC) {
        const int64_t kpn = std::min(kKC, pairs - kp0);
        for (int64_t p = 0; p < block_panels; ++p) w.pack(w.self, nb + p * kNR, kp0, kpn, packed.data() + p * kpn * kNR);
        for (int64_t m0 = 0; m0 < M; m0 += kMR) {
          const int64_t rows = std::min(kMR, M - m0);
          const TileFn tile = kTiles[rows - 1];
          for (int64_t p = 0; p < block_panels; ++p) {
            const int64_t n0 = nb + p * kNR;
            tile(a + m0 * pairs + kp0, pairs, packed.data() + p * kpn * kNR, kpn, y + m0 * N + n0, N,
                 std::min(kNR, nb_end - n0), kp0 > 0);
          }
        }
      }
    }
  }, kNC / kNR);
  return true;
}

}  // namespace sa2va::ops::simd
