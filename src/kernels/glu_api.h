// What the gated-activation primitive (glu.cpp, baseline CPU) and its SIMD
// kernel (glu_avx2.cpp) share: plain pointers, no MLX types.
#pragma once

#include <cstdint>

namespace mlx_serving::glu {

enum Kind : int { kSilu = 0, kGeluTanh = 1, kGeluErf = 2 };

// out[r, i] = act(gate[r, i]) * up[r, i] for rows r of `width` elements; each
// row of gate and of up starts `in_row` floats after the previous (2 * width
// when they are the halves of one stacked output, else width). kGeluErf is
// not gated: out = gelu(gate) with the exact (erf) GELU, `up` unused.
struct Args {
  const float* gate;
  const float* up;
  int64_t in_row;
  float* out;  // [rows, width], contiguous
  int64_t rows, width;
  Kind kind;
};

// Rows [r0, r1).
void glu_avx2(const Args& a, int64_t r0, int64_t r1);

}  // namespace mlx_serving::glu
