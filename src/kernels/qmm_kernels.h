// The SIMD kernels of the quantized matmul. No MLX types here: plain pointers,
// to weights in MLX's affine layout (the f32 mode) or in panels of 8 rows (the
// int8 mode, `Panels`). This header is compiled three times, by qmm_avx2.cpp,
// qmm_avx512.cpp and qmm_avxvnni.cpp, each with its own target flags; QMM_VNNI
// picks the int8 dot product: `vpdpbusd` on 256-bit vectors (1: AVX-512 VNNI
// encoding, with 32 vector registers; 2: AVX-VNNI encoding) or AVX2 `maddubs`
// + `madd` (0). Everything else is AVX2 + FMA.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "qmm_api.h"
#include "simd.h"

namespace mlx_serving::qmm::QMM_NS {

using simd::hsum;

// The exact f32 sum of each group of `group` elements of one row of K.
static inline void group_sums(const float* xr, int K, int group, float* out) {
  for (int g = 0; g < K / group; ++g) {
    __m256 s = _mm256_setzero_ps();
    for (int k = 0; k < group; k += 8) s = _mm256_add_ps(s, _mm256_loadu_ps(xr + g * group + k));
    out[g] = hsum(s);
  }
}

static inline float dot_f32(const float* a, const float* b, int n) {
  __m256 acc = _mm256_setzero_ps();
  int i = 0;
  for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
  float s = hsum(acc);
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

// ---------------------------------------------------------------------------
// Int8 mode. Activations: int8 per block of 32 (scale = max|x| / 127), the sum
// of each block's int8 values, and the exact f32 sum of each weight group,
// which carries the weights' affine offset. For 4-bit weights each 8 values
// are stored evens first (0 2 4 6 1 3 5 7): a weight word holds values 2j in
// its low nibbles and 2j+1 in its high ones, so masking a word's nibbles gives
// four weights whose activations are four consecutive bytes.
static void quantize(const float* x, int m0, int m1, int K, int group, int bits, int8_t* q, float* d, int32_t* qsum,
                     float* xsum) {
  const int nb = K / 32, G = K / group;
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  const __m256i evens_first = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
  for (int m = m0; m < m1; ++m) {
    const float* xr = x + (size_t)m * K;
    group_sums(xr, K, group, xsum + (size_t)m * G);
    for (int b = 0; b < nb; ++b) {
      __m256 v[4];
      __m256 amax = _mm256_setzero_ps();
      for (int i = 0; i < 4; ++i) {
        v[i] = _mm256_loadu_ps(xr + b * 32 + 8 * i);
        if (bits == 4) v[i] = _mm256_permutevar8x32_ps(v[i], evens_first);
        amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v[i]));
      }
      __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
      m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
      m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
      const float mx = _mm_cvtss_f32(m4);
      const float inv = mx > 0.0f ? 127.0f / mx : 0.0f;
      d[(size_t)m * nb + b] = mx / 127.0f;
      const __m256 vi = _mm256_set1_ps(inv);
      __m256i i32[4];
      for (int i = 0; i < 4; ++i)
        i32[i] = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[i], vi), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
      const __m256i total = _mm256_add_epi32(_mm256_add_epi32(i32[0], i32[1]), _mm256_add_epi32(i32[2], i32[3]));
      __m128i t = _mm_add_epi32(_mm256_castsi256_si128(total), _mm256_extracti128_si256(total, 1));
      t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4E));
      t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xB1));
      qsum[(size_t)m * nb + b] = _mm_cvtsi128_si32(t);
      const __m256i p16 = _mm256_packs_epi32(i32[0], i32[1]);
      const __m256i p16b = _mm256_packs_epi32(i32[2], i32[3]);
      const __m256i p8 = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(p16, p16b), order);
      _mm256_storeu_si256((__m256i*)(q + (size_t)m * K + b * 32), p8);
    }
  }
}

