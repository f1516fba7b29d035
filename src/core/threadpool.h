// A fixed pool of worker threads and parallel_for over an index range.
// The number of threads is a process-wide setting (`--threads`); kernels split their outer
// loop (rows, heads, channels) into contiguous chunks, one per thread.
#pragma once
#include <cstdint>
#include <functional>

namespace sa2va {

// Sets the number of threads used by parallel_for (>= 1). The BLAS library runs single-threaded
// inside the pool's tasks (ops::gemm splits its work), so this is the only knob.
void set_num_threads(int n);
int num_threads();

// Calls fn(begin, end) on disjoint chunks covering [0, n). Chunks are at least `grain` long.
// Runs inline when n is small or only one thread is configured. Nested calls run inline.
void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain = 1);

}  // namespace sa2va
