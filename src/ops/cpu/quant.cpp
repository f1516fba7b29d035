// Integer dot products of quantized weight rows (Q8_0, Q4_0) with activations quantized to 8 bits
// (cpu/simd.h, "Quantized weights"). Per 32-value block the products are summed in int32 and
// scaled once by d_w·d_x, so the weight bytes are streamed once with wide loads and never widened
// to floats: decode is bound by memory bandwidth, not by conversions.
//   AVX-512 VNNI: two blocks per zmm, vpdpbusd (u8 × s8 → s32)
//   AVX2:         one block per ymm, vpmaddubsw + vpmaddwd
//   scalar:       the reference the tests compare both against
// vpdpbusd and vpmaddubsw multiply an unsigned byte by a signed one. Q4_0 codes (0..15) already are
// unsigned, and its offset of 8 is subtracted per block as 8·d_w·d_x·Σx_q; Q8_0 moves the weight's
// sign onto the activation (|w|·(x·sign w)).
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/dtype.h"
#include "ops/cpu/simd.h"

#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wpsabi"

namespace sa2va::ops::simd {
namespace {

constexpr int64_t kBlock = kQ8Block;

// ---------------------------------------------------------------------------- scalar (reference)
// One block: scale d = amax / 127, codes round(x / d) to nearest even, exactly as the SIMD variants.
void quantize_block_scalar(const float* x, int64_t n, int8_t* q, float& d, int32_t& sum) {
  float amax = 0.f;
  for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[i]));
  d = amax / 127.f;
  const float inv = amax > 0.f ? 127.f / amax : 0.f;
  sum = 0;
  for (int64_t i = 0; i < kBlock; ++i) {
    q[i] = i < n ? static_cast<int8_t>(std::nearbyint(x[i] * inv)) : 0;
    sum += q[i];
  }
}

void quantize_row_scalar(const float* x, int64_t k, int8_t* q, float* d, float* offset) {
  for (int64_t b = 0; b * kBlock < k; ++b) {
    int32_t sum;
    quantize_block_scalar(x + b * kBlock, std::min(kBlock, k - b * kBlock), q + b * kBlock, d[b], sum);
    offset[b] = 8.f * d[b] * static_cast<float>(sum);
  }
}

float q8_row_dot_scalar(const uint8_t* w, const uint16_t* ws, const int8_t* x, const float* xd, int64_t blocks) {
  float s = 0.f;
  for (int64_t b = 0; b < blocks; ++b) {
    int32_t acc = 0;
    for (int64_t i = 0; i < kBlock; ++i) acc += static_cast<int8_t>(w[b * kBlock + i]) * x[b * kBlock + i];
    s += f16_to_f32(ws[b]) * xd[b] * static_cast<float>(acc);
  }
  return s;
}

float q4_row_dot_scalar(const uint8_t* w, const uint16_t* ws, const int8_t* x, const float* xd, const float* offset,
                        int64_t blocks) {
  float s = 0.f;
  for (int64_t b = 0; b < blocks; ++b) {
    int32_t acc = 0;
    const uint8_t* p = w + b * kBlock / 2;
    const int8_t* xb = x + b * kBlock;
    for (int64_t j = 0; j < kBlock / 2; ++j) acc += (p[j] & 0x0f) * xb[j] + (p[j] >> 4) * xb[j + kBlock / 2];
    s += f16_to_f32(ws[b]) * (xd[b] * static_cast<float>(acc) - offset[b]);
  }
  return s;
}

// ---------------------------------------------------------------------------- AVX2
#define SA2VA_AVX2 __attribute__((target("avx2,fma,f16c")))

SA2VA_AVX2 inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

SA2VA_AVX2 inline int32_t hsum256_epi32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

