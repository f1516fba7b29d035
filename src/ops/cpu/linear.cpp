// CPU kernels for matrix products: f32 through OpenBLAS (one single-threaded call per pool thread),
// BF16 weights through our own kernels (bandwidth-bound rows kernel for decode-sized M, the bf16
// GEMM on AVX-512 BF16 or AVX2, blocked conversion + sgemm on the scalar fallback). Quantized weights: decode-sized M
// through integer dot products with 8-bit activations (weights streamed once, never widened);
// larger M through the bf16 GEMM with panels dequantized while packing (AVX-512 BF16), or
// dequantized f32 panels + sgemm.
#include <cblas.h>

extern "C" void openblas_set_num_threads(int);

#include <algorithm>
#include <atomic>
#include <memory>
#include <vector>

#include "core/threadpool.h"
#include "ops/cpu/kernels.h"
#include "ops/cpu/simd.h"

namespace sa2va::ops::cpu {
namespace {

// Up to this many activation rows the BF16 product reads each weight once with the rows kernel.
constexpr int64_t kSmallM = 8;
// With AVX-512, up to this many rows quantized weights stay in the integer kernels: a larger product
// goes through the bf16 GEMM, whose dequantizing packers cost about as much as a few hundred rows of
// integer dots on vdpbf16ps, and as about 64 rows where the GEMM multiplies on AMX tiles (measured:
// 72 Q4_0 matrices of 4864x896, 64 rows 178 ms integer vs 202 ms GEMM, 256 rows 696 vs 256). Without AVX-512,
// dequantized panels and sgemm beat one-row integer dots past kSmallM.
constexpr int64_t kQuantizedRowsMaxM = 256, kQuantizedRowsMaxMWithAmx = 64;

// Weight rows [0, n) over the pool's threads for streaming kernels (decode reads every matrix from
// memory once). Each thread owns one contiguous segment and walks it front to back, claiming half of
// what is left of it at a time, so it reads one unbroken stream: with small chunks dealt out in
// turn, every chunk boundary restarted a stream and the prefetchers ran on past each chunk's end
// into rows another thread reads (about a tenth of decode's bandwidth lost). On a shared machine one
// core is often slower than the other, so a thread that finishes its segment takes small chunks
// from the back of the others' (fixed halves would leave it waiting). Rows go in units of 8 (a group
// of interleaved Q4_0 rows; the other rows kernels step by 4).
template <typename Rows>
void parallel_rows(int64_t n, Rows rows) {
  const int64_t threads = num_threads();
  if (threads == 1 || n < 64) return rows(int64_t{0}, n);
  constexpr int64_t kUnit = 8;
  const int64_t units = (n + kUnit - 1) / kUnit;
  const int64_t chunk_units = std::clamp<int64_t>(units / (threads * 64), 1, 16);
  // A segment's unclaimed units [front, back), packed in one word so that its owner (taking from the
  // front) and a thief (taking from the back) claim with one compare-and-swap.
  struct alignas(64) Segment {
    std::atomic<uint64_t> range;
  };
  // On the stack for up to 8 threads (this runs for every matrix of every decoded token).
  Segment on_stack[8];
  std::unique_ptr<Segment[]> on_heap;
  if (threads > 8) on_heap.reset(new Segment[static_cast<size_t>(threads)]);
  Segment* const segments = on_heap ? on_heap.get() : on_stack;
  auto pack = [](uint64_t front, uint64_t back) { return front << 32 | back; };
  for (int64_t t = 0; t < threads; ++t)
    segments[t].range.store(pack(units * t / threads, units * (t + 1) / threads));
  // Claims rows from the front (the owner: half of what is left, at least chunk_units) or from the
  // back (a thief: chunk_units); false when the segment is empty.
  auto claim = [&](Segment& s, bool from_front, int64_t& u0, int64_t& u1) {
    uint64_t r = s.range.load(std::memory_order_relaxed);
    for (;;) {
      const int64_t front = static_cast<int64_t>(r >> 32), back = static_cast<int64_t>(r & 0xffffffffu);
      if (front >= back) return false;
      const int64_t take = std::min(back - front, from_front ? std::max(chunk_units, (back - front) / 2) : chunk_units);
      u0 = from_front ? front : back - take;
      u1 = u0 + take;
      const uint64_t next = from_front ? pack(static_cast<uint64_t>(u1), static_cast<uint64_t>(back))
                                       : pack(static_cast<uint64_t>(front), static_cast<uint64_t>(u0));
      if (s.range.compare_exchange_weak(r, next, std::memory_order_relaxed)) return true;
    }
  };
  parallel_for(threads, [&](int64_t self, int64_t) {
    int64_t u0 = 0, u1 = 0;
    while (claim(segments[self], true, u0, u1)) rows(u0 * kUnit, std::min(n, u1 * kUnit));
    for (int64_t k = 1; k < threads; ++k) {
      Segment& other = segments[(self + k) % threads];
      while (claim(other, false, u0, u1)) rows(u0 * kUnit, std::min(n, u1 * kUnit));
    }
  });
}

// Any format through f32 sgemm: panels of weight rows widened (dequantized) to f32 as the kernels
// see them. The scalar fallback's BF16 path, and the quantized formats' many-row path without
// AVX-512 BF16.
void linear_by_f32_panels(const float* x, int64_t M, int64_t K, const WeightMatrix& w, float* y) {
  const int64_t N = w.rows();
  const int64_t panel_rows = std::min<int64_t>(N, std::max<int64_t>(64, ((int64_t{1} << 20) / K) & ~int64_t{15}));
  const Tensor panel = Tensor::empty({panel_rows, K});
  for (int64_t n0 = 0; n0 < N; n0 += panel_rows) {
    const int64_t nb = std::min(panel_rows, N - n0);
    parallel_for(nb, [&](int64_t r0, int64_t r1) { w.dequantize_rows(n0 + r0, r1 - r0, panel.f32() + r0 * K); }, 16);
    gemm(x, K, panel.f32(), K, y + n0, N, M, nb, K, /*transpose_b=*/true, 1.f, 0.f);
  }
}

// Whether a product of M activation rows with `w` streams the weights through the rows kernels
// (decode-sized M): BF16 up to kSmallM rows; quantized formats up to kQuantizedRowsMaxM with AVX-512
// (kQuantizedRowsMaxMWithAmx with AMX), kSmallM without.
bool streams_rows(const WeightMatrix& w, int64_t M) {
  if (w.format() == WeightFormat::F32 || w.in_panels()) return false;
  if (w.format() == WeightFormat::BF16 || simd::isa() != simd::Isa::Avx512) return M <= kSmallM;
  return M <= (simd::amx() ? kQuantizedRowsMaxMWithAmx : kQuantizedRowsMaxM);
}

// One product of a streamed set: y [M, w.rows()] = x·wᵀ.
struct StreamedProduct {
  const WeightMatrix* w;
  float* y;
};

// Rows [n0, n1) of one streamed product: bf16 rows with f32 (or bf16-rounded) activations, quantized
// rows against the activations quantized once per call (`activations`); interleaved Q4_0 from a
// group boundary (n0 a multiple of 8).
void stream_rows(const StreamedProduct& p, const float* x, int64_t M, int64_t K,
                 const simd::QuantizedActivations& activations, int64_t n0, int64_t n1) {
  const WeightMatrix& w = *p.w;
  const int64_t N = w.rows();
  if (w.format() == WeightFormat::BF16) {
    simd::bf16_rows_times_f32(w.host_values<uint16_t>() + n0 * K, K, n1 - n0, K, x, K, M, p.y + n0, N);
    return;
  }
  const uint8_t* values = w.host_values<uint8_t>();
  const int64_t ldw = w.values().size(1);
  if (w.interleaved()) {
    constexpr int64_t kGroup = WeightMatrix::kInterleavedRows;
    simd::q4_interleaved_times_q8(values + n0 / kGroup * ldw, ldw, (n1 - n0 + kGroup - 1) / kGroup, n1 - n0,
                                  activations, p.y + n0, N);
    return;
  }
  const int64_t nb = w.blocks_per_row();
  simd::quantized_rows_times_q8(w.format() == WeightFormat::Q4_0, values + n0 * ldw, ldw, w.host_scales() + n0 * nb,
                                nb, n1 - n0, activations, p.y + n0, N);
}

// Products of one input with one or more matrices (each streams_rows) as one pass over their rows:
// x quantized to 8 bits per block once (on the calling thread, into a buffer kept between calls)
// when any matrix is quantized, then the pool's threads stream the matrices' rows one after the
// other as if they were one matrix (decode's gate and up projections: one region, one stream).
// A matrix after the first must start on a multiple of 8 rows (the row unit of parallel_rows).
void linear_streamed(const float* x, int64_t M, int64_t K, const StreamedProduct* products, int count) {
  static_assert(simd::kQ8Block == kQuantBlock);
  thread_local simd::QuantizedActivations buffer;
  const simd::QuantizedActivations& activations = buffer;  // the caller's buffer, seen by every thread
  int64_t total = 0;
  bool quantized = false;
  for (int i = 0; i < count; ++i) {
    total += products[i].w->rows();
    quantized = quantized || is_quantized(products[i].w->format());
  }
  if (quantized) buffer.quantize(x, M, K, K);
  parallel_rows(total, [&](int64_t r0, int64_t r1) {
    int64_t first = 0;  // of the current matrix, in the joint row numbering
    for (int i = 0; i < count && first < r1; first += products[i].w->rows(), ++i) {
      const int64_t a = std::max(r0, first), b = std::min(r1, first + products[i].w->rows());
      if (a < b) stream_rows(products[i], x, M, K, activations, a - first, b - first);
    }
  });
}

// Larger M with quantized weights on AVX-512 BF16: the bf16 GEMM packs panels of dequantized rows
// (each weight is dequantized once per call and reused by every row of x).
bool linear_quantized_bf16_gemm(const float* x, int64_t M, int64_t K, const WeightMatrix& w, float* y,
                                const float* bias) {
  // Without AVX-512 BF16 the dequantized panels stay f32 for sgemm (bf16 panels would round them).
  if (simd::isa() != simd::Isa::Avx512) return false;
  const simd::Bf16PanelSource source{
      [](const void* self, int64_t n0, int64_t kp0, int64_t kpn, uint32_t* panel) {
        const auto& m = *static_cast<const WeightMatrix*>(self);
        thread_local std::vector<float> rows;
        const int64_t lanes = std::min(simd::kBf16PanelCols, m.rows() - n0);
        const int64_t col0 = 2 * kp0, cols = std::min(2 * kpn, m.cols() - col0);
        if (rows.size() < static_cast<size_t>(simd::kBf16PanelCols * 2 * simd::kBf16SlicePairs))
          rows.resize(static_cast<size_t>(simd::kBf16PanelCols * 2 * simd::kBf16SlicePairs));
        m.dequantize_block(n0, lanes, col0, cols, rows.data(), cols);
        simd::pack_bf16_panel(rows.data(), cols, 1, lanes, cols, kpn, panel);
      },
      &w};
  static_assert(2 * simd::kBf16SlicePairs % kQuantBlock == 0, "slices start on block boundaries");
  return simd::bf16_gemm(x, M, K, source, w.rows(), y, bias);
}

// Runs block(m0, m1, n0, n1) over C [M, N]: whole when small or single-threaded, else split over
// the pool along the longer side. OpenBLAS runs single-threaded in the calling thread (set once): each pool thread multiplies its
// own block of C, rows when M is the long side, columns otherwise. One pool for the whole process
// means no BLAS threads spinning beside ours, and calls from inside a parallel_for simply run inline.
template <typename Block>
void split_product(int64_t M, int64_t N, int64_t K, const Block& block) {
  static const bool blas_single_threaded = (openblas_set_num_threads(1), true);
  (void)blas_single_threaded;
  constexpr double kMinFlopsPerThread = 4e6;
  const double flops = 2.0 * static_cast<double>(M) * static_cast<double>(N) * static_cast<double>(K);
  if (num_threads() == 1 || flops < 2 * kMinFlopsPerThread) {
    block(0, M, 0, N);
  } else {
    // One block per thread: every sgemm call packs the whole of the other operand, so smaller
    // chunks handed out in turn would pack it several times over.
    const int64_t side = std::max(M, N), share = std::max<int64_t>(16, (side + num_threads() - 1) / num_threads());
    if (M >= N) parallel_for(M, [&](int64_t m0, int64_t m1) { block(m0, m1, 0, N); }, share);
    else parallel_for(N, [&](int64_t n0, int64_t n1) { block(0, M, n0, n1); }, share);
  }
}

}  // namespace

void gemm(const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc, int64_t M, int64_t N,
          int64_t K, bool transpose_b, float alpha, float beta) {
  if (M <= 0 || N <= 0) return;
  auto block = [&](int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
    const float* b = transpose_b ? B + n0 * ldb : B + n0;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, transpose_b ? CblasTrans : CblasNoTrans, static_cast<int>(m1 - m0),
                static_cast<int>(n1 - n0), static_cast<int>(K), alpha, A + m0 * lda, static_cast<int>(lda), b,
                static_cast<int>(ldb), beta, C + m0 * ldc + n0, static_cast<int>(ldc));
  };
  split_product(M, N, K, block);
}