// Activation rows per tile: as many as the vector registers hold beside the
// weights (32 registers with AVX-512, 16 without).
#if QMM_VNNI == 1
constexpr int kTileRows = 8;
#else
constexpr int kTileRows = 4;
#endif

// Four activation bytes broadcast to every 32-bit lane.
static inline __m256i bcast4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

// u8 (first) x s8 (second) products, four per 32-bit lane, added to acc.
static inline __m256i dpbusd(__m256i acc, __m256i u, __m256i s) {
#if QMM_VNNI == 1
  return _mm256_dpbusd_epi32(acc, u, s);
#elif QMM_VNNI == 2
  return _mm256_dpbusd_avx_epi32(acc, u, s);
#else
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
#endif
}

// The exact integer dot products of block b (32 values) of one panel's 8
// weight rows (lanes) with R activation rows. Every instruction set gives the
// same integers: VNNI sums u8 x s8 products in 32 bits; without it, 4-bit
// products (at most 15 * 127) are summed in 16 bits over the block (8 * 2 *
// 1905 < 2^15) before widening, and 8-bit weights are taken as q - 128 with
// abs/sign (so `maddubs` cannot saturate) and given 128 * sum(x) back.
template <int BITS, int R>
static inline void block_dots(const __m256i* w, const int8_t* const* xq, const int32_t* const* qs, int b, __m256i* dot) {
  (void)qs;  // the AVX2 8-bit path's
  if constexpr (BITS == 4) {
    const __m256i low = _mm256_set1_epi8(0x0F);
#if QMM_VNNI
    for (int r = 0; r < R; ++r) dot[r] = _mm256_setzero_si256();
    for (int o = 0; o < 4; ++o) {
      const __m256i raw = _mm256_loadu_si256(w + o);
      const __m256i lo = _mm256_and_si256(raw, low), hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low);
      for (int r = 0; r < R; ++r) {
        const int8_t* x = xq[r] + b * 32 + o * 8;
        dot[r] = dpbusd(dot[r], lo, bcast4(x));
        dot[r] = dpbusd(dot[r], hi, bcast4(x + 4));
      }
    }
#else
    __m256i s16[R];
    for (int r = 0; r < R; ++r) s16[r] = _mm256_setzero_si256();
    for (int o = 0; o < 4; ++o) {
      const __m256i raw = _mm256_loadu_si256(w + o);
      const __m256i lo = _mm256_and_si256(raw, low), hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low);
      for (int r = 0; r < R; ++r) {
        const int8_t* x = xq[r] + b * 32 + o * 8;
        s16[r] = _mm256_add_epi16(s16[r], _mm256_maddubs_epi16(lo, bcast4(x)));
        s16[r] = _mm256_add_epi16(s16[r], _mm256_maddubs_epi16(hi, bcast4(x + 4)));
      }
    }
    for (int r = 0; r < R; ++r) dot[r] = _mm256_madd_epi16(s16[r], _mm256_set1_epi16(1));
#endif
  } else {
#if QMM_VNNI
    for (int r = 0; r < R; ++r) dot[r] = _mm256_setzero_si256();
    for (int u = 0; u < 8; ++u) {
      const __m256i wv = _mm256_loadu_si256(w + u);
      for (int r = 0; r < R; ++r) dot[r] = dpbusd(dot[r], wv, bcast4(xq[r] + b * 32 + 4 * u));
    }
#else
    for (int r = 0; r < R; ++r) dot[r] = _mm256_set1_epi32(128 * qs[r][b]);
    for (int u = 0; u < 8; ++u) {
      const __m256i ws = _mm256_xor_si256(_mm256_loadu_si256(w + u), _mm256_set1_epi8((char)0x80));
      const __m256i wa = _mm256_abs_epi8(ws);
      for (int r = 0; r < R; ++r) dot[r] = dpbusd(dot[r], wa, _mm256_sign_epi8(bcast4(xq[r] + b * 32 + 4 * u), ws));
    }
#endif
  }
}