SA2VA_AVX2 void quantize_row_avx2(const float* x, int64_t k, int8_t* q, float* d, float* offset) {
  const __m256 sign = _mm256_set1_ps(-0.f);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (int64_t b = 0; b * kBlock < k; ++b) {
    const int64_t n = std::min(kBlock, k - b * kBlock);
    alignas(32) float tmp[kBlock] = {};
    const float* src = x + b * kBlock;
    if (n < kBlock) {
      std::memcpy(tmp, src, sizeof(float) * static_cast<size_t>(n));
      src = tmp;
    }
    __m256 v[4];
    __m256 amax = _mm256_setzero_ps();
    for (int i = 0; i < 4; ++i) {
      v[i] = _mm256_loadu_ps(src + 8 * i);
      amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v[i]));
    }
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    const float a = _mm_cvtss_f32(m);
    d[b] = a / 127.f;
    const __m256 inv = _mm256_set1_ps(a > 0.f ? 127.f / a : 0.f);
    __m256i i32[4];
    for (int i = 0; i < 4; ++i) i32[i] = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], inv));  // nearest even
    const int32_t sum = hsum256_epi32(_mm256_add_epi32(_mm256_add_epi32(i32[0], i32[1]), _mm256_add_epi32(i32[2], i32[3])));
    offset[b] = 8.f * d[b] * static_cast<float>(sum);
    // packs interleave 128-bit lanes; the permutation restores element order
    const __m256i i16a = _mm256_packs_epi32(i32[0], i32[1]), i16b = _mm256_packs_epi32(i32[2], i32[3]);
    const __m256i i8 = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(i16a, i16b), order);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + b * kBlock), i8);
  }
}

// Combined scales d_w·d_x of up to 8 blocks starting at b.
SA2VA_AVX2 inline void block_scales_avx2(const uint16_t* ws, const float* xd, int64_t count, float* out) {
  if (count == 8) {
    const __m256 w = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(ws)));
    _mm256_storeu_ps(out, _mm256_mul_ps(w, _mm256_loadu_ps(xd)));
  } else {
    for (int64_t i = 0; i < count; ++i) out[i] = _cvtsh_ss(ws[i]) * xd[i];
  }
}

SA2VA_AVX2 inline __m256 block_product_q8_avx2(const uint8_t* w, const int8_t* x) {
  const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
  const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x));
  const __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv));
  return _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
}

SA2VA_AVX2 inline __m256 block_product_q4_avx2(const uint8_t* w, const int8_t* x) {
  const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w));
  const __m128i low = _mm_set1_epi8(0x0f);
  const __m256i codes = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(packed, 4), low), _mm_and_si128(packed, low));
  const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x));
  return _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(codes, xv), _mm256_set1_epi16(1)));
}

template <bool kQ4>
SA2VA_AVX2 float row_dot_avx2(const uint8_t* w, const uint16_t* ws, const int8_t* x, const float* xd,
                              const float* offset, int64_t blocks) {
  constexpr int64_t kBytes = kQ4 ? kBlock / 2 : kBlock;
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  float correction = 0.f;
  alignas(32) float scale[8];
  for (int64_t b0 = 0; b0 < blocks; b0 += 8) {
    const int64_t count = std::min<int64_t>(8, blocks - b0);
    block_scales_avx2(ws + b0, xd + b0, count, scale);
    if constexpr (kQ4) {
      for (int64_t i = 0; i < count; ++i) correction += _cvtsh_ss(ws[b0 + i]) * offset[b0 + i];
    }
    int64_t i = 0;
    for (; i + 2 <= count; i += 2) {
      const int64_t b = b0 + i;
      const __m256 p0 = kQ4 ? block_product_q4_avx2(w + b * kBytes, x + b * kBlock)
                            : block_product_q8_avx2(w + b * kBytes, x + b * kBlock);
      const __m256 p1 = kQ4 ? block_product_q4_avx2(w + (b + 1) * kBytes, x + (b + 1) * kBlock)
                            : block_product_q8_avx2(w + (b + 1) * kBytes, x + (b + 1) * kBlock);
      acc0 = _mm256_fmadd_ps(_mm256_broadcast_ss(scale + i), p0, acc0);
      acc1 = _mm256_fmadd_ps(_mm256_broadcast_ss(scale + i + 1), p1, acc1);
    }
    if (i < count) {
      const int64_t b = b0 + i;
      const __m256 p = kQ4 ? block_product_q4_avx2(w + b * kBytes, x + b * kBlock)
                           : block_product_q8_avx2(w + b * kBytes, x + b * kBlock);
      acc0 = _mm256_fmadd_ps(_mm256_broadcast_ss(scale + i), p, acc0);
    }
  }
  return hsum256(_mm256_add_ps(acc0, acc1)) - correction;
}

