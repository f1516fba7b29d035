// CPU kernel for batched attention: independent problems (Hiera's windows) spread over the pool.
#include "core/threadpool.h"
#include "ops/cpu/kernels.h"

namespace sa2va::ops::cpu {

void attention_batched(const AttentionArgs& args, const AttentionBatch& batch) {
  auto one = [&](int64_t b) {
    AttentionArgs a = args;
    a.q = args.q + b * batch.q;
    a.k = args.k + b * batch.k;
    a.v = args.v + b * batch.v;
    a.out = args.out + b * batch.out;
    cpu::attention(a);  // the single-problem kernel (cpu/attention.cpp); the front checked the sizes
  };
  // Many small problems: one task per range of problems (attention inside runs inline). A single
  // large problem parallelises inside cpu::attention instead.
  parallel_for(batch.count, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) one(b);
  });
}

}  // namespace sa2va::ops::cpu
