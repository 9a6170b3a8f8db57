// The attention kernel for x86-64 with AVX2 + FMA (compiled with -mavx2 -mfma;
// called only after a run-time CPU check). One work item is a tile of query
// rows against all keys of one key/value head: scores for the rows' allowed
// range of keys, a softmax whose exponential is a vector polynomial (MLX's CPU
// `exp` is scalar), then the weighted sum of the values, each pass over keys
// in blocks that stay in cache.

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "attention_api.h"
#include "simd.h"

namespace mlx_serving::attn {
namespace {

constexpr int kBlock = 128;  // keys per pass over a block
constexpr int kMaxRows = 16; // query rows per work item (see attention.cpp)

using simd::exp256;
using simd::hsum;

inline float hmax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Four dot products of q (D floats) with keys k0..k3, as one __m128.
inline __m128 dot4(const float* q, const float* k0, const float* k1, const float* k2, const float* k3, int D) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (int d = 0; d < D; d += 8) {
    const __m256 x = _mm256_loadu_ps(q + d);
    a0 = _mm256_fmadd_ps(x, _mm256_loadu_ps(k0 + d), a0);
    a1 = _mm256_fmadd_ps(x, _mm256_loadu_ps(k1 + d), a1);
    a2 = _mm256_fmadd_ps(x, _mm256_loadu_ps(k2 + d), a2);
    a3 = _mm256_fmadd_ps(x, _mm256_loadu_ps(k3 + d), a3);
  }
  // Pairwise sums: lanes end up as (a0, a1, a2, a3).
  const __m256 s01 = _mm256_hadd_ps(a0, a1), s23 = _mm256_hadd_ps(a2, a3);
  const __m256 s = _mm256_hadd_ps(s01, s23);
  return _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
}

inline float dot1(const float* q, const float* k, int D) {
  __m256 a = _mm256_setzero_ps();
  for (int d = 0; d < D; d += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(q + d), _mm256_loadu_ps(k + d), a);
  return hsum(a);
}

}  // namespace

