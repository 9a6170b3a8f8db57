// What the generic part of the quantized matmul (qmm.cpp) and the SIMD kernel
// translation units share: plain pointers and function tables, no MLX types and
// no target-specific code, so that including it never pulls AVX into a file
// compiled for the baseline CPU.
#pragma once

#include <cstddef>
#include <cstdint>

namespace mlx_serving::qmm {

// Weights in MLX's affine layout: row n holds K values of `bits` bits packed
// little-end first into uint32 words; value = scale * q + bias per group.
struct Weights {
  const uint8_t* w;
  const float* scales;  // [N, K / group]
  const float* biases;  // [N, K / group]
  int N, K, group, bits;
};

// The same weights regrouped in panels of 8 rows for the int8 kernels: panel
// p holds word u (32 bits) of rows 8p..8p+7 side by side, for every u in
// order, so that one 256-bit load is one word of 8 rows; scales and biases
// likewise [panel][group][8]. The last panel is padded with zero rows.
struct Panels {
  const uint32_t* w;    // [ceil(N / 8), K * bits / 32, 8]
  const float* scales;  // [ceil(N / 8), K / group, 8]
  const float* biases;  // [ceil(N / 8), K / group, 8]
  int N, K, group, bits;
};

// Activations quantized to int8 per block of 32 (see `quantize`).
struct Acts {
  const int8_t* q;       // [M, K]; for 4-bit weights each 8 as evens then odds
  const float* d;        // [M, K / 32], the blocks' scales
  const int32_t* qsum;   // [M, K / 32], the sum of each block's int8 values
  const float* xsum;     // [M, K / group], exact
  int M;
};

struct Kernels {
  // Rows [m0, m1) of x [M, K] into q, d, qsum and xsum (indexed by row from 0).
  void (*quantize)(const float* x, int m0, int m1, int K, int group, int bits, int8_t* q, float* d, int32_t* qsum,
                   float* xsum);
  // xp [rows, K]: x as matmul_f32 reads it; xsum [rows, K / group].
  void (*prepare_f32)(const float* x, int rows, int K, int group, int bits, float* xp, float* xsum);
  // out[m, n] for the rows n of panels [p0, p1), every row m; out is [M, N].
  void (*matmul_int8)(const Acts& a, const Panels& W, int p0, int p1, float* out);
  // x as prepare_f32 wrote it.
  void (*matmul_f32)(const float* x, const float* xsum, int M, const Weights& W, int n0, int n1, float* out);
  void (*dequantize)(const Weights& W, int n0, int n1, float* dst);
};

// Calls fn(ctx, i0, i1) over [0, n) in chunks of `chunk` on the kernels'
// thread pool (qmm.cpp), the calling thread included.
void parallel_for(int n, int chunk, void (*fn)(void*, int, int), void* ctx);

// Writes `what` into the C entry points' error buffer (NUL-terminated, cut to len).
void set_error(char* err, size_t len, const char* what);

// Whether this CPU runs AVX2 + FMA code (and MLX_SERVING_QMM_ISA is not `mlx`).
bool cpu_has_avx2();

// Whether the AVX-512 kernels serve (the CPU has them; MLX_SERVING_QMM_ISA
// names no other set).
bool cpu_has_avx512();

// Defined by the SIMD translation units; call only on a CPU that has the features.
const Kernels* avx2_kernels();
const Kernels* avx512_kernels();
const Kernels* avxvnni_kernels();

}  // namespace mlx_serving::qmm
