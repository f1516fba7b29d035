// SIMD building blocks of the CPU kernels (cpu/simd.h): dot products, axpy, the bf16 row and
// tile products, bf16 packing and the vectorised exp/erf/tanh maps, each in AVX-512, AVX2+FMA and
// scalar variants chosen at run time (the instruction set is detected once).
#include "ops/cpu/simd.h"
#include "ops/cpu/simd_x86.h"

#include "core/dtype.h"

#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

namespace sa2va::ops::simd {
namespace {

// Read from CPUID directly: not every compiler's __builtin_cpu_supports knows "avx512bf16" or "f16c".
bool cpu_has_avx512_bf16() {  // leaf 7 sub-leaf 1, EAX bit 5
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx) && ((eax >> 5) & 1u) != 0;
}
bool cpu_has_f16c() {  // leaf 1, ECX bit 29
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid(1, &eax, &ebx, &ecx, &edx) && ((ecx >> 29) & 1u) != 0;
}

Isa detect_isa() {
  __builtin_cpu_init();
#if defined(SA2VA_EMULATE_WIDE_X86)
  return Isa::Avx512;  // the AVX-512 variants in plain C++ over native AVX2 (x86_emulation.h)
#endif
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && cpu_has_avx512_bf16() &&
      __builtin_cpu_supports("avx512vnni"))
    return Isa::Avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c())
    return Isa::Avx2;
  return Isa::Scalar;
}

const Isa g_detected = detect_isa();
std::atomic<int> g_cap{static_cast<int>(Isa::Avx512)};

// AMX with bf16 (CPUID leaf 7: EDX bit 22 AMX-BF16, bit 24 AMX-TILE), the OS saving the tile state
// (XCR0 bits 17 and 18), and the process granted that state (Linux asks for it once per process).
bool detect_amx() {
#if defined(SA2VA_EMULATE_WIDE_X86)
  return true;  // tiles emulated per thread
#endif
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) || ((edx >> 22) & 1u) == 0 || ((edx >> 24) & 1u) == 0)
    return false;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx) || ((ecx >> 27) & 1u) == 0) return false;  // OSXSAVE
  unsigned xcr0_lo = 0, xcr0_hi = 0;
  __asm__("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
  if (((xcr0_lo >> 17) & 3u) != 3u) return false;
#if defined(__linux__)
  constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  return false;
#endif
}
const bool g_amx_detected = g_detected == Isa::Avx512 && detect_amx();
std::atomic<bool> g_amx_enabled{true};

// ---------------------------------------------------------------------------- scalar
float dot_scalar(const float* a, const float* b, int64_t n) {
  float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += a[i] * b[i];
    s1 += a[i + 1] * b[i + 1];
    s2 += a[i + 2] * b[i + 2];
    s3 += a[i + 3] * b[i + 3];
  }
  for (; i < n; ++i) s0 += a[i] * b[i];
  return (s0 + s1) + (s2 + s3);
}

void layer_norm_row_scalar(const float* x, int64_t n, const float* w, const float* b, float eps, float* y) {
  float sum = 0.f;
  for (int64_t i = 0; i < n; ++i) sum += x[i];
  const float mean = sum / static_cast<float>(n);
  float centred = 0.f;
  for (int64_t i = 0; i < n; ++i) centred += (x[i] - mean) * (x[i] - mean);
  const float inv = 1.f / std::sqrt(centred / static_cast<float>(n) + eps);
  for (int64_t i = 0; i < n; ++i) {
    float v = (x[i] - mean) * inv;
    if (w) v *= w[i];
    if (b) v += b[i];
    y[i] = v;
  }
}

void axpy_scalar(float alpha, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

void scale_scalar(float alpha, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = alpha * x[i];
}

void rotate_pairs_scalar(float* v, const float* c, const float* s, int64_t n) {
  for (int64_t i = 0; i < n; i += 2) {
    const float re = v[i], im = v[i + 1];
    v[i] = re * c[i] + im * s[i];
    v[i + 1] = im * c[i + 1] + re * s[i + 1];
  }
}

void weighted_sum_rows_scalar(const float* w, const float* rows, int64_t ld, int64_t count, int64_t n, float* out) {
  std::fill(out, out + n, 0.f);
  for (int64_t j = 0; j < count; ++j) axpy_scalar(w[j], rows + j * ld, out, n);
}

void bf16_rows_scalar(const uint16_t* w, int64_t ldw, int64_t rows, int64_t k, const float* x, int64_t ldx,
                      int64_t m, float* y, int64_t ldy) {
  for (int64_t r = 0; r < rows; ++r) {
    const uint16_t* wr = w + r * ldw;
    for (int64_t i = 0; i < m; ++i) {
      const float* xi = x + i * ldx;
      float s0 = 0, s1 = 0;
      int64_t j = 0;
      for (; j + 2 <= k; j += 2) {
        s0 += bf16_to_f32(wr[j]) * xi[j];
        s1 += bf16_to_f32(wr[j + 1]) * xi[j + 1];
      }
      if (j < k) s0 += bf16_to_f32(wr[j]) * xi[j];
      y[i * ldy + r] = s0 + s1;
    }
  }
}

// erfc(z) for z >= 0 with < 1.2e-7 relative error (Chebyshev fit of erfc·exp(z²)).
inline float erfc_nonneg(float z) {
  float t = 1.f / (1.f + 0.5f * z);
  float p = -0.82215223f + t * 0.17087277f;
  p = 1.48851587f + t * p;
  p = -1.13520398f + t * p;
  p = 0.27886807f + t * p;
  p = -0.18628806f + t * p;
  p = 0.09678418f + t * p;
  p = 0.37409196f + t * p;
  p = 1.00002368f + t * p;
  p = -1.26551223f + t * p;
  return t * std::exp(-z * z + p);
}

// ---------------------------------------------------------------------------- AVX2
SA2VA_AVX2 float dot_avx2(const float* a, const float* b, int64_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
  }
  for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
  float s = hsum256(_mm256_add_ps(s0, s1));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

SA2VA_AVX2 void layer_norm_row_avx2(const float* x, int64_t n, const float* w, const float* b, float eps, float* y) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = _mm256_add_ps(s0, _mm256_loadu_ps(x + i));
    s1 = _mm256_add_ps(s1, _mm256_loadu_ps(x + i + 8));
  }
  float sum = hsum256(_mm256_add_ps(s0, s1));
  for (; i < n; ++i) sum += x[i];
  const float mean = sum / static_cast<float>(n);
  const __m256 m = _mm256_set1_ps(mean);
  s0 = s1 = _mm256_setzero_ps();
  for (i = 0; i + 16 <= n; i += 16) {
    const __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(x + i), m), d1 = _mm256_sub_ps(_mm256_loadu_ps(x + i + 8), m);
    s0 = _mm256_fmadd_ps(d0, d0, s0);
    s1 = _mm256_fmadd_ps(d1, d1, s1);
  }
  float centred = hsum256(_mm256_add_ps(s0, s1));
  for (; i < n; ++i) centred += (x[i] - mean) * (x[i] - mean);
  const float inv = 1.f / std::sqrt(centred / static_cast<float>(n) + eps);
  const __m256 s = _mm256_set1_ps(inv);
  for (i = 0; i + 8 <= n; i += 8) {
    __m256 v = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), m), s);
    if (w) v = _mm256_mul_ps(v, _mm256_loadu_ps(w + i));
    if (b) v = _mm256_add_ps(v, _mm256_loadu_ps(b + i));
    _mm256_storeu_ps(y + i, v);
  }
  for (; i < n; ++i) {
    float v = (x[i] - mean) * inv;
    if (w) v *= w[i];
    if (b) v += b[i];
    y[i] = v;
  }
}

