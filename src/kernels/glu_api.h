// What the gated-activation primitive (glu.cpp, baseline CPU) and its SIMD
// kernel (glu_avx2.cpp) share: plain pointers, no MLX types.
#pragma once

#include <cstdint>

namespace mlx_serving::glu {

enum Kind : int { kSilu = 0, kGeluTanh = 1 };

// out[r, i] = act(gate[r, i]) * up[r, i] for rows r of `width` elements; each
// row of gate and up starts `gate_row` / `up_row` floats after the previous.
struct Args {
  const float* gate;
  const float* up;
  int64_t gate_row, up_row;
  float* out;  // [rows, width], contiguous
  int64_t rows, width;
  Kind kind;
};

// Rows [r0, r1).
void glu_avx2(const Args& a, int64_t r0, int64_t r1);

}  // namespace mlx_serving::glu
