// CUDA kernels behind the device-neutral op fronts (ops/ops.h), for the ops that have one. Internal
// to src/ops: the fronts dispatch here when the calling thread's device (core/device.h) is a GPU.
//
// Conventions, as the CPU kernels' (ops/cpu/kernels.h) with these differences:
//  - every pointer is memory of the current GPU (Tensor::empty on that device, or a weight
//    uploaded at load); sizes are host values;
//  - kernels are queued on the calling thread's stream (ops/cuda/runtime.h) and return before they
//    finish; copying results to the host waits for them;
//  - numerics follow the CPU kernels: f32 arithmetic in the same order of operations where it is
//    cheap to do so; BF16 weights with many rows of activations go through bf16 tensor cores with
//    the activations rounded to bf16, as the CPU's bf16 GEMM does.
//  - linear (cuda/linear.cu): up to kRowsKernelMaxM rows of activations, one warp per output column
//    reads the weight row once for all of them (the decode step, bandwidth bound); more rows go
//    through cuBLASLt (cuda/blas.cpp): F32 in f32, BF16 and the quantized formats on bf16 tensor
//    cores with bf16 activations, quantized weights dequantized to bf16 in panels.
//  - attention (cuda/attention.cu): flash attention on the tensor cores in the bf16 mode (16 rows or
//    more), keys split over blocks for decode steps, else one block per (query row, head, problem);
//    an online softmax in each, no score matrix.
//  - RoPE positions and gathered row indices are GPU memory too.
#pragma once
#include <cstdint>

#include "ops/kernel_types.h"
#include "ops/ops.h"

namespace sa2va::ops::cuda {

constexpr int64_t kRowsKernelMaxM = 8;

// The kernels (one declaration list for every backend).
#include "ops/device_kernels.inc"

}  // namespace sa2va::ops::cuda