SA2VA_AVX2 void axpy_avx2(float alpha, const float* x, float* y, int64_t n) {
  const __m256 a = _mm256_set1_ps(alpha);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(a, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; ++i) y[i] += alpha * x[i];
}

SA2VA_AVX2 void scale_avx2(float alpha, const float* x, float* y, int64_t n) {
  const __m256 a = _mm256_set1_ps(alpha);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_mul_ps(a, _mm256_loadu_ps(x + i)));
  for (; i < n; ++i) y[i] = alpha * x[i];
}

// 32 columns at a time summed over all rows in four registers (the output is stored once, not
// loaded and stored per row as repeated axpys would); the last columns one at a time.
SA2VA_AVX2 void weighted_sum_rows_avx2(const float* w, const float* rows, int64_t ld, int64_t count, int64_t n,
                                       float* out) {
  int64_t c = 0;
  while (c + 8 <= n) {
    const int64_t vectors = std::min<int64_t>(4, (n - c) / 8);
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t j = 0; j < count; ++j) {
      const __m256 wj = _mm256_set1_ps(w[j]);
      const float* r = rows + j * ld + c;
      for (int64_t v = 0; v < vectors; ++v) acc[v] = _mm256_fmadd_ps(wj, _mm256_loadu_ps(r + 8 * v), acc[v]);
    }
    for (int64_t v = 0; v < vectors; ++v) _mm256_storeu_ps(out + c + 8 * v, acc[v]);
    c += 8 * vectors;
  }
  for (; c < n; ++c) {
    float sum = 0.f;
    for (int64_t j = 0; j < count; ++j) sum += w[j] * rows[j * ld + c];
    out[c] = sum;
  }
}

SA2VA_AVX2 inline __m256 widen_bf16_avx2(const uint16_t* p) {
  __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

// R weight rows × MB activation rows per step, R·MB accumulators (a few activation rows; one goes
// through bf16_row_stream_avx2): four rows for one or two activation rows, so that independent FMA
// chains hide the FMA latency, two for more rows. Weight rows are short (1.8 KB at K = 896): the same
// place two row groups ahead is prefetched, once per 64-byte line, as the hardware prefetcher barely
// starts on a row before it ends.
template <int R, int MB>
SA2VA_AVX2 int64_t bf16_rows_avx2_step(const uint16_t* w, int64_t ldw, int64_t rows, int64_t k, const float* x,
                                       int64_t ldx, float* y, int64_t ldy) {
  const int64_t k8 = k & ~int64_t{7};
  int64_t r = 0;
  for (; r + R <= rows; r += R) {
    const uint16_t* wr[R];
    #pragma GCC unroll 8
    for (int a = 0; a < R; ++a) wr[a] = w + (r + a) * ldw;
    const bool prefetch = r + 3 * R <= rows;
    __m256 acc[R][MB];
    #pragma GCC unroll 16
    for (int a = 0; a < R; ++a)
      #pragma GCC unroll 16
      for (int i = 0; i < MB; ++i) acc[a][i] = _mm256_setzero_ps();
    for (int64_t j = 0; j < k8; j += 8) {
      __m256 wv[R];
      #pragma GCC unroll 8
      for (int a = 0; a < R; ++a) {
        if (prefetch && j % 32 == 0) _mm_prefetch(reinterpret_cast<const char*>(wr[a] + 2 * R * ldw + j), _MM_HINT_T0);
        wv[a] = widen_bf16_avx2(wr[a] + j);
      }
      #pragma GCC unroll 16
      for (int i = 0; i < MB; ++i) {
        const __m256 xv = _mm256_loadu_ps(x + i * ldx + j);
        #pragma GCC unroll 8
        for (int a = 0; a < R; ++a) acc[a][i] = _mm256_fmadd_ps(wv[a], xv, acc[a][i]);
      }
    }
    #pragma GCC unroll 8
    for (int a = 0; a < R; ++a)
      #pragma GCC unroll 16
      for (int i = 0; i < MB; ++i) {
        float sum = hsum256(acc[a][i]);
        for (int64_t j = k8; j < k; ++j) sum += bf16_to_f32(wr[a][j]) * x[i * ldx + j];
        y[i * ldy + r + a] = sum;
      }
  }
  return r;
}

// One activation row (decode): weight rows one after the other, so that each thread reads one
// sequential stream, which the hardware prefetchers follow across row ends (four rows at a time were
// four short streams: 24.5-26.4 GB/s against 28.6-32.0 this way, bench/README.md). Four
// accumulators over 32 values hide the FMA latency; each 64-byte line is prefetched 1 KiB ahead.
SA2VA_AVX2 void bf16_row_stream_avx2(const uint16_t* w, int64_t ldw, int64_t rows, int64_t k, const float* x,
                                     float* y) {
  constexpr int64_t kPrefetchBytes = 1024;
  const int64_t k32 = k & ~int64_t{31};
  for (int64_t r = 0; r < rows; ++r) {
    const uint16_t* wr = w + r * ldw;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    int64_t j = 0;
    for (; j < k32; j += 32) {
      _mm_prefetch(reinterpret_cast<const char*>(wr + j) + kPrefetchBytes, _MM_HINT_T0);
      a0 = _mm256_fmadd_ps(widen_bf16_avx2(wr + j), _mm256_loadu_ps(x + j), a0);
      a1 = _mm256_fmadd_ps(widen_bf16_avx2(wr + j + 8), _mm256_loadu_ps(x + j + 8), a1);
      a2 = _mm256_fmadd_ps(widen_bf16_avx2(wr + j + 16), _mm256_loadu_ps(x + j + 16), a2);
      a3 = _mm256_fmadd_ps(widen_bf16_avx2(wr + j + 24), _mm256_loadu_ps(x + j + 24), a3);
    }
    for (; j + 8 <= k; j += 8) a0 = _mm256_fmadd_ps(widen_bf16_avx2(wr + j), _mm256_loadu_ps(x + j), a0);
    float sum = hsum256(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    for (; j < k; ++j) sum += bf16_to_f32(wr[j]) * x[j];
    y[r] = sum;
  }
}

template <int MB>
SA2VA_AVX2 void bf16_rows_avx2_block(const uint16_t* w, int64_t ldw, int64_t rows, int64_t k, const float* x,
                                     int64_t ldx, float* y, int64_t ldy) {
  constexpr int R = MB <= 2 ? 4 : 2;
  const int64_t done = bf16_rows_avx2_step<R, MB>(w, ldw, rows, k, x, ldx, y, ldy);
  // The last rows (fewer than R) one at a time.
  if (done < rows) bf16_rows_avx2_step<1, MB>(w + done * ldw, ldw, rows - done, k, x, ldx, y + done, ldy);
}

template <int R, int P>
SA2VA_AVX2 void f32_scores_tile_avx2(const float* q, int64_t ldq, const float* panels, int64_t dim, float* s,
                                     int64_t lds) {
  __m256 acc[R][P];
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
    for (int p = 0; p < P; ++p) acc[r][p] = _mm256_setzero_ps();
  for (int64_t e = 0; e < dim; ++e) {
    __m256 k[P];
#pragma GCC unroll 2
    for (int p = 0; p < P; ++p) k[p] = _mm256_loadu_ps(panels + (p * dim + e) * 8);
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r) {
      const __m256 b = _mm256_broadcast_ss(q + r * ldq + e);
#pragma GCC unroll 2
      for (int p = 0; p < P; ++p) acc[r][p] = _mm256_fmadd_ps(b, k[p], acc[r][p]);
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
    for (int p = 0; p < P; ++p) _mm256_storeu_ps(s + r * lds + 8 * p, acc[r][p]);
}

template <int R, int C>
SA2VA_AVX2 void f32_values_tile_avx2(const float* p, int64_t ldp, const float* v, int64_t ldv, int64_t keys, float* o,
                                     int64_t ldo) {
  __m256 acc[R][C];
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
    for (int c = 0; c < C; ++c) acc[r][c] = _mm256_loadu_ps(o + r * ldo + 8 * c);
  for (int64_t j = 0; j < keys; ++j) {
    __m256 vv[C];
#pragma GCC unroll 2
    for (int c = 0; c < C; ++c) vv[c] = _mm256_loadu_ps(v + j * ldv + 8 * c);
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r) {
      const __m256 b = _mm256_broadcast_ss(p + r * ldp + j);
#pragma GCC unroll 2
      for (int c = 0; c < C; ++c) acc[r][c] = _mm256_fmadd_ps(b, vv[c], acc[r][c]);
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
    for (int c = 0; c < C; ++c) _mm256_storeu_ps(o + r * ldo + 8 * c, acc[r][c]);
}

// Whole 8-key panels, 8 dimensions at a time by register transposes; returns the dimensions done.
SA2VA_AVX2 int64_t pack_f32_key_panel_avx2(const float* keys, int64_t ld, int64_t dim, float* panel) {
  int64_t e = 0;
  for (; e + 8 <= dim; e += 8)
    transpose_8x8_words(reinterpret_cast<const char*>(keys + e), ld * static_cast<int64_t>(sizeof(float)),
                        panel + e * kF32PanelKeys, kF32PanelKeys);
  return e;
}

SA2VA_AVX2 float scale_mask_max_avx2(float* s, int64_t n, float scale, const float* mask) {
  const __m256 sc = _mm256_set1_ps(scale);
  __m256 m = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_mul_ps(_mm256_loadu_ps(s + i), sc);
    if (mask) v = _mm256_add_ps(v, _mm256_loadu_ps(mask + i));
    _mm256_storeu_ps(s + i, v);
    m = _mm256_max_ps(m, v);
  }
  float r = hmax256(m);
  for (; i < n; ++i) {
    s[i] = s[i] * scale + (mask ? mask[i] : 0.f);
    r = std::max(r, s[i]);
  }
  return r;
}

// Calls f.template operator()<R>() for R = rows in 1..6.
template <typename F>
void with_rows(int64_t rows, F f) {
  switch (rows) {
    case 1: return f(std::integral_constant<int, 1>{});
    case 2: return f(std::integral_constant<int, 2>{});
    case 3: return f(std::integral_constant<int, 3>{});
    case 4: return f(std::integral_constant<int, 4>{});
    case 5: return f(std::integral_constant<int, 5>{});
    default: return f(std::integral_constant<int, 6>{});
  }
}

// exp(r) for r = x - n·ln2 in [-ln2/2, ln2/2] (ln2 in two parts, so r is exact to f32): degree-6
// polynomial, ~1e-7 relative error. The exponentials below multiply it by 2^n.
SA2VA_AVX2 inline __m256 exp_reduced_avx2(__m256 x, __m256 n) {
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500E-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507E-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073E-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894E-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459E-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201E-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.f)));
  return p;
}

