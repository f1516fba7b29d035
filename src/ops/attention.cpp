// Scaled dot-product attention front: checks the sizes and strides, picks the kernel for the calling
// thread's device (ops/cpu/attention.cpp chooses between its per-row, blocked and fused paths;
// ops/cuda/attention.cu).
#include "core/error.h"
#include "ops/cpu/kernels.h"
#include "ops/device_check.h"
#include "ops/ops.h"

namespace sa2va::ops {

void attention(const AttentionArgs& a) {
  const int64_t Dv = a.v_head_dim > 0 ? a.v_head_dim : a.head_dim;
  check(a.q && a.k && a.v && a.out, "attention: null q/k/v/out");
  check(a.q_len >= 0 && a.kv_len >= 0 && a.head_dim > 0 && a.q_heads > 0 && a.kv_heads > 0 &&
            a.q_heads % a.kv_heads == 0 && a.q_offset >= 0,
        "attention: invalid sizes (heads must divide, lengths non-negative)");
  check(a.q_stride >= a.q_heads * a.head_dim && a.k_stride >= a.kv_heads * a.head_dim &&
            a.v_stride >= a.kv_heads * Dv && a.out_stride >= a.q_heads * Dv,
        "attention: a row stride is smaller than heads x head_dim");
  if (a.q_len == 0) return;
  SA2VA_KERNEL(attention, a);
}

}  // namespace sa2va::ops