void gemm_at(const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc, int64_t M, int64_t N,
             int64_t K, float alpha, float beta) {
  if (M <= 0 || N <= 0) return;
  auto block = [&](int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<int>(m1 - m0), static_cast<int>(n1 - n0),
                static_cast<int>(K), alpha, A + m0, static_cast<int>(lda), B + n0, static_cast<int>(ldb), beta,
                C + m0 * ldc + n0, static_cast<int>(ldc));
  };
  split_product(M, N, K, block);
}

// Q4_0 decodes on rows interleaved by eight with AVX2 and with AVX-512 VNNI (measured on both).
bool prefers_interleaved_rows(const WeightMatrix& weight) {
  return weight.format() == WeightFormat::Q4_0 && simd::isa() != simd::Isa::Scalar;
}

static_assert(WeightMatrix::kPanelCols == simd::kBf16PanelCols, "the panels the bf16 GEMM multiplies");

// The bf16 GEMM reads panels in place on AVX-512 BF16 and on AVX2 (the scalar fallback widens them
// like rows).
bool prefers_bf16_panels(const WeightMatrix& weight) {
  return weight.format() == WeightFormat::BF16 && weight.arrangement() == WeightMatrix::Arrangement::Rows &&
         simd::isa() != simd::Isa::Scalar;
}

