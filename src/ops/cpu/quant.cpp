// Integer dot products of quantized weight rows (Q8_0, Q4_0) with activations quantized to 8 bits
// (cpu/simd.h, "Quantized weights"). Per 32-value block the products are summed in int32 and
// scaled once by d_w·d_x, so the weight bytes are streamed once with wide loads and never widened
// to floats: decode is bound by memory bandwidth, not by conversions.
//   AVX-512 VNNI: Q8_0 two blocks per zmm, vpdpbusd (u8 × s8 → s32), four weight rows per step;
//                 Q4_0 on rows interleaved by eight, two 32-byte chunks of a block per zmm
//   (Q4_0 kernels read only the interleaved layout: plain Q4_0 rows take the reference)
//   AVX2:         Q8_0 one block per ymm, vpmaddubsw + vpmaddwd; Q4_0 on rows interleaved by eight
//                 (ops/weight_matrix.h), one block of 8 rows per step
//   scalar:       the reference the tests compare both against (either Q4_0 layout)
// vpdpbusd and vpmaddubsw multiply an unsigned byte by a signed one. The weight codes are unsigned
// (Q8_0: q + 128, Q4_0: q + 8), so AVX-512 multiplies them as stored and subtracts the offset once
// per block as offset·d_w·(d_x·Σx_q). vpmaddubsw's int16 pair sums would overflow on 8-bit codes, so
// AVX2 recentres Q8_0 codes and moves the weight's sign onto the activation (|w|·(x·sign w)).

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/dtype.h"
#include "ops/cpu/simd.h"
#include "ops/cpu/simd_x86.h"

namespace sa2va::ops::simd {
namespace {

constexpr int64_t kBlock = kQ8Block;
// Below this block maximum 127/amax would overflow (subnormal amax): such a block quantizes to zeros.
constexpr float kTinyAmax = 127.f * std::numeric_limits<float>::min();

// ---------------------------------------------------------------------------- scalar (reference)
// One block: scale d = amax / 127, codes round(x / d) to nearest even, exactly as the SIMD variants.
void quantize_block_scalar(const float* x, int64_t n, int8_t* q, float& d, int32_t& sum) {
  float amax = 0.f;
  for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[i]));
  d = amax / 127.f;
  const float inv = amax >= kTinyAmax ? 127.f / amax : 0.f;
  sum = 0;
  for (int64_t i = 0; i < kBlock; ++i) {
    q[i] = i < n ? static_cast<int8_t>(std::nearbyint(x[i] * inv)) : 0;
    sum += q[i];
  }
}

void quantize_row_scalar(const float* x, int64_t k, int8_t* q, float* d, float* sum) {
  for (int64_t b = 0; b * kBlock < k; ++b) {
    int32_t codes;
    quantize_block_scalar(x + b * kBlock, std::min(kBlock, k - b * kBlock), q + b * kBlock, d[b], codes);
    sum[b] = d[b] * static_cast<float>(codes);
  }
}

// Σ_b d_w[b]·d_x[b]·Σ_j (code_j − offset)·x_j, the integer part exact.
float q8_row_dot_scalar(const uint8_t* w, const uint16_t* ws, const int8_t* x, const float* xd, int64_t blocks) {
  float s = 0.f;
  for (int64_t b = 0; b < blocks; ++b) {
    int32_t acc = 0;
    for (int64_t i = 0; i < kBlock; ++i) acc += (w[b * kBlock + i] - 128) * x[b * kBlock + i];
    s += f16_to_f32(ws[b]) * xd[b] * static_cast<float>(acc);
  }
  return s;
}

float q4_row_dot_scalar(const uint8_t* w, const uint16_t* ws, const int8_t* x, const float* xd, int64_t blocks) {
  float s = 0.f;
  for (int64_t b = 0; b < blocks; ++b) {
    int32_t acc = 0;
    const uint8_t* p = w + b * kBlock / 2;
    const int8_t* xb = x + b * kBlock;
    for (int64_t j = 0; j < kBlock / 2; ++j) acc += ((p[j] & 0x0f) - 8) * xb[j] + ((p[j] >> 4) - 8) * xb[j + kBlock / 2];
    s += f16_to_f32(ws[b]) * xd[b] * static_cast<float>(acc);
  }
  return s;
}

