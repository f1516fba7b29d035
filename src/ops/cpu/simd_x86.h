// The x86 side of the SIMD kernel files (cpu/simd.cpp, cpu/quant.cpp, cpu/gemm_bf16.cpp): the
// intrinsics, the target attributes that compile each variant for its instruction set, and small
// inline vector helpers they share.
#pragma once
#if defined(SA2VA_EMULATE_WIDE_X86)
// The test build that runs the AVX-512 and AMX variants on a CPU with AVX2 only (x86_emulation.h):
// compiled for AVX2 + FMA + F16C as a whole, the wider instructions in plain C++.
#include "ops/cpu/x86_emulation.h"
#define SA2VA_AVX2
#define SA2VA_AVX512
#define SA2VA_AMX
#else
#include <immintrin.h>
#define SA2VA_AVX2 __attribute__((target("avx2,fma,f16c")))
// Isa::Avx512 requires BF16 and VNNI dot products both.
#define SA2VA_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx512vnni,fma")))
#define SA2VA_AMX __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,amx-tile,amx-bf16")))
#endif

#include <cstdint>

// For the kernel files that include this header: GCC 12's AVX-512 headers trip -Wmaybe-uninitialized
// on masked loads (_mm512_undefined_* placeholders), and capture-less lambdas returning vectors get a
// -Wpsabi note for a function-pointer ABI never used here.
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wpsabi"

namespace sa2va::ops::simd {

// Σ of the 8 lanes.
SA2VA_AVX2 inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// max of the 8 lanes.
SA2VA_AVX2 inline float hmax256(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  return _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
}

// Transposes 8 rows of 8 32-bit words (row i at src + i·src_row_bytes) into dst[j·dst_stride + i] =
// word j of row i: 8 loads, 24 shuffles, 8 stores. Packs the bf16 GEMM's pair panels and the f32
// attention's key panels on AVX2.
SA2VA_AVX2 __attribute__((always_inline)) inline void transpose_8x8_words(const char* src, int64_t src_row_bytes,
                                                                          float* dst, int64_t dst_stride) {
  __m256 r[8], t[8], u[8];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(reinterpret_cast<const float*>(src + i * src_row_bytes));
  // t: rows 2i, 2i+1 interleaved within each 128-bit half; u[4h+k]: word k (and k+4 in the high
  // half) of rows 4h..4h+3.
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
#pragma GCC unroll 2
  for (int h = 0; h < 2; ++h) {
    u[4 * h] = _mm256_shuffle_ps(t[4 * h], t[4 * h + 2], 0x44);
    u[4 * h + 1] = _mm256_shuffle_ps(t[4 * h], t[4 * h + 2], 0xEE);
    u[4 * h + 2] = _mm256_shuffle_ps(t[4 * h + 1], t[4 * h + 3], 0x44);
    u[4 * h + 3] = _mm256_shuffle_ps(t[4 * h + 1], t[4 * h + 3], 0xEE);
  }
#pragma GCC unroll 4
  for (int k = 0; k < 4; ++k) {
    _mm256_storeu_ps(dst + k * dst_stride, _mm256_permute2f128_ps(u[k], u[4 + k], 0x20));
    _mm256_storeu_ps(dst + (4 + k) * dst_stride, _mm256_permute2f128_ps(u[k], u[4 + k], 0x31));
  }
}

}  // namespace sa2va::ops::simd