// exp(x) for 8 lanes: range reduction by ln2, degree-6 polynomial, exponent by integer add.
SA2VA_AVX2 inline __m256 exp_avx2(__m256 x) {
  const __m256 hi = _mm256_set1_ps(88.3762626647949f), lo = _mm256_set1_ps(-87.3365447504f);
  const __m256 underflow = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
  x = _mm256_min_ps(hi, _mm256_max_ps(lo, x));  // NaN in the second operand passes through: NaN out
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 p = exp_reduced_avx2(x, n);
  // n in [-126, 128]: split the power of two in two factors so n = 128 does not overflow the exponent field.
  const __m256i ni = _mm256_cvtps_epi32(n);
  const __m256i half = _mm256_srai_epi32(ni, 1);
  const __m256 f1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(half, _mm256_set1_epi32(127)), 23));
  const __m256 f2 = _mm256_castsi256_ps(
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(ni, half), _mm256_set1_epi32(127)), 23));
  return _mm256_andnot_ps(underflow, _mm256_mul_ps(_mm256_mul_ps(p, f1), f2));
}

// exp(x) for 8 lanes of x <= 0 or a little above (a shifted softmax score, erfc's exponent; valid
// up to x ~ 88): the same reduction and polynomial, with the power of two added straight into the
// exponent bits (n rounded by the 1.5·2^23 trick), which holds down to n = -125; below x = -86.5
// (-inf included) the result is 0, where exp_avx2 gives at most 2.7e-38; with KeepNan a NaN stays
// NaN (without, a NaN whose low bits are set may come out as a tiny number: for callers whose
// result takes the NaN from elsewhere). 16 instructions per 8 lanes (18 with KeepNan), exp_avx2's 25.
template <bool KeepNan>
SA2VA_AVX2 inline __m256 exp_nonpositive_avx2(__m256 x) {
  const __m256 underflow = _mm256_cmp_ps(x, _mm256_set1_ps(-86.5f), _CMP_LT_OQ);
  const __m256 round_magic = _mm256_set1_ps(12582912.f);
  const __m256 t = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), round_magic);
  const __m256 n = _mm256_sub_ps(t, round_magic);  // round(x·log2 e), exact
  const __m256 p = exp_reduced_avx2(x, n);
  // t's low mantissa bits hold n in two's complement: shifted by 23 they are n·2^23 modulo 2^32.
  const __m256i power = _mm256_slli_epi32(_mm256_castps_si256(t), 23);
  const __m256 e = _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), power));
  if (!KeepNan) return _mm256_andnot_ps(underflow, e);
  return _mm256_or_ps(_mm256_andnot_ps(underflow, e), _mm256_and_ps(_mm256_cmp_ps(x, x, _CMP_UNORD_Q), x));
}