// Eight interleaved Q4_0 rows (ops/weight_matrix.h) against one activation row: out[0, 8).
constexpr int64_t kGroupRows = 8, kGroupBlockBytes = kGroupRows * (2 + kBlock / 2);
void q4_group_dot_scalar(const uint8_t* g, const int8_t* x, const float* xd, int64_t blocks, float* out) {
  for (int64_t r = 0; r < kGroupRows; ++r) {
    float s = 0.f;
    for (int64_t b = 0; b < blocks; ++b) {
      const uint8_t* block = g + b * kGroupBlockBytes;
      int32_t acc = 0;
      for (int64_t j = 0; j < kBlock / 2; ++j) {
        const uint8_t q = block[2 * kGroupRows + 32 * (j / 4) + 4 * r + j % 4];
        acc += ((q & 0x0f) - 8) * x[b * kBlock + j] + ((q >> 4) - 8) * x[b * kBlock + j + kBlock / 2];
      }
      uint16_t d;
      std::memcpy(&d, block + 2 * r, 2);
      s += f16_to_f32(d) * xd[b] * static_cast<float>(acc);
    }
    out[r] = s;
  }
}

// ---------------------------------------------------------------------------- AVX2
SA2VA_AVX2 inline int32_t hsum256_epi32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

SA2VA_AVX2 void quantize_row_avx2(const float* x, int64_t k, int8_t* q, float* d, float* sum_out) {
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
    const __m256 inv = _mm256_set1_ps(a >= kTinyAmax ? 127.f / a : 0.f);
    __m256i i32[4];
    for (int i = 0; i < 4; ++i) i32[i] = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], inv));  // nearest even
    const int32_t sum = hsum256_epi32(_mm256_add_epi32(_mm256_add_epi32(i32[0], i32[1]), _mm256_add_epi32(i32[2], i32[3])));
    sum_out[b] = d[b] * static_cast<float>(sum);
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
  const __m256i wv = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w)), _mm256_set1_epi8(-128));
  const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x));
  const __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv));
  return _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
}

// How far ahead the AVX2 Q8_0 rows kernel prefetches: eight rows, as the other rows kernels (two
// groups of four).
constexpr int64_t kAvx2PrefetchRows = 8;

// One Q8_0 row against one activation row; where prefetch_w is given, the same bytes of a later row
// are prefetched, one 64-byte line per two blocks.
SA2VA_AVX2 float q8_row_dot_avx2(const uint8_t* w, const uint16_t* ws, const int8_t* x, const float* xd,
                                 int64_t blocks, const uint8_t* prefetch_w) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  alignas(32) float scale[8];
  for (int64_t b0 = 0; b0 < blocks; b0 += 8) {
    const int64_t count = std::min<int64_t>(8, blocks - b0);
    block_scales_avx2(ws + b0, xd + b0, count, scale);
    int64_t i = 0;
    for (; i + 2 <= count; i += 2) {
      const int64_t b = b0 + i;
      if (prefetch_w) _mm_prefetch(reinterpret_cast<const char*>(prefetch_w + b * kBlock), _MM_HINT_T0);
      acc0 = _mm256_fmadd_ps(_mm256_broadcast_ss(scale + i), block_product_q8_avx2(w + b * kBlock, x + b * kBlock), acc0);
      acc1 = _mm256_fmadd_ps(_mm256_broadcast_ss(scale + i + 1),
                             block_product_q8_avx2(w + (b + 1) * kBlock, x + (b + 1) * kBlock), acc1);
    }
    if (i < count) {
      const int64_t b = b0 + i;
      acc0 = _mm256_fmadd_ps(_mm256_broadcast_ss(scale + i), block_product_q8_avx2(w + b * kBlock, x + b * kBlock), acc0);
    }
  }
  return hsum256(_mm256_add_ps(acc0, acc1));
}

// Eight interleaved Q4_0 rows against one activation row (x in plain block order), one block per
// step: chunk j's low nibbles are elements 4j..4j+3 of the 8 rows and meet those 4 activation bytes
// broadcast to every lane; its high nibbles meet elements 16 + 4j... The 8 int16 partial sums of a
// block fit in int16 (|code| <= 15, |x| <= 127: 8·2·15·127 < 2^15), so one vpmaddwd turns them into
// the 8 rows' int32 block sums, and the convert, the scale and the codes' offset (8·d_w·d_x·Σx) are
// paid once per block for all 8 rows. Prefetch runs a fixed distance ahead in the group's stream.
constexpr int64_t kGroupPrefetchBytes = 2048;
// Chunk j of a block: its int16 sums, low nibbles times activation word j, high ones times word j + 4.
SA2VA_AVX2 inline __m256i q4_chunk_sum_avx2(const uint8_t* chunk, int32_t x_low, int32_t x_high) {
  const __m256i low = _mm256_set1_epi8(0x0f);
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(chunk));
  return _mm256_add_epi16(_mm256_maddubs_epi16(_mm256_and_si256(v, low), _mm256_set1_epi32(x_low)),
                          _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(v, 4), low), _mm256_set1_epi32(x_high)));
}