void linear(const float* x, int64_t M, int64_t K, const WeightMatrix& weight, const float* bias, float* y) {
  const int64_t N = weight.rows();
  if (K == 0) {
    std::fill(y, y + M * N, 0.f);
  } else if (weight.format() == WeightFormat::F32) {
    gemm(x, K, weight.host_values<float>(), K, y, N, M, N, K, /*transpose_b=*/true, 1.f, 0.f);
  } else if (weight.in_panels()) {
    if (simd::bf16_gemm_panels(x, M, K, weight.host_values<uint32_t>(), weight.panel_pairs(), N, y, bias)) return;
    linear_by_f32_panels(x, M, K, weight, y);
  } else if (streams_rows(weight, M)) {
    const StreamedProduct product{&weight, y};
    linear_streamed(x, M, K, &product, 1);
  } else if (weight.format() == WeightFormat::BF16) {
    if (simd::bf16_gemm(x, M, K, weight.host_values<uint16_t>(), N, y, bias)) return;  // bias added
    linear_by_f32_panels(x, M, K, weight, y);
  } else if (linear_quantized_bf16_gemm(x, M, K, weight, y, bias)) {
    return;  // bias added by the GEMM
  } else {
    linear_by_f32_panels(x, M, K, weight, y);
  }
  if (bias) add_rows(y, bias, M, N);
}

