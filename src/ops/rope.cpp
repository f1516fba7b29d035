// Rotary position embedding fronts (the LLMs' rotate-half RoPE, SAM2's axial 2D RoPE): check
// sizes and buffers, pick the kernel for the calling thread's device.
#include <algorithm>
#include <string>

#include "core/error.h"
#include "ops/cpu/kernels.h"
#include "ops/device_check.h"
#include "ops/ops.h"

namespace sa2va::ops {

void rope_rotate_half(float* x, int64_t tokens, int64_t heads, int64_t head_dim, int64_t stride,
                      const int64_t* positions, float theta) {
  check(head_dim > 0 && head_dim % 2 == 0, "rope: head_dim must be even");
  check(stride >= heads * head_dim, "rope: row stride smaller than heads x head_dim");
  if (tokens < 0 || heads < 0)
    throw Error("rope: negative size (tokens " + std::to_string(tokens) + ", heads " + std::to_string(heads) + ")");
  if (tokens == 0 || heads == 0) return;
  check(x && positions, "rope: null buffer");
  SA2VA_KERNEL(rope_rotate_half, x, tokens, heads, head_dim, stride, positions, theta);
}

void rope_axial_2d(float* x, int64_t tokens, int64_t dim, int64_t grid_w, int64_t grid_h, float theta,
                   int64_t rope_tokens) {
  check(dim > 0 && dim % 4 == 0, "rope_axial_2d: dim must be a multiple of 4");
  check(grid_w > 0 && grid_h > 0, "rope_axial_2d: empty grid");
  if (tokens < 0) throw Error("rope_axial_2d: negative token count " + std::to_string(tokens));
  if (std::min(tokens, rope_tokens) <= 0) return;  // nothing to rotate
  check(x != nullptr, "rope_axial_2d: null buffer");
  SA2VA_KERNEL(rope_axial_2d, x, tokens, dim, grid_w, grid_h, theta, rope_tokens);
}

}  // namespace sa2va::ops
