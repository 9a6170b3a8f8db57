// What dense.cpp shares with its SIMD translation unit: plain pointers, no MLX
// types and no target-specific code.
#pragma once

namespace mlx_serving::dense {

// out [M, N] = x [M, K] @ W, W [K, N] or (transposed) [N, K]; all row-major.
struct Dense {
  const float* x;
  const float* w;
  float* out;
  int M, N, K;
  bool transposed;
};

// Columns [n0, n1) of out; with `accumulate` added to what out holds (a bias
// written there first), else written. Call only on a CPU with AVX-512F.
void matmul_avx512(const Dense& d, int n0, int n1, bool accumulate);

}  // namespace mlx_serving::dense