namespace {
simd::GemmOutput gemm_output(Activation activation) {
  switch (activation) {
    case Activation::Relu: return simd::GemmOutput::Relu;
    case Activation::GeluErf: return simd::GemmOutput::GeluErf;
    default: return simd::GemmOutput::Plain;
  }
}
}  // namespace

bool feed_forward(const float* x, int64_t M, const WeightMatrix& fc1, const float* b1, Activation activation,
                  float* hidden, const WeightMatrix& fc2, const float* b2, float* y) {
  if (!fc1.in_panels() || !fc2.in_panels() || fc1.cols() == 0) return false;
  return simd::bf16_mlp_panels(x, M, fc1.cols(), fc1.host_values<uint32_t>(), fc1.panel_pairs(), fc1.rows(), b1,
                               gemm_output(activation), hidden, fc2.host_values<uint32_t>(), fc2.panel_pairs(),
                               fc2.rows(), b2, y);
}

bool linear_activated(const float* x, int64_t M, int64_t K, const WeightMatrix& weight, const float* bias, float* y,
                      Activation activation) {
  if (activation == Activation::None || K == 0 || weight.format() != WeightFormat::BF16) return false;
  const simd::GemmOutput output = gemm_output(activation);
  if (weight.in_panels())
    return simd::bf16_gemm_panels(x, M, K, weight.host_values<uint32_t>(), weight.panel_pairs(), weight.rows(), y, bias,
                                  output);
  return !streams_rows(weight, M) &&
         simd::bf16_gemm(x, M, K, weight.host_values<uint16_t>(), weight.rows(), y, bias, output);
}

