// Batched attention front: checks the batch, picks the kernel (ops/cpu/attention_batched.cpp).
#include <string>

#include "core/error.h"
#include "ops/cpu/kernels.h"
#include "ops/device_check.h"
#include "ops/ops.h"

namespace sa2va::ops {

void attention_batched(const AttentionArgs& args, const AttentionBatch& batch) {
  check(batch.count >= 0, "attention_batched: negative problem count " + std::to_string(batch.count));
  if (batch.count == 0) return;
  check(args.q && args.k && args.v && args.out, "attention_batched: null q, k, v or out");
  check(args.q_len >= 0 && args.kv_len >= 0 && args.q_heads >= 1 && args.kv_heads >= 1 && args.head_dim >= 1 &&
            args.q_heads % args.kv_heads == 0,
        "attention_batched: invalid sizes (q_len " + std::to_string(args.q_len) + ", kv_len " +
            std::to_string(args.kv_len) + ", heads " + std::to_string(args.q_heads) + "/" +
            std::to_string(args.kv_heads) + ", head_dim " + std::to_string(args.head_dim) + ")");
  check(args.q_offset >= 0, "attention_batched: negative q_offset " + std::to_string(args.q_offset));
  const int64_t dv = args.v_head_dim > 0 ? args.v_head_dim : args.head_dim;
  check(args.q_stride >= args.q_heads * args.head_dim && args.k_stride >= args.kv_heads * args.head_dim &&
            args.v_stride >= args.kv_heads * dv && args.out_stride >= args.q_heads * dv,
        "attention_batched: a row stride is smaller than heads x head_dim");
  // Problems must not write over each other's outputs.
  const int64_t out_rows = args.q_len > 0 ? (args.q_len - 1) * args.out_stride + args.q_heads * dv : 0;
  check(batch.count == 1 || batch.out >= out_rows,
        "attention_batched: output batch stride " + std::to_string(batch.out) + " is smaller than one problem's " +
            std::to_string(out_rows) + " output elements");
  SA2VA_KERNEL(attention_batched, args, batch);
}

}  // namespace sa2va::ops