SA2VA_AVX2 void q4_group_dot_avx2(const uint8_t* g, const int8_t* x, const float* xd, const float* sum,
                                  int64_t blocks, float* out) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* block = g + b * kGroupBlockBytes;
    const char* ahead = reinterpret_cast<const char*>(block) + kGroupPrefetchBytes;
    _mm_prefetch(ahead, _MM_HINT_T0);
    _mm_prefetch(ahead + 64, _MM_HINT_T0);
    _mm_prefetch(ahead + 128, _MM_HINT_T0);
    int32_t xw[8];  // the block's activations as 8 words of 4 bytes
    std::memcpy(xw, x + b * kBlock, sizeof(xw));
    const uint8_t* chunks = block + 2 * kGroupRows;
    const __m256i s16 = _mm256_add_epi16(
        _mm256_add_epi16(q4_chunk_sum_avx2(chunks, xw[0], xw[4]), q4_chunk_sum_avx2(chunks + 32, xw[1], xw[5])),
        _mm256_add_epi16(q4_chunk_sum_avx2(chunks + 64, xw[2], xw[6]), q4_chunk_sum_avx2(chunks + 96, xw[3], xw[7])));
    const __m256 dots = _mm256_cvtepi32_ps(_mm256_madd_epi16(s16, _mm256_set1_epi16(1)));
    const __m256 wscale = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block)));
    // d_x·Σ(code·x) − 8·d_x·Σx, then · d_w; two accumulators for two independent chains.
    const __m256 t = _mm256_fmadd_ps(dots, _mm256_set1_ps(xd[b]), _mm256_set1_ps(-8.f * sum[b]));
    if (b & 1) acc1 = _mm256_fmadd_ps(wscale, t, acc1);
    else acc0 = _mm256_fmadd_ps(wscale, t, acc0);
  }
  _mm256_storeu_ps(out, _mm256_add_ps(acc0, acc1));
}

// ---------------------------------------------------------------------------- AVX-512 VNNI
SA2VA_AVX512 void quantize_row_avx512(const float* x, int64_t k, int8_t* q, float* d, float* sum) {
  for (int64_t b = 0; b * kBlock < k; ++b) {
    const int64_t n = std::min(kBlock, k - b * kBlock);
    const __mmask16 m0 = n >= 16 ? __mmask16(0xffff) : __mmask16((1u << n) - 1);
    const __mmask16 m1 = n >= 32 ? __mmask16(0xffff) : n <= 16 ? __mmask16(0) : __mmask16((1u << (n - 16)) - 1);
    const __m512 v0 = _mm512_maskz_loadu_ps(m0, x + b * kBlock), v1 = _mm512_maskz_loadu_ps(m1, x + b * kBlock + 16);
    const float a = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
    d[b] = a / 127.f;
    const __m512 inv = _mm512_set1_ps(a >= kTinyAmax ? 127.f / a : 0.f);
    const __m512i i0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, inv)), i1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, inv));
    sum[b] = d[b] * static_cast<float>(_mm512_reduce_add_epi32(_mm512_add_epi32(i0, i1)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + b * kBlock), _mm512_cvtsepi32_epi8(i0));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + b * kBlock + 16), _mm512_cvtsepi32_epi8(i1));
  }
}