SA2VA_AVX2 inline __m256 sigmoid_avx2(__m256 x) {
  const __m256 one = _mm256_set1_ps(1.f);
  return _mm256_div_ps(one, _mm256_add_ps(one, exp_avx2(_mm256_sub_ps(_mm256_setzero_ps(), x))));
}

SA2VA_AVX2 inline __m256 erfc_nonneg_avx2(__m256 z) {
  const __m256 t = _mm256_div_ps(_mm256_set1_ps(1.f), _mm256_fmadd_ps(_mm256_set1_ps(0.5f), z, _mm256_set1_ps(1.f)));
  __m256 p = _mm256_fmadd_ps(t, _mm256_set1_ps(0.17087277f), _mm256_set1_ps(-0.82215223f));
  p = _mm256_fmadd_ps(t, p, _mm256_set1_ps(1.48851587f));
  p = _mm256_fmadd_ps(t, p, _mm256_set1_ps(-1.13520398f));
  p = _mm256_fmadd_ps(t, p, _mm256_set1_ps(0.27886807f));
  p = _mm256_fmadd_ps(t, p, _mm256_set1_ps(-0.18628806f));
  p = _mm256_fmadd_ps(t, p, _mm256_set1_ps(0.09678418f));
  p = _mm256_fmadd_ps(t, p, _mm256_set1_ps(0.37409196f));
  p = _mm256_fmadd_ps(t, p, _mm256_set1_ps(1.00002368f));
  p = _mm256_fmadd_ps(t, p, _mm256_set1_ps(-1.26551223f));
  // The exponent is <= ~1e-7; a NaN z reaches gelu's result through its product with x.
  return _mm256_mul_ps(t, exp_nonpositive_avx2<false>(_mm256_fnmadd_ps(z, z, p)));
}

template <typename F>
SA2VA_AVX2 inline void map_avx2(float* x, int64_t n, F f) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, f(_mm256_loadu_ps(x + i)));
  if (i < n) {
    float tmp[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    std::memcpy(tmp, x + i, sizeof(float) * (n - i));
    _mm256_storeu_ps(tmp, f(_mm256_loadu_ps(tmp)));
    std::memcpy(x + i, tmp, sizeof(float) * (n - i));
  }
}

SA2VA_AVX2 float max_avx2(const float* x, int64_t n) {
  __m256 m = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(x + i));
  float r = hmax256(m);
  for (; i < n; ++i) r = std::max(r, x[i]);
  return r;
}
SA2VA_AVX2 float exp_shifted_sum_avx2(float* x, int64_t n, float scale, float shift) {
  const __m256 s = _mm256_set1_ps(shift), sc = _mm256_set1_ps(scale);
  __m256 sum = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 e = exp_nonpositive_avx2<true>(_mm256_fmsub_ps(_mm256_loadu_ps(x + i), sc, s));
    _mm256_storeu_ps(x + i, e);
    sum = _mm256_add_ps(sum, e);
  }
  float r = hsum256(sum);
  for (; i < n; ++i) r += (x[i] = std::exp(std::fma(x[i], scale, -shift)));
  return r;
}
SA2VA_AVX2 void sigmoid_avx2_n(float* x, int64_t n) { map_avx2(x, n, [](__m256 v) SA2VA_AVX2 { return sigmoid_avx2(v); }); }
SA2VA_AVX2 void silu_avx2_n(float* x, int64_t n) {
  map_avx2(x, n, [](__m256 v) SA2VA_AVX2 { return _mm256_mul_ps(v, sigmoid_avx2(v)); });
}
SA2VA_AVX2 void gelu_tanh_avx2_n(float* x, int64_t n) {
  // 0.5·x·(1 + tanh(u)) = x·sigmoid(2u)
  map_avx2(x, n, [](__m256 v) SA2VA_AVX2 {
    const __m256 v3 = _mm256_mul_ps(_mm256_mul_ps(v, v), v);
    const __m256 u2 = _mm256_mul_ps(_mm256_set1_ps(2.f * 0.7978845608028654f),
                                    _mm256_fmadd_ps(_mm256_set1_ps(0.044715f), v3, v));
    return _mm256_mul_ps(v, sigmoid_avx2(u2));
  });
}
SA2VA_AVX2 void relu_avx2_n(float* x, int64_t n) {
  // max(v, 0) returns its second operand for NaN: 0, as the scalar form below.
  map_avx2(x, n, [](__m256 v) SA2VA_AVX2 { return _mm256_max_ps(v, _mm256_setzero_ps()); });
}
SA2VA_AVX2 void rotate_pairs_avx2(float* v, const float* c, const float* s, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_loadu_ps(v + i), swapped = _mm256_permute_ps(x, 0xB1);  // (im, re) per pair
    _mm256_storeu_ps(v + i, _mm256_fmadd_ps(x, _mm256_loadu_ps(c + i), _mm256_mul_ps(swapped, _mm256_loadu_ps(s + i))));
  }
  rotate_pairs_scalar(v + i, c + i, s + i, n - i);
}
SA2VA_AVX2 void gelu_erf_avx2_n(float* x, int64_t n) {
  // 0.5·x·(1 + erf(x/√2)) = 0.5·x·erfc(-x/√2): for x >= 0 use 2 - erfc(|z|), else erfc(|z|).
  map_avx2(x, n, [](__m256 v) SA2VA_AVX2 {
    const __m256 z = _mm256_mul_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.f), v), _mm256_set1_ps(0.70710678118654752f));
    const __m256 e = erfc_nonneg_avx2(z);
    const __m256 pos = _mm256_sub_ps(_mm256_set1_ps(2.f), e);
    const __m256 sel = _mm256_blendv_ps(pos, e, v);  // sign bit of v selects erfc
    return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), v), sel);
  });
}

// ---------------------------------------------------------------------------- AVX-512
// Calls step(i, mask) for i = 0, 16, 32, ... < n: whole blocks of 16 lanes with a constant full mask,
// then the last, partial block (if any) with the mask of its n - i lanes. A mask worked out at every
// step (a compare, a shift and a k-register move beside each load and store) made such loops 1.2-4x
// slower on AMD Zen 5 than the same loop with the mask out of it (bench/README.md).
template <typename Step>
SA2VA_AVX512 inline void blocks_of_16(int64_t n, Step step) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) step(i, __mmask16(0xffff));
  if (i < n) step(i, __mmask16((1u << (n - i)) - 1));
}

SA2VA_AVX512 float dot_avx512(const float* a, const float* b, int64_t n) {
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
  }
  for (; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - i)) - 1);
    s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s0);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