void attend_avx2(const Args& a, int b, int g, int r0, int r1) {
  const int D = a.D, S = a.S, Lq = a.Lq, group = a.Hq / a.Hkv, rows = r1 - r0;
  const float neg_inf = -std::numeric_limits<float>::infinity();
  thread_local std::vector<float> scratch;
  scratch.resize((size_t)kMaxRows * (S + 2 * D));
  float* scores = scratch.data();               // [rows, S]
  float* qp = scores + (size_t)kMaxRows * S;    // [rows, D], scaled
  float* acc = qp + (size_t)kMaxRows * D;       // [rows, D]
  int lo[kMaxRows], hi[kMaxRows], head[kMaxRows], query[kMaxRows];
  const bool* mrow[kMaxRows];
  int first = S, last = -1;
  const __m256 scale = _mm256_set1_ps(a.scale);
  for (int t = 0; t < rows; ++t) {
    const int h = g * group + (r0 + t) / Lq, i = (r0 + t) % Lq;
    head[t] = h;
    query[t] = i;
    const float* src = a.q + b * a.qs[0] + h * a.qs[1] + i * a.qs[2];
    for (int d = 0; d < D; d += 8) _mm256_storeu_ps(qp + t * D + d, _mm256_mul_ps(_mm256_loadu_ps(src + d), scale));
    int l = 0, r = a.causal ? S - Lq + i : S - 1;
    mrow[t] = nullptr;
    if (a.mask) {
      const bool* m = a.mask + (a.ms[0] ? b * a.ms[0] : 0) + (a.ms[2] ? i * a.ms[2] : 0);
      const int64_t step = a.ms[3];
      while (l <= r && !m[l * step]) ++l;
      while (r >= l && !m[r * step]) --r;
      // A contiguous run needs no per-key check.
      bool holes = false;
      for (int c = l; c <= r && !holes; ++c) holes = !m[c * step];
      if (holes) mrow[t] = m;
    }
    lo[t] = l;
    hi[t] = r;
    if (l <= r) {
      first = std::min(first, l);
      last = std::max(last, r);
    }
  }
  const float* kb = a.k + b * a.ks[0] + g * a.ks[1];
  const float* vb = a.v + b * a.vs[0] + g * a.vs[1];
  const int64_t kstep = a.ks[2], vstep = a.vs[2];

  // Scores, key block by key block.
  for (int c0 = first; c0 <= last; c0 += kBlock) {
    const int c1 = std::min(last + 1, c0 + kBlock);
    for (int t = 0; t < rows; ++t) {
      const int from = std::max(c0, lo[t]), to = std::min(c1, hi[t] + 1);
      const float* q = qp + t * D;
      float* s = scores + (size_t)t * S;
      int c = from;
      for (; c + 4 <= to; c += 4)
        _mm_storeu_ps(s + c, dot4(q, kb + c * kstep, kb + (c + 1) * kstep, kb + (c + 2) * kstep, kb + (c + 3) * kstep, D));
      for (; c < to; ++c) s[c] = dot1(q, kb + c * kstep, D);
    }
  }

  // Softmax over each row's range; masked keys inside it weigh 0.
  float inv[kMaxRows];
  for (int t = 0; t < rows; ++t) {
    float* s = scores + (size_t)t * S;
    const int l = lo[t], r = hi[t];
    if (l > r) {
      inv[t] = 0.0f;
      continue;
    }
    if (const bool* m = mrow[t])
      for (int c = l; c <= r; ++c)
        if (!m[c * a.ms[3]]) s[c] = neg_inf;
    __m256 mx = _mm256_set1_ps(neg_inf);
    int c = l;
    for (; c + 8 <= r + 1; c += 8) mx = _mm256_max_ps(mx, _mm256_loadu_ps(s + c));
    float top = hmax(mx);
    for (; c <= r; ++c) top = std::max(top, s[c]);
    const __m256 vtop = _mm256_set1_ps(top), vinf = _mm256_set1_ps(neg_inf);
    __m256 sum = _mm256_setzero_ps();
    c = l;
    for (; c + 8 <= r + 1; c += 8) {
      const __m256 x = _mm256_loadu_ps(s + c);
      const __m256 p = _mm256_andnot_ps(_mm256_cmp_ps(x, vinf, _CMP_EQ_OQ), exp256(_mm256_sub_ps(x, vtop)));
      _mm256_storeu_ps(s + c, p);
      sum = _mm256_add_ps(sum, p);
    }
    float total = hsum(sum);
    for (; c <= r; ++c) {
      s[c] = s[c] == neg_inf ? 0.0f : std::exp(s[c] - top);
      total += s[c];
    }
    inv[t] = 1.0f / total;
  }

  // Weighted sum of the values, key block by key block, 64 dimensions at a time.
  std::fill(acc, acc + (size_t)rows * D, 0.0f);
  for (int c0 = first; c0 <= last; c0 += kBlock) {
    const int c1 = std::min(last + 1, c0 + kBlock);
    for (int t = 0; t < rows; ++t) {
      const int from = std::max(c0, lo[t]), to = std::min(c1, hi[t] + 1);
      if (from >= to) continue;
      const float* p = scores + (size_t)t * S;
      for (int d0 = 0; d0 < D; d0 += 64) {
        const int n = std::min(64, D - d0) / 8;
        __m256 o[8];
        for (int j = 0; j < n; ++j) o[j] = _mm256_loadu_ps(acc + t * D + d0 + 8 * j);
        for (int c = from; c < to; ++c) {
          const __m256 w = _mm256_set1_ps(p[c]);
          const float* v = vb + c * vstep + d0;
          for (int j = 0; j < n; ++j) o[j] = _mm256_fmadd_ps(w, _mm256_loadu_ps(v + 8 * j), o[j]);
        }
        for (int j = 0; j < n; ++j) _mm256_storeu_ps(acc + t * D + d0 + 8 * j, o[j]);
      }
    }
  }
  for (int t = 0; t < rows; ++t) {
    float* dst = a.out + (((size_t)b * Lq + query[t]) * a.Hq + head[t]) * D;
    const __m256 k = _mm256_set1_ps(inv[t]);
    for (int d = 0; d < D; d += 8) _mm256_storeu_ps(dst + d, _mm256_mul_ps(_mm256_loadu_ps(acc + t * D + d), k));
  }
}

}  // namespace mlx_serving::attn
