// Matrix product fronts: check the weight, the shapes and the devices, pick the kernel for the
// calling thread's device (ops/cpu/linear.cpp: OpenBLAS for f32, our own kernels for BF16 and the
// quantized formats; ops/cuda/linear.cu: cuBLASLt and a rows kernel for decode).
#include <algorithm>
#include <string>

#include "core/allocator.h"
#include "core/error.h"
#include "ops/device_check.h"
#include "ops/ops.h"

namespace sa2va::ops {
namespace {

// `input` is where the activations live (raw pointers: the CPU).
void check_linear_weight(const WeightMatrix& weight, int64_t K, Device input) {
  // Messages are built only on failure: this runs for every matrix of every decoded token.
  if (!weight.defined()) throw Error("linear: the weight matrix is not loaded");
  if (weight.cols() != K)
    throw Error("linear: weight [" + std::to_string(weight.rows()) + ", " + std::to_string(weight.cols()) +
                "] does not take inputs of size " + std::to_string(K));
  check_same_device("linear", "weight", weight.device(), "input", input);
  check_kernel_device("linear", "input", input);
}

}  // namespace

void gemm(const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc, int64_t M, int64_t N,
          int64_t K, bool transpose_b, float alpha, float beta) {
  if (M <= 0 || N <= 0) return;
  check(lda >= std::max<int64_t>(K, 1) && ldc >= N && ldb >= std::max<int64_t>(transpose_b ? K : N, 1),
        "gemm: leading dimension smaller than the matrix");
  SA2VA_KERNEL(gemm, A, lda, B, ldb, C, ldc, M, N, K, transpose_b, alpha, beta);
}

void gemm_at(const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc, int64_t M, int64_t N,
             int64_t K, float alpha, float beta) {
  if (M <= 0 || N <= 0) return;
  check(lda >= std::max<int64_t>(M, 1) && ldb >= std::max<int64_t>(N, 1) && ldc >= N,
        "gemm_at: leading dimension smaller than the matrix");
  SA2VA_KERNEL(gemm_at, A, lda, B, ldb, C, ldc, M, N, K, alpha, beta);
}

void linear(const float* x, int64_t M, int64_t K, const WeightMatrix& weight, const float* bias, float* y) {
  check_linear_weight(weight, K, current_device());
  const int64_t N = weight.rows();
  if (M <= 0 || N <= 0) return;
  SA2VA_KERNEL(linear, x, M, K, weight, bias, y);
}

void linear(const float* x, int64_t M, int64_t K, const WeightMatrix& weight, const float* bias, float* y,
            Activation activation) {
  check_linear_weight(weight, K, current_device());
  const int64_t N = weight.rows();
  if (M <= 0 || N <= 0) return;
  if (kernels_run_on_host() && cpu::linear_activated(x, M, K, weight, bias, y, activation)) return;
  SA2VA_KERNEL(linear, x, M, K, weight, bias, y);
  activate(activation, y, M * N);
}

void feed_forward(const float* x, int64_t M, const WeightMatrix& fc1, const float* b1, Activation activation,
                  float* hidden, const WeightMatrix& fc2, const float* b2, float* y) {
  check_linear_weight(fc1, fc1.cols(), current_device());
  check_linear_weight(fc2, fc1.rows(), current_device());
  if (M <= 0 || fc1.rows() <= 0 || fc2.rows() <= 0) return;
  if (kernels_run_on_host() && cpu::feed_forward(x, M, fc1, b1, activation, hidden, fc2, b2, y)) return;
  linear(x, M, fc1.cols(), fc1, b1, hidden, activation);
  linear(hidden, M, fc1.rows(), fc2, b2, y);
}

void gated_feed_forward(const float* x, int64_t M, int64_t K, const WeightMatrix& w_gate, const WeightMatrix& w_up,
                        float* gate, float* up, const WeightMatrix& w_down, float* y) {
  check_linear_weight(w_gate, K, current_device());
  check_linear_weight(w_up, K, current_device());
  check(w_up.rows() == w_gate.rows(), "gated_feed_forward: gate has " + std::to_string(w_gate.rows()) +
                                          " rows, up " + std::to_string(w_up.rows()));
  check_linear_weight(w_down, w_gate.rows(), current_device());
  const int64_t I = w_gate.rows();
  if (M <= 0 || I <= 0 || w_down.rows() <= 0) return;
  if (kernels_run_on_host() && cpu::gated_feed_forward(x, M, K, w_gate, w_up, gate, w_down, y)) return;
  linear_pair(x, M, K, w_gate, gate, w_up, up);
  silu_mul(gate, up, M * I);
  linear(gate, M, I, w_down, nullptr, y);
}

void linear_pair(const float* x, int64_t M, int64_t K, const WeightMatrix& w1, float* y1, const WeightMatrix& w2,
                 float* y2) {
  check_linear_weight(w1, K, current_device());
  check_linear_weight(w2, K, current_device());
  if (M <= 0 || w1.rows() <= 0 || w2.rows() <= 0) {  // nothing to pair: linear() skips an empty product
    linear(x, M, K, w1, nullptr, y1);
    linear(x, M, K, w2, nullptr, y2);
    return;
  }
  SA2VA_KERNEL(linear_pair, x, M, K, w1, y1, w2, y2);
}

Tensor linear(const Tensor& x, const WeightMatrix& weight, const Tensor& bias) {
  check(x.defined() && x.dtype() == DType::F32 && x.dim() >= 1, "linear: input must be an F32 tensor [..., K]");
  const int64_t K = x.size(-1);
  check_linear_weight(weight, K, x.device());
  const int64_t N = weight.rows();
  Shape out_shape = x.shape();
  out_shape.back() = N;
  Tensor y = Tensor::empty(out_shape, DType::F32, x.device());
  Tensor b;
  if (bias.defined()) {
    check(bias.numel() == N, "linear: bias " + shape_str(bias.shape()) + " does not match " + std::to_string(N) +
                                 " outputs");
    check_same_device("linear", "bias", bias.device(), "input", x.device());
    check(bias.dtype() == DType::F32 || bias.device().is_cpu(), "linear: a bias on a GPU must be F32");
    b = bias.dtype() == DType::F32 ? bias.contiguous() : bias.to(DType::F32);
  }
  check(x.is_contiguous() || x.device().is_cpu(), "linear: an input on a GPU must be contiguous");
  const Tensor xc = x.contiguous();
  const int64_t M = shape_numel(Shape(x.shape().begin(), x.shape().end() - 1));
  const float* bias_data = b.defined() ? static_cast<const float*>(b.device_data()) : nullptr;
  if (M > 0 && N > 0)
    SA2VA_KERNEL(linear, static_cast<const float*>(xc.device_data()), M, K, weight, bias_data,
                 static_cast<float*>(y.device_data()));
  return y;
}

WeightMatrix kernel_layout(const WeightMatrix& weight, const std::function<void(int64_t, int64_t)>& consumed,
                           WeightArena* arena) {
  // The CPU's rule wherever the CPU kernels run: the CPU and a test's host-memory stand-in device.
  if (!weight.defined() || weight.interleaved()) return weight;
  if (!weight.device().is_cpu() && !allocator_for(weight.device()).host_addressable()) return weight;
  // The arena is CPU memory: on a host-memory stand-in device the matrices stay in its memory.
  // Unquantized matrices stay where they are (in place in the checkpoint's mapping): copying the
  // 1 GB of Sa2VA-1B's bf16 language model took about a second at load for 3% faster bf16 decode.
  WeightArena* cpu_arena = weight.device().is_cpu() && is_quantized(weight.format()) ? arena : nullptr;
  if (cpu::prefers_interleaved_rows(weight)) return weight.interleaved_rows(consumed, cpu_arena);
  return cpu_arena ? weight.copied_into(*cpu_arena, consumed) : weight;
}

WeightMatrix many_rows_layout(const WeightMatrix& weight, WeightArena* arena) {
  if (!weight.defined() || !weight.device().is_cpu()) return weight;
  return cpu::prefers_bf16_panels(weight) ? weight.bf16_panels(arena) : weight;
}

}  // namespace sa2va::ops