// One panel (8 weight rows) times activation rows m0..m0+R: per block, the
// integer dot products scaled by the weights' scale times the block's scale,
// and per group the biases times the group's exact sum, added lane by lane in
// that order. The order is the same whatever R is, so an output does not
// depend on the rows that share its tile.
template <int BITS, int R>
static inline void panel_tile(const Acts& a, const Panels& W, int p, int m0, float* out) {
  const int K = W.K, nb = K / 32, G = K / W.group, per = W.group / 32;
  const __m256i* w = (const __m256i*)(W.w + (size_t)p * (K * BITS / 32) * 8);
  const float* sc = W.scales + (size_t)p * G * 8;
  const float* bi = W.biases + (size_t)p * G * 8;
  const int8_t* xq[R];
  const float *xd[R], *xs[R];
  const int32_t* qs[R];
  __m256 acc[R];
  for (int r = 0; r < R; ++r) {
    xq[r] = a.q + (size_t)(m0 + r) * K;
    xd[r] = a.d + (size_t)(m0 + r) * nb;
    qs[r] = a.qsum + (size_t)(m0 + r) * nb;
    xs[r] = a.xsum + (size_t)(m0 + r) * G;
    acc[r] = _mm256_setzero_ps();
  }
  for (int g = 0, b = 0; g < G; ++g) {
    const __m256 s = _mm256_loadu_ps(sc + g * 8);
    for (int e = 0; e < per; ++e, ++b) {
      __m256i dot[R];
      block_dots<BITS, R>(w + (size_t)b * BITS, xq, qs, b, dot);
      for (int r = 0; r < R; ++r)
        acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot[r]), _mm256_mul_ps(s, _mm256_set1_ps(xd[r][b])), acc[r]);
    }
    const __m256 bv = _mm256_loadu_ps(bi + g * 8);
    for (int r = 0; r < R; ++r) acc[r] = _mm256_fmadd_ps(bv, _mm256_set1_ps(xs[r][g]), acc[r]);
  }
  const int n0 = p * 8, valid = W.N - n0;
  for (int r = 0; r < R; ++r) {
    float* o = out + (size_t)(m0 + r) * W.N + n0;
    if (valid >= 8) {
      _mm256_storeu_ps(o, acc[r]);
    } else {
      alignas(32) float t[8];
      _mm256_store_ps(t, acc[r]);
      std::memcpy(o, t, sizeof(float) * valid);
    }
  }
}

template <int BITS>
static inline void panel_rows(int R, const Acts& a, const Panels& W, int p, int m0, float* out) {
  switch (R) {
    case 1: panel_tile<BITS, 1>(a, W, p, m0, out); break;
    case 2: panel_tile<BITS, 2>(a, W, p, m0, out); break;
    case 3: panel_tile<BITS, 3>(a, W, p, m0, out); break;
#if QMM_VNNI == 1
    case 4: panel_tile<BITS, 4>(a, W, p, m0, out); break;
    case 5: panel_tile<BITS, 5>(a, W, p, m0, out); break;
    case 6: panel_tile<BITS, 6>(a, W, p, m0, out); break;
    case 7: panel_tile<BITS, 7>(a, W, p, m0, out); break;
#endif
    default: panel_tile<BITS, kTileRows>(a, W, p, m0, out); break;
  }
}

// Panels [p0, p1) for every activation row: a few panels at a time, whose
// weights stay in cache while every tile of rows passes over them.
template <int BITS>
static void matmul_int8_bits(const Acts& a, const Panels& W, int p0, int p1, float* out) {
  constexpr int kPanels = 4;
  for (int q0 = p0; q0 < p1; q0 += kPanels) {
    const int q1 = std::min(p1, q0 + kPanels);
    for (int m0 = 0; m0 < a.M; m0 += kTileRows) {
      const int rows = std::min(kTileRows, a.M - m0);
      for (int p = q0; p < q1; ++p) panel_rows<BITS>(rows, a, W, p, m0, out);
    }
  }
}