// R Q8_0 weight rows against one activation row, two blocks per step: lanes 0-7 hold block b's
// int32 partial sums, lanes 8-15 block b + 1's. The rows share the activation loads and the loop;
// each has its own accumulator (independent chains). out[r] = row r's dot product.
template <int R>
SA2VA_AVX512 void q8_rows_dot_avx512(const uint8_t* w, int64_t ldw, const uint16_t* ws, int64_t ldws,
                                     const int8_t* x, const float* xd, const float* sum, int64_t blocks,
                                     float* out, bool prefetch) {
  const __m512i zero = _mm512_setzero_si512();
  const __m512 code_offset = _mm512_set1_ps(128.f);
  __m512 acc[R], correction[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) acc[r] = correction[r] = _mm512_setzero_ps();
  for (int64_t b0 = 0; b0 < blocks; b0 += 16) {
    const int64_t count = std::min<int64_t>(16, blocks - b0);
    const __mmask16 cm = count >= 16 ? __mmask16(0xffff) : __mmask16((1u << count) - 1);
    const __m512 xs = _mm512_maskz_loadu_ps(cm, xd + b0);
    const __m512 xsum = _mm512_mul_ps(code_offset, _mm512_maskz_loadu_ps(cm, sum + b0));
    __m512 scale[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512 wscale = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(cm, ws + r * ldws + b0));
      scale[r] = _mm512_mul_ps(wscale, xs);
      correction[r] = _mm512_fmadd_ps(wscale, xsum, correction[r]);
    }
    __m512i pair = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    for (int64_t i = 0; i < count; i += 2, pair = _mm512_add_epi32(pair, _mm512_set1_epi32(2))) {
      const int64_t b = b0 + i;
      const bool both = i + 1 < count;
      const __mmask64 xm = both ? ~__mmask64(0) : __mmask64(0xffffffff);
      const __m512i xv = _mm512_maskz_loadu_epi8(xm, x + b * kBlock);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const uint8_t* wr = w + r * ldw + b * kBlock;
        // Two row groups ahead: rows are short (a few KB), which the hardware prefetcher barely
        // starts on before they end, and decode streams its weights from DRAM.
        if (prefetch) _mm_prefetch(reinterpret_cast<const char*>(wr + 2 * R * ldw), _MM_HINT_T0);
        const __m512i dot = _mm512_dpbusd_epi32(zero, _mm512_maskz_loadu_epi8(xm, wr), xv);
        acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_permutexvar_ps(pair, scale[r]), acc[r]);
      }
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) out[r] = _mm512_reduce_add_ps(_mm512_sub_ps(acc[r], correction[r]));
}

// Eight interleaved Q4_0 rows against one activation row on VNNI, two chunks per zmm: lanes 0-7 are
// the 8 rows' bytes of chunk j, lanes 8-15 those of chunk j + 1, so one vpdpbusd sums 4 products per
// row and chunk in int32 (no int16 bound) against activation words j | j + 1 spread over the two
// halves by a permute of the block's 32 activation bytes (held in a register; a copy expanded in
// memory was re-read from L2 for every group once K passed a few thousand). Both halves carry
// partial sums of the same 8 rows; they are added once at the end, so the scales go in twice (each
// half subtracts half the codes' offset).
// Activation words first | first + 1 of a block's 8, each over 8 lanes.
SA2VA_AVX512 inline __m512i spread_word_pair(__m512i words, int first) {
  const __m512i pair = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
  return _mm512_permutexvar_epi32(_mm512_add_epi32(pair, _mm512_set1_epi32(first)), words);
}

SA2VA_AVX512 inline __m512 q4_group_block_avx512(const uint8_t* block, const int8_t* x, float xd, float sum) {
  const __m512i low = _mm512_set1_epi8(0x0f);
  const __m512i words = _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x)));
  const __m512i c01 = _mm512_loadu_si512(block + 2 * kGroupRows), c23 = _mm512_loadu_si512(block + 2 * kGroupRows + 64);
  // chunks 0|1 low nibbles meet words 0|1, their high nibbles words 4|5; chunks 2|3: words 2|3, 6|7
  __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_and_si512(c01, low), spread_word_pair(words, 0));
  dot = _mm512_dpbusd_epi32(dot, _mm512_and_si512(_mm512_srli_epi16(c01, 4), low), spread_word_pair(words, 4));
  dot = _mm512_dpbusd_epi32(dot, _mm512_and_si512(c23, low), spread_word_pair(words, 2));
  dot = _mm512_dpbusd_epi32(dot, _mm512_and_si512(_mm512_srli_epi16(c23, 4), low), spread_word_pair(words, 6));
  // the 8 scales in both halves
  const __m512 wscale = _mm512_cvtph_ps(_mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block))));
  // d_x·Σ(code·x) − 8·d_x·Σx, half the offset per half, then · d_w
  return _mm512_mul_ps(wscale, _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_set1_ps(xd), _mm512_set1_ps(-4.f * sum)));
}