SA2VA_AVX512 void layer_norm_row_avx512(const float* x, int64_t n, const float* w, const float* b, float eps,
                                        float* y) {
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm512_add_ps(s0, _mm512_loadu_ps(x + i));
    s1 = _mm512_add_ps(s1, _mm512_loadu_ps(x + i + 16));
  }
  for (; i < n; i += 16) {
    const __mmask16 k = n - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - i)) - 1);
    s0 = _mm512_add_ps(s0, _mm512_maskz_loadu_ps(k, x + i));
  }
  const float mean = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1)) / static_cast<float>(n);
  const __m512 m = _mm512_set1_ps(mean);
  s0 = s1 = _mm512_setzero_ps();
  for (i = 0; i + 32 <= n; i += 32) {
    const __m512 d0 = _mm512_sub_ps(_mm512_loadu_ps(x + i), m), d1 = _mm512_sub_ps(_mm512_loadu_ps(x + i + 16), m);
    s0 = _mm512_fmadd_ps(d0, d0, s0);
    s1 = _mm512_fmadd_ps(d1, d1, s1);
  }
  for (; i < n; i += 16) {
    const __mmask16 k = n - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - i)) - 1);
    const __m512 d = _mm512_maskz_sub_ps(k, _mm512_maskz_loadu_ps(k, x + i), m);
    s0 = _mm512_fmadd_ps(d, d, s0);
  }
  const float centred = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
  const __m512 s = _mm512_set1_ps(1.f / std::sqrt(centred / static_cast<float>(n) + eps));
  blocks_of_16(n, [&](int64_t j, __mmask16 k) SA2VA_AVX512 {
    __m512 v = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + j), m), s);
    if (w) v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(k, w + j));
    if (b) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(k, b + j));
    _mm512_mask_storeu_ps(y + j, k, v);
  });
}

SA2VA_AVX512 void axpy_avx512(float alpha, const float* x, float* y, int64_t n) {
  const __m512 a = _mm512_set1_ps(alpha);
  blocks_of_16(n, [&](int64_t i, __mmask16 m) SA2VA_AVX512 {
    _mm512_mask_storeu_ps(y + i, m, _mm512_fmadd_ps(a, _mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i)));
  });
}

SA2VA_AVX512 void scale_avx512(float alpha, const float* x, float* y, int64_t n) {
  const __m512 a = _mm512_set1_ps(alpha);
  blocks_of_16(n, [&](int64_t i, __mmask16 m) SA2VA_AVX512 {
    _mm512_mask_storeu_ps(y + i, m, _mm512_mul_ps(a, _mm512_maskz_loadu_ps(m, x + i)));
  });
}

// 64 columns at a time summed over all rows in four registers (masked at the end).
SA2VA_AVX512 void weighted_sum_rows_avx512(const float* w, const float* rows, int64_t ld, int64_t count, int64_t n,
                                           float* out) {
  for (int64_t c = 0; c < n; c += 64) {
    __mmask16 m[4];
    for (int v = 0; v < 4; ++v) {
      const int64_t left = std::clamp<int64_t>(n - c - 16 * v, 0, 16);
      m[v] = left >= 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1);
    }
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps(), acc2 = _mm512_setzero_ps(),
           acc3 = _mm512_setzero_ps();
    for (int64_t j = 0; j < count; ++j) {
      const __m512 wj = _mm512_set1_ps(w[j]);
      const float* r = rows + j * ld + c;
      acc0 = _mm512_fmadd_ps(wj, _mm512_maskz_loadu_ps(m[0], r), acc0);
      acc1 = _mm512_fmadd_ps(wj, _mm512_maskz_loadu_ps(m[1], r + 16), acc1);
      acc2 = _mm512_fmadd_ps(wj, _mm512_maskz_loadu_ps(m[2], r + 32), acc2);
      acc3 = _mm512_fmadd_ps(wj, _mm512_maskz_loadu_ps(m[3], r + 48), acc3);
    }
    _mm512_mask_storeu_ps(out + c, m[0], acc0);
    _mm512_mask_storeu_ps(out + c + 16, m[1], acc1);
    _mm512_mask_storeu_ps(out + c + 32, m[2], acc2);
    _mm512_mask_storeu_ps(out + c + 48, m[3], acc3);
  }
}


// Four weight rows × MB activation rows per step; the K tail uses masked loads.
// Decode-sized product on bf16 dot products: x rows already rounded to bf16 (xb, zero-padded to a
// multiple of 32), four weight rows × MB activation rows per step, 32 values per instruction.
template <int MB>
SA2VA_AVX512 void bf16_rows_dp_avx512_block(const uint16_t* w, int64_t ldw, int64_t rows, int64_t k, const uint16_t* xb,
                                            int64_t ldxb, float* y, int64_t ldy) {
  constexpr int R = 4;
  for (int64_t r = 0; r < rows; r += R) {
    const int nr = static_cast<int>(std::min<int64_t>(R, rows - r));
    __m512 acc[R][MB];
    #pragma GCC unroll 16
    for (int a = 0; a < R; ++a)
      #pragma GCC unroll 16
      for (int i = 0; i < MB; ++i) acc[a][i] = _mm512_setzero_ps();
    const uint16_t* wr[R];
    #pragma GCC unroll 16
    for (int a = 0; a < R; ++a) wr[a] = w + (r + std::min(a, nr - 1)) * ldw;  // clamp: duplicate rows are discarded
    const bool prefetch = r + 3 * R <= rows;
    for (int64_t j = 0; j < k; j += 32) {
      const __mmask32 m = k - j >= 32 ? ~__mmask32(0) : __mmask32((1u << (k - j)) - 1);
      __m512bh wv[R];
      #pragma GCC unroll 16
      for (int a = 0; a < R; ++a) {
        // Rows are short (a few KB): the hardware prefetcher barely starts on one before it ends,
        // so the same place two row groups ahead is requested now (decode streams from DRAM).
        if (prefetch) _mm_prefetch(reinterpret_cast<const char*>(wr[a] + 2 * R * ldw + j), _MM_HINT_T0);
        wv[a] = (__m512bh)_mm512_maskz_loadu_epi16(m, wr[a] + j);
      }
      #pragma GCC unroll 16
      for (int i = 0; i < MB; ++i) {
        const __m512bh xv = (__m512bh)_mm512_loadu_si512(xb + i * ldxb + j);
        #pragma GCC unroll 16
        for (int a = 0; a < R; ++a) acc[a][i] = _mm512_dpbf16_ps(acc[a][i], wv[a], xv);
      }
    }
    #pragma GCC unroll 16
    for (int a = 0; a < R; ++a)
      #pragma GCC unroll 16
      for (int i = 0; i < MB; ++i)
        if (a < nr) y[i * ldy + r + a] = _mm512_reduce_add_ps(acc[a][i]);
  }
}


// exp(x) = 2^n · e^r with n = round(x / ln2), |r| <= ln2/2; e^r from a degree-7 polynomial (~1e-7).
SA2VA_AVX512 inline __m512 exp_avx512(__m512 x) {
  // The clamp bounds the reduction, NaN passing through (vmaxps/vminps return their second operand
  // for a NaN); scalef handles overflow to inf and underflow to 0.
  x = _mm512_min_ps(_mm512_set1_ps(89.f), _mm512_max_ps(_mm512_set1_ps(-104.f), x));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500E-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507E-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073E-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894E-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459E-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201E-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.f)));
  return _mm512_scalef_ps(p, n);
}

