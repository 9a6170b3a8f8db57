// What the attention primitive (attention.cpp, baseline CPU) and its SIMD
// kernel (attention_avx2.cpp) share: plain pointers and strides, no MLX types.
#pragma once

#include <cstdint>

namespace mlx_serving::attn {

// softmax(scale * q k^T, masked) v for one batch of queries. Element strides
// per dimension; the last dimension of q, k and v is contiguous.
struct Args {
  const float* q;  // [B, Hq, Lq, D]
  int64_t qs[4];
  const float* k;  // [B, Hkv, S, D]
  int64_t ks[4];
  const float* v;  // [B, Hkv, S, D]
  int64_t vs[4];
  // [B or 1, 1, Lq or 1, S], true where a query may attend; nullptr: no mask
  // (then with `causal`, query i sees columns up to S - Lq + i).
  const bool* mask;
  int64_t ms[4];
  bool causal;
  float* out;  // [B, Lq, Hq * D], contiguous: heads merged, as the output projection takes them
  int B, Hq, Hkv, Lq, S, D;
  float scale;
};

// Query rows [r0, r1) of batch row b and key/value head g: the rows of the
// heads that share that key/value head, head by head, Lq queries each.
void attend_avx2(const Args& a, int b, int g, int r0, int r1);

}  // namespace mlx_serving::attn