// ---------------------------------------------------------------------------- AVX-512 VNNI
#define SA2VA_AVX512VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma")))

SA2VA_AVX512VNNI void quantize_row_avx512(const float* x, int64_t k, int8_t* q, float* d, float* offset) {
  for (int64_t b = 0; b * kBlock < k; ++b) {
    const int64_t n = std::min(kBlock, k - b * kBlock);
    const __mmask16 m0 = n >= 16 ? __mmask16(0xffff) : __mmask16((1u << n) - 1);
    const __mmask16 m1 = n >= 32 ? __mmask16(0xffff) : n <= 16 ? __mmask16(0) : __mmask16((1u << (n - 16)) - 1);
    const __m512 v0 = _mm512_maskz_loadu_ps(m0, x + b * kBlock), v1 = _mm512_maskz_loadu_ps(m1, x + b * kBlock + 16);
    const float a = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
    d[b] = a / 127.f;
    const __m512 inv = _mm512_set1_ps(a > 0.f ? 127.f / a : 0.f);
    const __m512i i0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, inv)), i1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, inv));
    offset[b] = 8.f * d[b] * static_cast<float>(_mm512_reduce_add_epi32(_mm512_add_epi32(i0, i1)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + b * kBlock), _mm512_cvtsepi32_epi8(i0));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + b * kBlock + 16), _mm512_cvtsepi32_epi8(i1));
  }
}

// Two blocks per step: lanes 0-7 hold block b's int32 partial sums, lanes 8-15 block b + 1's.
template <bool kQ4>
SA2VA_AVX512VNNI float row_dot_avx512(const uint8_t* w, const uint16_t* ws, const int8_t* x, const float* xd,
                                      const float* offset, int64_t blocks) {
  constexpr int64_t kBytes = kQ4 ? kBlock / 2 : kBlock;
  const __m512i zero = _mm512_setzero_si512();
  const __m512i low = _mm512_set1_epi8(0x0f);
  const __m512i spread = _mm512_setr_epi64(0, 1, 0, 1, 2, 3, 2, 3);  // each block's 16 bytes twice
  const __m512i first_pair = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps(), correction = _mm512_setzero_ps();
  for (int64_t b0 = 0; b0 < blocks; b0 += 16) {
    const int64_t count = std::min<int64_t>(16, blocks - b0);
    const __mmask16 cm = count >= 16 ? __mmask16(0xffff) : __mmask16((1u << count) - 1);
    const __m512 wscale = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(cm, ws + b0));
    const __m512 scale = _mm512_mul_ps(wscale, _mm512_maskz_loadu_ps(cm, xd + b0));
    if constexpr (kQ4) correction = _mm512_fmadd_ps(wscale, _mm512_maskz_loadu_ps(cm, offset + b0), correction);
    __m512i pair = first_pair;
    for (int64_t i = 0; i < count; i += 2, pair = _mm512_add_epi32(pair, _mm512_set1_epi32(2))) {
      const int64_t b = b0 + i;
      const bool both = i + 1 < count;
      const __mmask64 xm = both ? ~__mmask64(0) : __mmask64(0xffffffff);
      const __m512i xv = _mm512_maskz_loadu_epi8(xm, x + b * kBlock);
      __m512i dot;
      if constexpr (kQ4) {
        const __m256i packed = _mm256_maskz_loadu_epi8(both ? __mmask32(0xffffffff) : __mmask32(0xffff), w + b * kBytes);
        const __m512i twice = _mm512_permutexvar_epi64(spread, _mm512_castsi256_si512(packed));
        // 128-bit lanes 0 and 2 keep the low nibbles (elements 0-15), lanes 1 and 3 take the high ones
        const __m512i codes = _mm512_and_si512(_mm512_mask_blend_epi64(0xcc, twice, _mm512_srli_epi16(twice, 4)), low);
        dot = _mm512_dpbusd_epi32(zero, codes, xv);
      } else {
        const __m512i wv = _mm512_maskz_loadu_epi8(xm, w + b * kBytes);
        const __m512i signed_x = _mm512_mask_sub_epi8(xv, _mm512_movepi8_mask(wv), zero, xv);
        dot = _mm512_dpbusd_epi32(zero, _mm512_abs_epi8(wv), signed_x);
      }
      const __m512 s = _mm512_permutexvar_ps(pair, scale);
      if (i & 2) acc1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), s, acc1);
      else acc0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), s, acc0);
    }
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1)) - _mm512_reduce_add_ps(correction);
}

}  // namespace