static void matmul_int8(const Acts& a, const Panels& W, int p0, int p1, float* out) {
  if (W.bits == 4) matmul_int8_bits<4>(a, W, p0, p1, out);
  else matmul_int8_bits<8>(a, W, p0, p1, out);
}

// ---------------------------------------------------------------------------
// Exact mode: f32 activations; per group s * sum(q * x) + b * sum(x).
//
// For 4-bit weights the activations are first copied with each 32-block in the
// order the int8 mode uses (even elements, then odd ones), so that a block of
// weights is one 16-byte load, a mask and a shift, widened 8 at a time. Each
// (weight row, activation row) pair keeps two accumulators, and a tile holds
// several weight rows when it holds few activation rows, so that one row alone
// (decode) is not bound by the latency of a single chain of FMAs.

// Eight consecutive weights (from element k of a row) as floats (natural order).
template <int BITS>
static inline __m256 unpack8(const uint8_t* row, int k) {
  if constexpr (BITS == 4) {
    uint32_t word;
    std::memcpy(&word, row + k / 2, 4);
    const __m256i sh = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
    return _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)word), sh), _mm256_set1_epi32(15)));
  } else {
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)(row + k))));
  }
}

// A block of 32 weights as four vectors of 8, in the order of the prepared
// activations (4-bit: even elements 0..14, 16..30, then odd 1..15, 17..31).
template <int BITS>
static inline void unpack32(const uint8_t* p, __m256 w[4]) {
  if constexpr (BITS == 4) {
    const __m128i v = _mm_loadu_si128((const __m128i*)p);
    const __m128i mask = _mm_set1_epi8(0x0F);
    const __m128i lo = _mm_and_si128(v, mask);
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(v, 4), mask);
    w[0] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo));
    w[1] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_unpackhi_epi64(lo, lo)));
    w[2] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi));
    w[3] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_unpackhi_epi64(hi, hi)));
  } else {
    for (int i = 0; i < 4; ++i) w[i] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)(p + 8 * i))));
  }
}

// R activation rows x NR weight rows, all of K.
template <int BITS, int R, int NR>
static inline void tile_f32(const float* x, const float* xsum, const Weights& W, int m0, int n, float* out) {
  const int K = W.K, group = W.group, G = K / group;
  const size_t row_bytes = (size_t)K * BITS / 8;
  __m256 acc[NR][R];
  for (int j = 0; j < NR; ++j)
    for (int r = 0; r < R; ++r) acc[j][r] = _mm256_setzero_ps();
  for (int g = 0; g < G; ++g) {
    __m256 ga[NR][R][2];
    for (int j = 0; j < NR; ++j)
      for (int r = 0; r < R; ++r) ga[j][r][0] = ga[j][r][1] = _mm256_setzero_ps();
    for (int k = g * group; k < (g + 1) * group; k += 32) {
      for (int j = 0; j < NR; ++j) {
        __m256 w[4];
        unpack32<BITS>(W.w + (size_t)(n + j) * row_bytes + (size_t)k * BITS / 8, w);
        for (int r = 0; r < R; ++r) {
          const float* xr = x + (size_t)(m0 + r) * K + k;
          ga[j][r][0] = _mm256_fmadd_ps(w[0], _mm256_loadu_ps(xr), ga[j][r][0]);
          ga[j][r][1] = _mm256_fmadd_ps(w[1], _mm256_loadu_ps(xr + 8), ga[j][r][1]);
          ga[j][r][0] = _mm256_fmadd_ps(w[2], _mm256_loadu_ps(xr + 16), ga[j][r][0]);
          ga[j][r][1] = _mm256_fmadd_ps(w[3], _mm256_loadu_ps(xr + 24), ga[j][r][1]);
        }
      }
    }
    for (int j = 0; j < NR; ++j) {
      const __m256 s = _mm256_set1_ps(W.scales[(size_t)(n + j) * G + g]);
      for (int r = 0; r < R; ++r) acc[j][r] = _mm256_fmadd_ps(_mm256_add_ps(ga[j][r][0], ga[j][r][1]), s, acc[j][r]);
    }
  }
  for (int j = 0; j < NR; ++j)
    for (int r = 0; r < R; ++r)
      out[(size_t)(m0 + r) * W.N + n + j] =
          hsum(acc[j][r]) + dot_f32(W.biases + (size_t)(n + j) * G, xsum + (size_t)(m0 + r) * G, G);
}

