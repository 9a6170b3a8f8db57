// The dense f32 product of dense.cpp with AVX-512 (compiled with AVX-512
// target flags; dense.cpp calls it only on a CPU that has them). OpenBLAS
// picks its kernels from OPENBLAS_CORETYPE where that is set, and hosts that
// pin it to Haswell for reproducibility leave half of an AVX-512 core unused;
// this kernel depends on the CPU alone.
//
// out[:, n0:n1] (+)= x @ W[:, n0:n1] in blocks of kBlockK inputs. For each
// block the weights of columns [n0, n1) are first copied into contiguous
// panels [kBlockK][32] (from W [K, N] or, transposed, W [N, K]); then x
// passes over them kRows rows at a time, the tile of rows staying in L1 while
// it passes over every panel, each row's 32 sums of a panel in two
// registers. A row's sums are accumulated in the same order whatever the
// number of rows in its tile, so its result does not depend on the batch it
// came in.

// GCC 12 takes the unpack intrinsics' undefined pass-through operand for an
// uninitialized read once they are inlined (-Wmaybe-uninitialized).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <algorithm>
#include <cstdint>
#include <vector>

#include "dense_api.h"

namespace mlx_serving::dense {
namespace {

// The lanes of a 32-wide panel's first (low) and second (high) register that
// hold one of `width` columns.
inline __mmask16 low_lanes(int width) { return width >= 16 ? 0xFFFF : (__mmask16)((1u << std::max(width, 0)) - 1); }
inline __mmask16 high_lanes(int width) { return low_lanes(width - 16); }

// r[i][j] <- r[j][i] for a 16 x 16 block.
inline void transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  // Pairs of rows interleaved: now groups of four within each 128-bit lane.
  for (int i = 0; i < 4; ++i) {
    const __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
    const __m512d c = _mm512_castps_pd(t[4 * i + 2]), e = _mm512_castps_pd(t[4 * i + 3]);
    r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, e));
    r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, e));
  }
  // r[4g + c] lane L holds column 4L + c of rows 4g..4g+3; gather the lanes.
  for (int c = 0; c < 4; ++c) {
    const __m512 a = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x88), b = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xDD);
    const __m512 e = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0x88), f = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0xDD);
    t[c] = _mm512_shuffle_f32x4(a, e, 0x88);       // lane 0 of every group: column c
    t[8 + c] = _mm512_shuffle_f32x4(a, e, 0xDD);   // lane 2: column 8 + c
    t[4 + c] = _mm512_shuffle_f32x4(b, f, 0x88);   // lane 1: column 4 + c
    t[12 + c] = _mm512_shuffle_f32x4(b, f, 0xDD);  // lane 3: column 12 + c
  }
  for (int i = 0; i < 16; ++i) r[i] = t[i];
}

constexpr int kRows = 12;     // rows of x per tile: 24 accumulators of the 32 registers
constexpr int kCols = 32;     // output columns per panel: two registers
constexpr int kBlockK = 256;  // inputs per panel: 32 KiB, within L1
constexpr int kAhead = 128;   // inputs a transposed pack asks for ahead of their copy
constexpr int kRowsAhead = 16;  // rows of W [K, N] a pack asks for ahead of their copy

// Columns [n0, n1) of inputs [k0, k0 + depth) into panels [p][depth][32],
// zeros past n1. W [K, N] is read a row at a time across all the panels
// (one pass over each row's span, not one 4 KiB page per row and panel).
void pack(const Dense& d, int k0, int depth, int n0, int n1, float* panels) {
  const int count = (n1 - n0 + kCols - 1) / kCols;
  const size_t stride = (size_t)depth * kCols;
  if (!d.transposed) {
    for (int k = 0; k < depth; ++k) {
      const float* src = d.w + (size_t)(k0 + k) * d.N;
      const char* ahead = (const char*)(src + (size_t)kRowsAhead * d.N + n0);
      for (int b = 0; b < (n1 - n0) * (int)sizeof(float); b += 64) _mm_prefetch(ahead + b, _MM_HINT_T0);
      for (int p = 0; p < count; ++p) {
        const int n = n0 + p * kCols, width = std::min(kCols, n1 - n);
        float* dst = panels + p * stride + (size_t)k * kCols;
        _mm512_store_ps(dst, _mm512_maskz_loadu_ps(low_lanes(width), src + n));
        _mm512_store_ps(dst + 16, _mm512_maskz_loadu_ps(high_lanes(width), src + n + 16));
      }
    }
    return;
  }
  // W [N, K]: column j of panel p is row n0 + 32p + j of W; 16 rows by 16
  // inputs at a time, transposed in registers.
  for (int p = 0; p < count; ++p) {
    float* panel = panels + p * stride;
    for (int half = 0; half < 2; ++half) {
      const int n = n0 + p * kCols + half * 16, rows = std::clamp(n1 - n, 0, 16);
      for (int k = 0; k < depth; k += 16) {
        const int span = std::min(16, depth - k);
        const __mmask16 lanes = low_lanes(span);
        __m512 r[16];
        for (int j = 0; j < 16; ++j) {
          if (j >= rows) {
            r[j] = _mm512_setzero_ps();
            continue;
          }
          const float* src = d.w + (size_t)(n + j) * d.K + k0 + k;
          // Sixteen rows read 64 bytes at a time each are more streams than
          // the hardware follows: ask for each row's data ahead.
          _mm_prefetch((const char*)(src + kAhead), _MM_HINT_T0);
          r[j] = _mm512_maskz_loadu_ps(lanes, src);
        }
        transpose16(r);
        for (int i = 0; i < span; ++i) _mm512_store_ps(panel + (size_t)(k + i) * kCols + half * 16, r[i]);
      }
    }
  }
}