SA2VA_AVX512 inline __m512 sigmoid_avx512(__m512 x) {
  const __m512 one = _mm512_set1_ps(1.f);
  return _mm512_div_ps(one, _mm512_add_ps(one, exp_avx512(_mm512_sub_ps(_mm512_setzero_ps(), x))));
}

SA2VA_AVX512 inline __m512 erfc_nonneg_avx512(__m512 z) {
  const __m512 t = _mm512_div_ps(_mm512_set1_ps(1.f), _mm512_fmadd_ps(_mm512_set1_ps(0.5f), z, _mm512_set1_ps(1.f)));
  __m512 p = _mm512_fmadd_ps(t, _mm512_set1_ps(0.17087277f), _mm512_set1_ps(-0.82215223f));
  p = _mm512_fmadd_ps(t, p, _mm512_set1_ps(1.48851587f));
  p = _mm512_fmadd_ps(t, p, _mm512_set1_ps(-1.13520398f));
  p = _mm512_fmadd_ps(t, p, _mm512_set1_ps(0.27886807f));
  p = _mm512_fmadd_ps(t, p, _mm512_set1_ps(-0.18628806f));
  p = _mm512_fmadd_ps(t, p, _mm512_set1_ps(0.09678418f));
  p = _mm512_fmadd_ps(t, p, _mm512_set1_ps(0.37409196f));
  p = _mm512_fmadd_ps(t, p, _mm512_set1_ps(1.00002368f));
  p = _mm512_fmadd_ps(t, p, _mm512_set1_ps(-1.26551223f));
  return _mm512_mul_ps(t, exp_avx512(_mm512_fnmadd_ps(z, z, p)));
}

template <typename F>
SA2VA_AVX512 inline void map_avx512(float* x, int64_t n, F f) {
  blocks_of_16(n, [&](int64_t i, __mmask16 m) SA2VA_AVX512 {
    _mm512_mask_storeu_ps(x + i, m, f(_mm512_maskz_loadu_ps(m, x + i)));
  });
}

SA2VA_AVX512 float max_avx512(const float* x, int64_t n) {
  // Four running maxima: one would make every step wait for the previous vmaxps.
  const __m512 lowest = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  __m512 m0 = lowest, m1 = lowest, m2 = lowest, m3 = lowest;
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    m0 = _mm512_max_ps(m0, _mm512_loadu_ps(x + i));
    m1 = _mm512_max_ps(m1, _mm512_loadu_ps(x + i + 16));
    m2 = _mm512_max_ps(m2, _mm512_loadu_ps(x + i + 32));
    m3 = _mm512_max_ps(m3, _mm512_loadu_ps(x + i + 48));
  }
  for (; i < n; i += 16) {
    const __mmask16 k = n - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - i)) - 1);
    m0 = _mm512_mask_max_ps(m0, k, m0, _mm512_maskz_loadu_ps(k, x + i));
  }
  return _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(m0, m1), _mm512_max_ps(m2, m3)));
}
SA2VA_AVX512 float scale_mask_max_avx512(float* s, int64_t n, float scale, const float* mask) {
  const __m512 sc = _mm512_set1_ps(scale);
  __m512 m = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  blocks_of_16(n, [&](int64_t i, __mmask16 k) SA2VA_AVX512 {
    __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, s + i), sc);
    if (mask) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(k, mask + i));
    _mm512_mask_storeu_ps(s + i, k, v);
    m = _mm512_mask_max_ps(m, k, m, v);
  });
  return _mm512_reduce_max_ps(m);
}
// exp(scale·s - shift) = 2^t with t = s·(scale·log2 e) - shift·log2 e in one FMA; t = n + f, |f| <= 1/2,
// 2^f from a degree-4 polynomial (relative error < 6e-5, far below the 2^-9 of the bf16 rounding that
// follows), 2^n by vscalefps. t is clamped below (masked keys are -inf; 2^-150 is already 0).
SA2VA_AVX512 float exp_to_bf16_avx512(const float* s, int64_t n, float scale, float shift, int64_t n_padded,
                                      uint16_t* out) {
  constexpr float kLog2e = 1.44269504088896341f;
  const __m512 a = _mm512_set1_ps(scale * kLog2e), b = _mm512_set1_ps(shift * kLog2e);
  const __m512 floor = _mm512_set1_ps(-150.f);
  const __m512 c4 = _mm512_set1_ps(9.61812911e-3f), c3 = _mm512_set1_ps(5.55041087e-2f);
  const __m512 c2 = _mm512_set1_ps(2.40226507e-1f), c1 = _mm512_set1_ps(6.93147181e-1f), one = _mm512_set1_ps(1.f);
  __m512 sum = _mm512_setzero_ps();
  // Lanes past n are zeros (masked load and scalef); the blocks past n only store zeros.
  const int64_t valid = std::clamp<int64_t>(n, 0, n_padded);
  blocks_of_16(valid, [&](int64_t i, __mmask16 k) SA2VA_AVX512 {
    const __m512 t = _mm512_max_ps(_mm512_fmsub_ps(_mm512_maskz_loadu_ps(k, s + i), a, b), floor);
    const __m512 whole = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 f = _mm512_sub_ps(t, whole);
    __m512 p = _mm512_fmadd_ps(c4, f, c3);
    p = _mm512_fmadd_ps(p, f, c2);
    p = _mm512_fmadd_ps(p, f, c1);
    p = _mm512_fmadd_ps(p, f, one);
    const __m512 e = _mm512_maskz_scalef_ps(k, p, whole);
    sum = _mm512_add_ps(sum, e);
    const int64_t store = std::min<int64_t>(16, n_padded - i);  // n_padded may end inside this block
    if (store == 16) _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), (__m256i)_mm512_cvtneps_pbh(e));
    else _mm256_mask_storeu_epi16(out + i, static_cast<__mmask16>((1u << store) - 1), (__m256i)_mm512_cvtneps_pbh(e));
  });
  for (int64_t i = (valid + 15) / 16 * 16; i < n_padded; i += 16) {
    const int64_t store = std::min<int64_t>(16, n_padded - i);
    _mm256_mask_storeu_epi16(out + i, static_cast<__mmask16>((1u << store) - 1), _mm256_setzero_si256());
  }
  return _mm512_reduce_add_ps(sum);
}
SA2VA_AVX512 float exp_shifted_sum_avx512(float* x, int64_t n, float scale, float shift) {
  const __m512 s = _mm512_set1_ps(shift), sc = _mm512_set1_ps(scale);
  __m512 sum = _mm512_setzero_ps();
  blocks_of_16(n, [&](int64_t i, __mmask16 k) SA2VA_AVX512 {
    const __m512 e = exp_avx512(_mm512_fmsub_ps(_mm512_maskz_loadu_ps(k, x + i), sc, s));
    _mm512_mask_storeu_ps(x + i, k, e);
    sum = _mm512_mask_add_ps(sum, k, sum, e);
  });
  return _mm512_reduce_add_ps(sum);
}
SA2VA_AVX512 void sigmoid_avx512_n(float* x, int64_t n) {
  map_avx512(x, n, [](__m512 v) SA2VA_AVX512 { return sigmoid_avx512(v); });
}
SA2VA_AVX512 void silu_avx512_n(float* x, int64_t n) {
  map_avx512(x, n, [](__m512 v) SA2VA_AVX512 { return _mm512_mul_ps(v, sigmoid_avx512(v)); });
}
SA2VA_AVX512 void gelu_tanh_avx512_n(float* x, int64_t n) {
  map_avx512(x, n, [](__m512 v) SA2VA_AVX512 {
    const __m512 v3 = _mm512_mul_ps(_mm512_mul_ps(v, v), v);
    const __m512 u2 = _mm512_mul_ps(_mm512_set1_ps(2.f * 0.7978845608028654f),
                                    _mm512_fmadd_ps(_mm512_set1_ps(0.044715f), v3, v));
    return _mm512_mul_ps(v, sigmoid_avx512(u2));
  });
}
SA2VA_AVX512 void relu_avx512_n(float* x, int64_t n) {
  map_avx512(x, n, [](__m512 v) SA2VA_AVX512 { return _mm512_max_ps(v, _mm512_setzero_ps()); });
}
SA2VA_AVX512 void rotate_pairs_avx512(float* v, const float* c, const float* s, int64_t n) {
  blocks_of_16(n, [&](int64_t i, __mmask16 m) SA2VA_AVX512 {
    const __m512 x = _mm512_maskz_loadu_ps(m, v + i), swapped = _mm512_permute_ps(x, 0xB1);  // (im, re) per pair
    _mm512_mask_storeu_ps(v + i, m, _mm512_fmadd_ps(x, _mm512_maskz_loadu_ps(m, c + i),
                                                    _mm512_mul_ps(swapped, _mm512_maskz_loadu_ps(m, s + i))));
  });
}
SA2VA_AVX512 void gelu_erf_avx512_n(float* x, int64_t n) {
  map_avx512(x, n, [](__m512 v) SA2VA_AVX512 {
    const __m512 z = _mm512_mul_ps(_mm512_abs_ps(v), _mm512_set1_ps(0.70710678118654752f));
    const __m512 e = erfc_nonneg_avx512(z);
    const __mmask16 negative = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ);
    const __m512 sel = _mm512_mask_blend_ps(negative, _mm512_sub_ps(_mm512_set1_ps(2.f), e), e);
    return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), v), sel);
  });
}

}  // namespace

