// AVX-512 (F, BW, VL, DQ, BF16, VNNI) and AMX-BF16 intrinsics in plain C++, for a test build of the
// CPU kernels on machines without those instruction sets (SA2VA_EMULATE_WIDE_X86; tests/CMakeLists.txt
// builds it as sa2va_wide_x86_tests). Most intrinsics come from SIMDe (Debian's libsimde-dev, which
// maps the native names onto its own portable ones); the few it lacks are defined here, each from the
// instruction's definition: bf16 rounding, masked loads and stores that touch only their enabled lanes
// (so AddressSanitizer sees what the hardware would read), reductions, conversions and the AMX tiles
// (one set per thread, a use without configuration stopping the test as the hardware would fault),
// and vscalefps and vandps-style abs where SIMDe's differ at the edges. Results match the hardware's
// for normal values up to the summation order inside the dot-product instructions (which here also
// do not flush bf16 denormals to zero as the hardware does). Never part of the library: the
// library's kernels run the real instructions.
#pragma once
#if !defined(SA2VA_EMULATE_WIDE_X86)
#error "x86_emulation.h is for the emulated test build only"
#endif

#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "core/dtype.h"

namespace sa2va::ops::simd::emulated {

inline simde__m512_private f32x16(simde__m512 v) { return simde__m512_to_private(v); }
inline simde__m512i_private i32x16(simde__m512i v) { return simde__m512i_to_private(v); }

// vcvtneps2bf16: the project's rounding (to nearest even, NaN quietened), except that a denormal
// becomes a zero of its sign.
inline uint16_t f32_to_bf16(float f) {
  if (std::fpclassify(f) == FP_SUBNORMAL) return std::signbit(f) ? 0x8000 : 0;
  return ::sa2va::f32_to_bf16(f);
}

inline simde__m512bh cvtne2ps_pbh(simde__m512 a, simde__m512 b) {
  const simde__m512_private pa = f32x16(a), pb = f32x16(b);
  simde__m512bh_private r;
  for (int i = 0; i < 16; ++i) {
    r.u16[i] = f32_to_bf16(pb.f32[i]);
    r.u16[i + 16] = f32_to_bf16(pa.f32[i]);
  }
  return simde__m512bh_from_private(r);
}
inline simde__m256bh cvtneps_pbh(simde__m512 a) {
  const simde__m512_private pa = f32x16(a);
  simde__m256bh_private r;
  for (int i = 0; i < 16; ++i) r.u16[i] = f32_to_bf16(pa.f32[i]);
  return simde__m256bh_from_private(r);
}

// Masked loads and stores: only the enabled lanes are read or written.
template <typename Lane, typename Mask, typename Vector>
inline Vector masked_load(Mask mask, const void* p) {
  Lane lanes[sizeof(Vector) / sizeof(Lane)] = {};
  for (size_t i = 0; i < sizeof(Vector) / sizeof(Lane); ++i)
    if ((static_cast<uint64_t>(mask) >> i) & 1u) std::memcpy(&lanes[i], static_cast<const char*>(p) + i * sizeof(Lane), sizeof(Lane));
  Vector v;
  std::memcpy(&v, lanes, sizeof(Vector));
  return v;
}
template <typename Lane, typename Mask, typename Vector>
inline void masked_store(void* p, Mask mask, Vector v) {
  Lane lanes[sizeof(Vector) / sizeof(Lane)];
  std::memcpy(lanes, &v, sizeof(Vector));
  for (size_t i = 0; i < sizeof(Vector) / sizeof(Lane); ++i)
    if ((static_cast<uint64_t>(mask) >> i) & 1u) std::memcpy(static_cast<char*>(p) + i * sizeof(Lane), &lanes[i], sizeof(Lane));
}

inline simde__m512 cvtepi32_ps(simde__m512i a) {
  const simde__m512i_private pa = i32x16(a);
  simde__m512_private r;
  for (int i = 0; i < 16; ++i) r.f32[i] = static_cast<float>(pa.i32[i]);
  return simde__m512_from_private(r);
}
// Round to nearest even; NaN and values out of range give INT32_MIN (the "integer indefinite").
inline simde__m512i cvtps_epi32(simde__m512 a) {
  const simde__m512_private pa = f32x16(a);
  simde__m512i_private r;
  for (int i = 0; i < 16; ++i) {
    const float v = std::nearbyint(pa.f32[i]);
    r.i32[i] = (v >= -2147483648.f && v < 2147483648.f) ? static_cast<int32_t>(v) : INT32_MIN;
  }
  return simde__m512i_from_private(r);
}
inline simde__m512 cvtph_ps(simde__m256i halves) {  // F16C is native in this build
  simde__m512_private r;
  r.m256[0] = _mm256_cvtph_ps(_mm256_castsi256_si128(halves));
  r.m256[1] = _mm256_cvtph_ps(_mm256_extracti128_si256(halves, 1));
  return simde__m512_from_private(r);
}
inline simde__m256 extractf32x8_ps(simde__m512 a, int upper) {
  const simde__m512_private pa = f32x16(a);
  simde__m256_private r;
  for (int i = 0; i < 8; ++i) r.f32[i] = pa.f32[i + 8 * (upper & 1)];
  return simde__m256_from_private(r);
}
inline simde__m512i i32gather_epi32(simde__m512i index, const void* base, int scale) {
  const simde__m512i_private pi = i32x16(index);
  simde__m512i_private r;
  for (int i = 0; i < 16; ++i) {
    int32_t v;
    std::memcpy(&v, static_cast<const char*>(base) + static_cast<int64_t>(pi.i32[i]) * scale, 4);
    r.i32[i] = v;
  }
  return simde__m512i_from_private(r);
}
// vpermilps with an immediate: the same 4-lane selection within each 128-bit lane.
inline simde__m512 permute_ps(simde__m512 a, int imm) {
  const simde__m512_private pa = f32x16(a);
  simde__m512_private r;
  for (int i = 0; i < 16; ++i) r.f32[i] = pa.f32[(i & ~3) + ((imm >> (2 * (i & 3))) & 3)];
  return simde__m512_from_private(r);
}
// vandps with the sign mask: -0 and a negative NaN lose their sign bit (SIMDe's compares with 0).
inline simde__m512 abs_ps(simde__m512 a) {
  simde__m512i_private bits;
  std::memcpy(&bits, &a, sizeof a);
  for (int i = 0; i < 16; ++i) bits.u32[i] &= 0x7fffffffu;
  simde__m512 r;
  std::memcpy(&r, &bits, sizeof r);
  return r;
}
// vscalefps: a·2^floor(b) rounded once (below the normal range a denormal, not SIMDe's 0 or inf from a
// separate power of two); NaN in either gives NaN; b = +inf gives ±inf (NaN for a = 0), b = -inf ±0
// (NaN for an infinite a).
inline float scalef(float a, float b) {
  if (std::isnan(a) || std::isnan(b)) return NAN;
  if (std::isinf(b)) {
    if (b > 0) return a == 0 ? NAN : std::copysign(INFINITY, a);
    return std::isinf(a) ? NAN : std::copysign(0.f, a);
  }
  const float n = std::floor(b);
  return std::ldexp(a, n > 1000.f ? 1000 : n < -1000.f ? -1000 : static_cast<int>(n));
}
inline simde__m512 maskz_scalef_ps(uint32_t mask, simde__m512 a, simde__m512 b) {
  const simde__m512_private pa = f32x16(a), pb = f32x16(b);
  simde__m512_private r;
  for (int i = 0; i < 16; ++i) r.f32[i] = (mask >> i) & 1u ? scalef(pa.f32[i], pb.f32[i]) : 0.f;
  return simde__m512_from_private(r);
}

// Reductions in the compiler's order: halves added, then quarters, then pairs of the 128-bit rest.
template <typename T, typename Vector, typename Op>
inline T reduce16(Vector vector, Op op) {
  T v[16], t[8];
  std::memcpy(v, &vector, sizeof v);
  for (int i = 0; i < 8; ++i) t[i] = op(v[i], v[i + 8]);
  for (int i = 0; i < 4; ++i) t[i] = op(t[i], t[i + 4]);
  const T a = op(t[0], t[2]), b = op(t[1], t[3]);
  return op(a, b);
}
inline float reduce_add_ps(simde__m512 a) {
  return reduce16<float>(a, [](float x, float y) { return x + y; });
}
// vmaxps returns its second operand when either is NaN; the compiler's reduction order is kept.
inline float reduce_max_ps(simde__m512 a) {
  return reduce16<float>(a, [](float x, float y) { return x > y ? x : y; });
}
inline int32_t reduce_add_epi32(simde__m512i a) {
  return reduce16<int32_t>(a, [](int32_t x, int32_t y) { return static_cast<int32_t>(static_cast<uint32_t>(x) + static_cast<uint32_t>(y)); });
}

// AMX: eight tiles of up to 16 rows x 64 bytes per thread, shaped by the last _tile_loadconfig.
struct Tile {
  int rows = 0, row_bytes = 0;
  alignas(64) unsigned char data[16][64] = {};
};
inline Tile* tiles() {
  thread_local Tile t[8];
  return t;
}
inline void tile_loadconfig(const void* config) {
  const auto* bytes = static_cast<const unsigned char*>(config);
  for (int t = 0; t < 8; ++t) {
    uint16_t row_bytes;
    std::memcpy(&row_bytes, bytes + 16 + 2 * t, 2);
    tiles()[t].rows = bytes[48 + t];
    tiles()[t].row_bytes = row_bytes;
  }
}
// A tile used without a configuration faults on the hardware: here the test stops.
inline Tile& configured(int t) {
  if (tiles()[t].rows == 0) {
    std::fprintf(stderr, "emulated AMX: tile %d used without _tile_loadconfig\n", t);
    std::abort();
  }
  return tiles()[t];
}
inline void tile_release() {
  for (int t = 0; t < 8; ++t) tiles()[t] = Tile{};
}
inline void tile_loadd(int t, const void* base, int64_t stride) {
  Tile& tile = configured(t);
  for (int r = 0; r < tile.rows; ++r) std::memcpy(tile.data[r], static_cast<const char*>(base) + r * stride, tile.row_bytes);
}
inline void tile_stored(int t, void* base, int64_t stride) {
  const Tile& tile = configured(t);
  for (int r = 0; r < tile.rows; ++r) std::memcpy(static_cast<char*>(base) + r * stride, tile.data[r], tile.row_bytes);
}
inline void tile_zero(int t) { std::memset(configured(t).data, 0, sizeof(Tile::data)); }
// A tile's bf16 values widened to f32, row by row (32 per row of 64 bytes).
inline void widen_tile(const Tile& tile, float (&out)[16][32]) {
  for (int r = 0; r < tile.rows; ++r)
    for (int i = 0; i < tile.row_bytes / 2; ++i) {
      uint16_t v;
      std::memcpy(&v, tile.data[r] + 2 * i, 2);
      out[r][i] = ::sa2va::bf16_to_f32(v);
    }
}
// c[m][n] += Σ_k a[m][pair k] · b[k][pair n], the pair's two products added in order (even, odd).
inline void tile_dpbf16ps(int c, int a, int b) {
  Tile& tc = configured(c);
  float wa[16][32], wb[16][32], acc[16][16];
  widen_tile(configured(a), wa);
  widen_tile(configured(b), wb);
  const int pairs = tiles()[a].row_bytes / 4, cols = tc.row_bytes / 4;
  for (int m = 0; m < tc.rows; ++m) {
    std::memcpy(acc[m], tc.data[m], 4 * cols);
    for (int k = 0; k < pairs; ++k)
      for (int n = 0; n < cols; ++n) {
        acc[m][n] += wa[m][2 * k] * wb[k][2 * n];
        acc[m][n] += wa[m][2 * k + 1] * wb[k][2 * n + 1];
      }
    std::memcpy(tc.data[m], acc[m], 4 * cols);
  }
}

}  // namespace sa2va::ops::simd::emulated

