// cuBLASLt, opened at run time (dlopen on first use of a GPU: a CPU-only run of a CUDA build neither
// loads its ~0.5 GB library nor needs it installed), behind one row-major matrix product.
#pragma once
#include <library_types.h>

#include <cstdint>

namespace sa2va::cuda {

// Row-major C[M, N] (f32, row stride ldc) = alpha · op(A) · op(B) + beta · C on the calling thread's
// stream. op(A) is A [M, K] (lda) or, with a_transposed, Aᵀ of A stored [K, M]; op(B) is B [K, N]
// (ldb) or, with b_transposed, Bᵀ of B stored [N, K]. A and B are both `operand_type` (CUDA_R_32F or
// CUDA_R_16BF); accumulation is f32 (no TF32: the f32 mode stays f32).
void matmul(const void* A, int64_t lda, bool a_transposed, const void* B, int64_t ldb, bool b_transposed,
            cudaDataType_t operand_type, float* C, int64_t ldc, int64_t M, int64_t N, int64_t K, float alpha,
            float beta);

// Opens cuBLASLt (once per process) and makes one host-only call through it, so that a missing
// library or an entry point that did not bind is an Error here and not a crash in the first product.
// Needs no GPU.
void check_library();

}  // namespace sa2va::cuda