Isa isa() { return static_cast<Isa>(std::min(static_cast<int>(g_detected), g_cap.load(std::memory_order_relaxed))); }

Isa set_max_isa(Isa cap) { return static_cast<Isa>(g_cap.exchange(static_cast<int>(cap))); }

bool amx() { return g_amx_detected && g_amx_enabled.load(std::memory_order_relaxed) && isa() == Isa::Avx512; }

bool set_amx_enabled(bool on) { return g_amx_enabled.exchange(on); }

bool wide_x86_emulated() {
#if defined(SA2VA_EMULATE_WIDE_X86)
  return true;
#else
  return false;
#endif
}

const char* isa_name(Isa level) {
  switch (level) {
    case Isa::Avx512: return "avx512";
    case Isa::Avx2: return "avx2";
    case Isa::Scalar: return "scalar";
  }
  return "?";
}

void layer_norm_row(const float* x, int64_t n, const float* w, const float* b, float eps, float* y) {
  switch (isa()) {
    case Isa::Avx512: return layer_norm_row_avx512(x, n, w, b, eps, y);
    case Isa::Avx2: return layer_norm_row_avx2(x, n, w, b, eps, y);
    default: return layer_norm_row_scalar(x, n, w, b, eps, y);
  }
}

void axpy(float alpha, const float* x, float* y, int64_t n) {
  switch (isa()) {
    case Isa::Avx512: return axpy_avx512(alpha, x, y, n);
    case Isa::Avx2: return axpy_avx2(alpha, x, y, n);
    default: return axpy_scalar(alpha, x, y, n);
  }
}

void scale(float alpha, const float* x, float* y, int64_t n) {
  switch (isa()) {
    case Isa::Avx512: return scale_avx512(alpha, x, y, n);
    case Isa::Avx2: return scale_avx2(alpha, x, y, n);
    default: return scale_scalar(alpha, x, y, n);
  }
}

void dot_rows(const float* q, const float* rows, int64_t ld, int64_t count, int64_t n, float scale, float* out) {
  const Isa level = isa();
  float (*const dot)(const float*, const float*, int64_t) =
      level == Isa::Avx512 ? dot_avx512 : level == Isa::Avx2 ? dot_avx2 : dot_scalar;
  for (int64_t j = 0; j < count; ++j) out[j] = scale * dot(q, rows + j * ld, n);
}

void weighted_sum_rows(const float* w, const float* rows, int64_t ld, int64_t count, int64_t n, float* out) {
  switch (isa()) {
    case Isa::Avx512: return weighted_sum_rows_avx512(w, rows, ld, count, n, out);
    case Isa::Avx2: return weighted_sum_rows_avx2(w, rows, ld, count, n, out);
    default: return weighted_sum_rows_scalar(w, rows, ld, count, n, out);
  }
}

// Calls block(std::integral_constant<int, MB>, i) for the activation rows [i, i + MB), MB <= 4.
template <typename Block>
void in_blocks_of_4(int64_t m, Block block) {
  for (int64_t i = 0; i < m; i += 4) {
    switch (std::min<int64_t>(4, m - i)) {
      case 1: block(std::integral_constant<int, 1>{}, i); break;
      case 2: block(std::integral_constant<int, 2>{}, i); break;
      case 3: block(std::integral_constant<int, 3>{}, i); break;
      default: block(std::integral_constant<int, 4>{}, i); break;
    }
  }
}

void bf16_rows_times_f32(const uint16_t* w, int64_t ldw, int64_t rows, int64_t k, const float* x, int64_t ldx,
                         int64_t m, float* y, int64_t ldy) {
  const Isa level = isa();
  if (level == Isa::Scalar) return bf16_rows_scalar(w, ldw, rows, k, x, ldx, m, y, ldy);
  if (level == Isa::Avx512) {
    // x rounded to bf16 once per call (upstream's bf16 activations), then bf16 dot products.
    const int64_t ldxb = (k + 31) & ~int64_t{31};
    thread_local std::vector<uint16_t> xb;
    if (xb.size() < static_cast<size_t>(m * ldxb)) xb.resize(static_cast<size_t>(m * ldxb));
    for (int64_t i = 0; i < m; ++i) round_to_bf16(x + i * ldx, k, ldxb, xb.data() + i * ldxb);
    in_blocks_of_4(m, [&](auto mb, int64_t i) {
      bf16_rows_dp_avx512_block<decltype(mb)::value>(w, ldw, rows, k, xb.data() + i * ldxb, ldxb, y + i * ldy, ldy);
    });
    return;
  }
  if (m == 1) return bf16_row_stream_avx2(w, ldw, rows, k, x, y);
  // Activation rows in blocks of 4 (the weight rows are re-read from cache for each block).
  in_blocks_of_4(m, [&](auto mb, int64_t i) {
    bf16_rows_avx2_block<decltype(mb)::value>(w, ldw, rows, k, x + i * ldx, ldx, y + i * ldy, ldy);
  });
}