// Rows [0, R) of a tile: c[r, 0:32] (+)= a[r, 0:depth] @ panel.
template <int R>
void tile(const float* a, int lda, const float* panel, int depth, float* c, int ldc, __mmask16 lo, __mmask16 hi,
          bool accumulate) {
  __m512 acc[R][2];
  for (int r = 0; r < R; ++r) {
    if (accumulate) {
      acc[r][0] = _mm512_maskz_loadu_ps(lo, c + (size_t)r * ldc);
      acc[r][1] = _mm512_maskz_loadu_ps(hi, c + (size_t)r * ldc + 16);
    } else {
      acc[r][0] = _mm512_setzero_ps();
      acc[r][1] = _mm512_setzero_ps();
    }
  }
  for (int k = 0; k < depth; ++k) {
    const __m512 b0 = _mm512_load_ps(panel + k * kCols);
    const __m512 b1 = _mm512_load_ps(panel + k * kCols + 16);
    for (int r = 0; r < R; ++r) {
      const __m512 x = _mm512_set1_ps(a[(size_t)r * lda + k]);
      acc[r][0] = _mm512_fmadd_ps(x, b0, acc[r][0]);
      acc[r][1] = _mm512_fmadd_ps(x, b1, acc[r][1]);
    }
  }
  for (int r = 0; r < R; ++r) {
    _mm512_mask_storeu_ps(c + (size_t)r * ldc, lo, acc[r][0]);
    _mm512_mask_storeu_ps(c + (size_t)r * ldc + 16, hi, acc[r][1]);
  }
}

using Tile = void (*)(const float*, int, const float*, int, float*, int, __mmask16, __mmask16, bool);

// By the number of rows of a tile.
constexpr Tile kTiles[kRows + 1] = {nullptr, tile<1>, tile<2>, tile<3>, tile<4>,  tile<5>, tile<6>,
                                    tile<7>, tile<8>, tile<9>, tile<10>, tile<11>, tile<12>};

}  // namespace

void matmul_avx512(const Dense& d, int n0, int n1, bool accumulate) {
  const int count = (n1 - n0 + kCols - 1) / kCols;
  // This thread's panels of one block of inputs (kept between calls).
  thread_local std::vector<float> buffer;
  const size_t need = (size_t)count * kBlockK * kCols + 16;
  if (buffer.size() < need) buffer.resize(need);
  float* panels = buffer.data() + (16 - ((uintptr_t)buffer.data() / sizeof(float)) % 16) % 16;
  for (int k0 = 0; k0 < d.K; k0 += kBlockK) {
    const int depth = std::min(kBlockK, d.K - k0);
    const bool add = accumulate || k0 > 0;
    pack(d, k0, depth, n0, n1, panels);
    // A tile of rows stays in L1 while it passes over every panel.
    for (int m = 0; m < d.M; m += kRows) {
      const int rows = std::min(kRows, d.M - m);
      for (int p = 0; p < count; ++p) {
        const int n = n0 + p * kCols, width = std::min(kCols, n1 - n);
        kTiles[rows](d.x + (size_t)m * d.K + k0, d.K, panels + (size_t)p * depth * kCols, depth,
                      d.out + (size_t)m * d.N + n, d.N, low_lanes(width), high_lanes(width), add);
      }
    }
  }
}

}  // namespace mlx_serving::dense