int64_t QuantizedActivations::blocks_for(int64_t k) { return (k + kBlock - 1) / kBlock; }

void QuantizedActivations::quantize(const float* x, int64_t rows, int64_t k, int64_t ldx) {
  this->rows = rows;
  this->k = k;
  blocks = blocks_for(k);
  const size_t nb = static_cast<size_t>(rows * blocks);
  if (codes.size() < nb * kBlock) codes.resize(nb * kBlock);
  if (scales.size() < nb) scales.resize(nb);
  if (offsets.size() < nb) offsets.resize(nb);
  for (int64_t r = 0; r < rows; ++r) {
    int8_t* q = codes.data() + r * blocks * kBlock;
    float* d = scales.data() + r * blocks;
    float* o = offsets.data() + r * blocks;
    switch (isa()) {
      case Isa::Avx512: quantize_row_avx512(x + r * ldx, k, q, d, o); break;
      case Isa::Avx2: quantize_row_avx2(x + r * ldx, k, q, d, o); break;
      case Isa::Scalar: quantize_row_scalar(x + r * ldx, k, q, d, o); break;
    }
  }
}

void quantized_rows_times_q8(bool q4, const uint8_t* w, int64_t ldw, const uint16_t* ws, int64_t ldws, int64_t rows,
                             const QuantizedActivations& x, float* y, int64_t ldy) {
  const int64_t nb = x.blocks;
  const Isa level = isa();
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* wr = w + r * ldw;
    const uint16_t* sr = ws + r * ldws;
    for (int64_t i = 0; i < x.rows; ++i) {
      const int8_t* xq = x.codes.data() + i * nb * kBlock;
      const float* xd = x.scales.data() + i * nb;
      const float* xo = x.offsets.data() + i * nb;
      float v;
      if (level == Isa::Avx512)
        v = q4 ? row_dot_avx512<true>(wr, sr, xq, xd, xo, nb) : row_dot_avx512<false>(wr, sr, xq, xd, xo, nb);
      else if (level == Isa::Avx2)
        v = q4 ? row_dot_avx2<true>(wr, sr, xq, xd, xo, nb) : row_dot_avx2<false>(wr, sr, xq, xd, xo, nb);
      else
        v = q4 ? q4_row_dot_scalar(wr, sr, xq, xd, xo, nb) : q8_row_dot_scalar(wr, sr, xq, xd, nb);
      y[i * ldy + r] = v;
    }
  }
}

}  // namespace sa2va::ops::simd