#undef _mm512_cvtne2ps_pbh
#define _mm512_cvtne2ps_pbh(a, b) ::sa2va::ops::simd::emulated::cvtne2ps_pbh(a, b)
#undef _mm512_cvtneps_pbh
#define _mm512_cvtneps_pbh(a) ::sa2va::ops::simd::emulated::cvtneps_pbh(a)
#undef _mm512_maskz_loadu_ps
#define _mm512_maskz_loadu_ps(k, p) (::sa2va::ops::simd::emulated::masked_load<float, __mmask16, __m512>(k, p))
#undef _mm512_maskz_loadu_epi8
#define _mm512_maskz_loadu_epi8(k, p) (::sa2va::ops::simd::emulated::masked_load<int8_t, __mmask64, __m512i>(k, p))
#undef _mm512_maskz_loadu_epi16
#define _mm512_maskz_loadu_epi16(k, p) (::sa2va::ops::simd::emulated::masked_load<int16_t, __mmask32, __m512i>(k, p))
#undef _mm256_maskz_loadu_epi16
#define _mm256_maskz_loadu_epi16(k, p) (::sa2va::ops::simd::emulated::masked_load<int16_t, __mmask16, __m256i>(k, p))
#undef _mm512_mask_storeu_ps
#define _mm512_mask_storeu_ps(p, k, v) (::sa2va::ops::simd::emulated::masked_store<float, __mmask16, __m512>(p, k, v))
#undef _mm256_mask_storeu_epi16
#define _mm256_mask_storeu_epi16(p, k, v) (::sa2va::ops::simd::emulated::masked_store<int16_t, __mmask16, __m256i>(p, k, v))
#undef _mm512_cvtepi32_ps
#define _mm512_cvtepi32_ps(a) ::sa2va::ops::simd::emulated::cvtepi32_ps(a)
#undef _mm512_cvtps_epi32
#define _mm512_cvtps_epi32(a) ::sa2va::ops::simd::emulated::cvtps_epi32(a)
#undef _mm512_cvtph_ps
#define _mm512_cvtph_ps(a) ::sa2va::ops::simd::emulated::cvtph_ps(a)
#undef _mm512_extractf32x8_ps
#define _mm512_extractf32x8_ps(a, i) ::sa2va::ops::simd::emulated::extractf32x8_ps(a, i)
#undef _mm512_i32gather_epi32
#define _mm512_i32gather_epi32(index, base, scale) ::sa2va::ops::simd::emulated::i32gather_epi32(index, base, scale)
#undef _mm512_permute_ps
#define _mm512_permute_ps(a, imm) ::sa2va::ops::simd::emulated::permute_ps(a, imm)
#undef _mm512_abs_ps
#define _mm512_abs_ps(a) ::sa2va::ops::simd::emulated::abs_ps(a)
#undef _mm512_scalef_ps
#define _mm512_scalef_ps(a, b) ::sa2va::ops::simd::emulated::maskz_scalef_ps(0xffffu, a, b)
#undef _mm512_maskz_scalef_ps
#define _mm512_maskz_scalef_ps(k, a, b) ::sa2va::ops::simd::emulated::maskz_scalef_ps(k, a, b)
#undef _mm512_reduce_add_ps
#define _mm512_reduce_add_ps(a) ::sa2va::ops::simd::emulated::reduce_add_ps(a)
#undef _mm512_reduce_max_ps
#define _mm512_reduce_max_ps(a) ::sa2va::ops::simd::emulated::reduce_max_ps(a)
#undef _mm512_reduce_add_epi32
#define _mm512_reduce_add_epi32(a) ::sa2va::ops::simd::emulated::reduce_add_epi32(a)
#undef _tile_loadconfig
#undef _tile_release
#undef _tile_loadd
#undef _tile_stored
#undef _tile_zero
#undef _tile_dpbf16ps
#define _tile_loadconfig(config) ::sa2va::ops::simd::emulated::tile_loadconfig(config)
#define _tile_release() ::sa2va::ops::simd::emulated::tile_release()
#define _tile_loadd(t, base, stride) ::sa2va::ops::simd::emulated::tile_loadd(t, base, stride)
#define _tile_stored(t, base, stride) ::sa2va::ops::simd::emulated::tile_stored(t, base, stride)
#define _tile_zero(t) ::sa2va::ops::simd::emulated::tile_zero(t)
#define _tile_dpbf16ps(c, a, b) ::sa2va::ops::simd::emulated::tile_dpbf16ps(c, a, b)