SA2VA_AVX512 void q4_group_dot_avx512(const uint8_t* g, const int8_t* x, const float* xd, const float* sum,
                                      int64_t blocks, float* out) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  int64_t b = 0;
  for (; b + 2 <= blocks; b += 2) {
    const uint8_t* block = g + b * kGroupBlockBytes;
    const char* ahead = reinterpret_cast<const char*>(block) + kGroupPrefetchBytes;
    for (int line = 0; line < 5; ++line) _mm_prefetch(ahead + 64 * line, _MM_HINT_T0);
    acc0 = _mm512_add_ps(acc0, q4_group_block_avx512(block, x + b * kBlock, xd[b], sum[b]));
    acc1 = _mm512_add_ps(acc1, q4_group_block_avx512(block + kGroupBlockBytes, x + (b + 1) * kBlock, xd[b + 1], sum[b + 1]));
  }
  if (b < blocks) acc0 = _mm512_add_ps(acc0, q4_group_block_avx512(g + b * kGroupBlockBytes, x + b * kBlock, xd[b], sum[b]));
  const __m512 acc = _mm512_add_ps(acc0, acc1);
  _mm256_storeu_ps(out, _mm256_add_ps(_mm512_castps512_ps256(acc), _mm512_extractf32x8_ps(acc, 1)));
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
  if (sums.size() < nb) sums.resize(nb);
  for (int64_t r = 0; r < rows; ++r) {
    int8_t* q = codes.data() + r * blocks * kBlock;
    float* d = scales.data() + r * blocks;
    float* o = sums.data() + r * blocks;
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
  // AVX-512 Q8_0: kRows weight rows per step share the activation loads, and a group's rows are one
  // contiguous stretch of memory. Q4_0 runs on rows interleaved by eight (q4_interleaved_times_q8,
  // the layout loaders arrange through ops::kernel_layout); plain Q4_0 rows here take the reference.
  constexpr int64_t kRows = 4;
  const bool grouped = level == Isa::Avx512 && !q4;
  for (int64_t r = 0; r < rows; r += grouped ? kRows : 1) {
    const uint8_t* wr = w + r * ldw;
    const uint16_t* sr = ws + r * ldws;
    for (int64_t i = 0; i < x.rows; ++i) {
      const int8_t* xq = x.codes.data() + i * nb * kBlock;
      const float* xd = x.scales.data() + i * nb;
      const float* xo = x.sums.data() + i * nb;
      if (grouped) {
        auto group = [&]<int R>(std::integral_constant<int, R>, int64_t j, float* out, bool prefetch) {
          q8_rows_dot_avx512<R>(wr + j * ldw, ldw, sr + j * ldws, ldws, xq, xd, xo, nb, out, prefetch);
        };
        float out[kRows];
        if (rows - r >= kRows) {
          group(std::integral_constant<int, kRows>{}, 0, out, r + 3 * kRows <= rows);
        } else {
          for (int64_t j = 0; j < rows - r; ++j) group(std::integral_constant<int, 1>{}, j, out + j, false);
        }
        for (int64_t j = 0; j < std::min(kRows, rows - r); ++j) y[i * ldy + r + j] = out[j];
        continue;
      }
      float v;
      if (level != Isa::Scalar && !q4) {
        // Rows of Sa2VA-1B are 896 bytes, too short for the hardware prefetcher to start on: the row
        // kAvx2PrefetchRows ahead is fetched with this one (its scales too), on the first activation
        // row only (later rows find this one in L1).
        const bool prefetch = i == 0 && r + kAvx2PrefetchRows < rows;
        if (prefetch) _mm_prefetch(reinterpret_cast<const char*>(sr + kAvx2PrefetchRows * ldws), _MM_HINT_T0);
        v = q8_row_dot_avx2(wr, sr, xq, xd, nb, prefetch ? wr + kAvx2PrefetchRows * ldw : nullptr);
      } else {
        v = q4 ? q4_row_dot_scalar(wr, sr, xq, xd, nb) : q8_row_dot_scalar(wr, sr, xq, xd, nb);
      }
      y[i * ldy + r] = v;
    }
  }
}

void q4_interleaved_times_q8(const uint8_t* w, int64_t group_bytes, int64_t groups, int64_t rows,
                             const QuantizedActivations& x, float* y, int64_t ldy) {
  const int64_t nb = x.blocks;
  const Isa level = isa();
  // Group by group, every activation row against the group (re-read from L1 for the second row on).
  for (int64_t g = 0; g < groups; ++g) {
    const uint8_t* group = w + g * group_bytes;
    const int64_t valid = std::min(kGroupRows, rows - g * kGroupRows);
    for (int64_t i = 0; i < x.rows; ++i) {
      const int8_t* xq = x.codes.data() + i * nb * kBlock;
      const float* xd = x.scales.data() + i * nb;
      const float* sum = x.sums.data() + i * nb;
      alignas(32) float out[kGroupRows];
      if (level == Isa::Avx512) q4_group_dot_avx512(group, xq, xd, sum, nb, out);
      else if (level == Isa::Avx2) q4_group_dot_avx2(group, xq, xd, sum, nb, out);
      else q4_group_dot_scalar(group, xq, xd, nb, out);
      std::memcpy(y + i * ldy + g * kGroupRows, out, sizeof(float) * static_cast<size_t>(valid));
    }
  }
}

}  // namespace sa2va::ops::simd