// Weight rows n0..n1 for R activation rows from m0, NR at a time.
template <int BITS, int R, int NR>
static void cols_f32(const float* x, const float* xsum, const Weights& W, int m0, int n0, int n1, float* out) {
  int n = n0;
  for (; n + NR <= n1; n += NR) tile_f32<BITS, R, NR>(x, xsum, W, m0, n, out);
  for (; n < n1; ++n) tile_f32<BITS, R, 1>(x, xsum, W, m0, n, out);
}

template <int BITS>
static void matmul_f32_bits(const float* x, const float* xsum, int M, const Weights& W, int n0, int n1, float* out) {
  for (int m0 = 0; m0 < M; m0 += 4) {
    switch (M - m0) {
      case 1: cols_f32<BITS, 1, 4>(x, xsum, W, m0, n0, n1, out); break;
      case 2: cols_f32<BITS, 2, 2>(x, xsum, W, m0, n0, n1, out); break;
      case 3: cols_f32<BITS, 3, 1>(x, xsum, W, m0, n0, n1, out); break;
      default: cols_f32<BITS, 4, 1>(x, xsum, W, m0, n0, n1, out); break;
    }
  }
}

static void matmul_f32(const float* x, const float* xsum, int M, const Weights& W, int n0, int n1, float* out) {
  if (W.bits == 4) matmul_f32_bits<4>(x, xsum, M, W, n0, n1, out);
  else matmul_f32_bits<8>(x, xsum, M, W, n0, n1, out);
}

// The exact mode's inputs: each group's sum of x, and x itself, for 4-bit
// weights with every 32-block reordered as `unpack32` reads the weights.
static void prepare_f32(const float* x, int rows, int K, int group, int bits, float* xp, float* xsum) {
  const int G = K / group;
  for (int m = 0; m < rows; ++m) {
    const float* xr = x + (size_t)m * K;
    group_sums(xr, K, group, xsum + (size_t)m * G);
    float* o = xp + (size_t)m * K;
    if (bits == 4) {
      for (int b = 0; b < K; b += 32)
        for (int j = 0; j < 16; ++j) {
          o[b + j] = xr[b + 2 * j];
          o[b + 16 + j] = xr[b + 2 * j + 1];
        }
    } else {
      std::memcpy(o, xr, sizeof(float) * K);
    }
  }
}

// Rows n0..n1 of the weights as f32 (s * q + b), into dst [(n1 - n0), K].
template <int BITS>
static void dequantize_bits(const Weights& W, int n0, int n1, float* dst) {
  const int K = W.K, group = W.group, G = K / group;
  for (int n = n0; n < n1; ++n) {
    const uint8_t* row = W.w + (size_t)n * K * BITS / 8;
    float* o = dst + (size_t)(n - n0) * K;
    for (int g = 0; g < G; ++g) {
      const __m256 s = _mm256_set1_ps(W.scales[(size_t)n * G + g]);
      const __m256 b = _mm256_set1_ps(W.biases[(size_t)n * G + g]);
      for (int k = g * group; k < (g + 1) * group; k += 8) _mm256_storeu_ps(o + k, _mm256_fmadd_ps(unpack8<BITS>(row, k), s, b));
    }
  }
}

static void dequantize(const Weights& W, int n0, int n1, float* dst) {
  if (W.bits == 4) dequantize_bits<4>(W, n0, n1, dst);
  else dequantize_bits<8>(W, n0, n1, dst);
}

static const Kernels kKernels = {quantize, prepare_f32, matmul_int8, matmul_f32, dequantize};

}  // namespace mlx_serving::qmm::QMM_NS