void sigmoid_inplace(float* x, int64_t n) {
  switch (isa()) {
    case Isa::Avx512: return sigmoid_avx512_n(x, n);
    case Isa::Avx2: return sigmoid_avx2_n(x, n);
    default:
      for (int64_t i = 0; i < n; ++i) x[i] = 1.f / (1.f + std::exp(-x[i]));
  }
}

void silu_inplace(float* x, int64_t n) {
  switch (isa()) {
    case Isa::Avx512: return silu_avx512_n(x, n);
    case Isa::Avx2: return silu_avx2_n(x, n);
    default:
      for (int64_t i = 0; i < n; ++i) x[i] = x[i] / (1.f + std::exp(-x[i]));
  }
}

void silu_mul_inplace(float* gate, const float* up, int64_t n) {
  silu_inplace(gate, n);
  for (int64_t i = 0; i < n; ++i) gate[i] *= up[i];
}

void rotate_pairs(float* v, const float* cos_pairs, const float* sin_pairs, int64_t n) {
  switch (isa()) {
    case Isa::Avx512: return rotate_pairs_avx512(v, cos_pairs, sin_pairs, n);
    case Isa::Avx2: return rotate_pairs_avx2(v, cos_pairs, sin_pairs, n);
    default: return rotate_pairs_scalar(v, cos_pairs, sin_pairs, n);
  }
}

void relu_inplace(float* x, int64_t n) {
  switch (isa()) {
    case Isa::Avx512: return relu_avx512_n(x, n);
    case Isa::Avx2: return relu_avx2_n(x, n);
    default:
      for (int64_t i = 0; i < n; ++i) x[i] = x[i] > 0.f ? x[i] : 0.f;
  }
}

void gelu_erf_inplace(float* x, int64_t n) {
  switch (isa()) {
    case Isa::Avx512: return gelu_erf_avx512_n(x, n);
    case Isa::Avx2: return gelu_erf_avx2_n(x, n);
    default:
      for (int64_t i = 0; i < n; ++i) {
        const float e = erfc_nonneg(std::fabs(x[i]) * 0.70710678118654752f);
        x[i] = 0.5f * x[i] * (x[i] < 0 ? e : 2.f - e);
      }
  }
}

void gelu_tanh_inplace(float* x, int64_t n) {
  switch (isa()) {
    case Isa::Avx512: return gelu_tanh_avx512_n(x, n);
    case Isa::Avx2: return gelu_tanh_avx2_n(x, n);
    default:
      for (int64_t i = 0; i < n; ++i) {
        const float v = x[i];  // 0.5·v·(1 + tanh(u)) = v·sigmoid(2u), without the cancellation for v < 0
        x[i] = v / (1.f + std::exp(-2.f * 0.7978845608028654f * (v + 0.044715f * v * v * v)));
      }
  }
}

float max_value(const float* x, int64_t n) {
  switch (isa()) {
    case Isa::Avx512: return max_avx512(x, n);
    case Isa::Avx2: return max_avx2(x, n);
    default: {
      float m = -std::numeric_limits<float>::infinity();
      for (int64_t i = 0; i < n; ++i) m = std::max(m, x[i]);
      return m;
    }
  }
}

float exp_shifted_sum(float* x, int64_t n, float scale, float shift) {
  switch (isa()) {
    case Isa::Avx512: return exp_shifted_sum_avx512(x, n, scale, shift);
    case Isa::Avx2: return exp_shifted_sum_avx2(x, n, scale, shift);
    default: {
      float sum = 0.f;
      for (int64_t i = 0; i < n; ++i) sum += (x[i] = std::exp(std::fma(x[i], scale, -shift)));
      return sum;
    }
  }
}

float scale_mask_max(float* s, int64_t n, float scale, const float* mask) {
  if (isa() == Isa::Avx512) return scale_mask_max_avx512(s, n, scale, mask);
  if (isa() == Isa::Avx2) return scale_mask_max_avx2(s, n, scale, mask);
  float m = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < n; ++i) {
    s[i] = s[i] * scale + (mask ? mask[i] : 0.f);
    m = std::max(m, s[i]);
  }
  return m;
}

void pack_f32_key_panel(const float* keys, int64_t ld, int64_t count, int64_t dim, float* panel) {
  int64_t e = 0;
  if (count == kF32PanelKeys && isa() >= Isa::Avx2) e = pack_f32_key_panel_avx2(keys, ld, dim, panel);
  for (; e < dim; ++e)
    for (int64_t l = 0; l < kF32PanelKeys; ++l) panel[e * kF32PanelKeys + l] = l < count ? keys[l * ld + e] : 0.f;
}

void f32_scores_tile(const float* q, int64_t ldq, int64_t rows, const float* panels, int64_t dim, int64_t panel_count,
                     float* s, int64_t lds) {
  with_rows(rows, [&](auto r) {
    if (panel_count == 2) f32_scores_tile_avx2<decltype(r)::value, 2>(q, ldq, panels, dim, s, lds);
    else f32_scores_tile_avx2<decltype(r)::value, 1>(q, ldq, panels, dim, s, lds);
  });
}

void f32_values_tile(const float* p, int64_t ldp, int64_t rows, const float* v, int64_t ldv, int64_t keys, float* o,
                     int64_t ldo, int64_t cols) {
  with_rows(rows, [&](auto r) {
    if (cols == 16) f32_values_tile_avx2<decltype(r)::value, 2>(p, ldp, v, ldv, keys, o, ldo);
    else f32_values_tile_avx2<decltype(r)::value, 1>(p, ldp, v, ldv, keys, o, ldo);
  });
}

float exp_to_bf16(const float* s, int64_t n, float scale, float shift, int64_t n_padded, uint16_t* out) {
  if (isa() == Isa::Avx512) return exp_to_bf16_avx512(s, n, scale, shift, n_padded, out);
  float sum = 0.f;
  for (int64_t i = 0; i < n_padded; ++i) {
    const float e = i < n ? std::exp(std::fma(s[i], scale, -shift)) : 0.f;
    sum += e;
    out[i] = f32_to_bf16(e);
  }
  return sum;
}

void softmax_inplace(float* x, int64_t visible, int64_t total) {
  const float max = max_value(x, visible);
  if (max == -std::numeric_limits<float>::infinity()) {  // nothing visible: all zeros
    std::fill(x, x + total, 0.f);
    return;
  }
  const float inv = 1.f / exp_shifted_sum(x, visible, 1.f, max);
  for (int64_t j = 0; j < visible; ++j) x[j] *= inv;
  std::fill(x + visible, x + total, 0.f);
}

}  // namespace sa2va::ops::simd