bool gated_feed_forward(const float* x, int64_t M, int64_t K, const WeightMatrix& w_gate, const WeightMatrix& w_up,
                        float* gate, const WeightMatrix& w_down, float* y) {
  const int64_t I = w_gate.rows();
  for (const WeightMatrix* w : {&w_gate, &w_up, &w_down})
    if (w->format() != WeightFormat::BF16 || w->in_panels()) return false;
  // Decode-sized M streams the weights instead; `gate` holds the bf16 hidden layer (I rounded up to
  // 32 bf16 per row, and 32 more where a row would be a multiple of 4 KiB, i.e. I >= 2048, fit in
  // its I floats from I = 32 on).
  if (K == 0 || I < 32 || streams_rows(w_gate, M)) return false;
  return simd::bf16_gated_mlp(x, M, K, w_gate.host_values<uint16_t>(), w_up.host_values<uint16_t>(), I,
                              reinterpret_cast<uint16_t*>(gate), w_down.host_values<uint16_t>(), w_down.rows(), y);
}

void linear_pair(const float* x, int64_t M, int64_t K, const WeightMatrix& w1, float* y1, const WeightMatrix& w2,
                 float* y2) {
  if (K > 0 && streams_rows(w1, M) && streams_rows(w2, M) && w1.rows() % 8 == 0) {
    const StreamedProduct products[] = {{&w1, y1}, {&w2, y2}};
    linear_streamed(x, M, K, products, 2);
    return;
  }
  linear(x, M, K, w1, nullptr, y1);
  linear(x, M, K, w2, nullptr, y2);
}

}  // namespace sa2va::ops::cpu
