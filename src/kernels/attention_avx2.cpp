// The attention kernel for x86-64 with AVX2 + FMA (compiled with -mavx2 -mfma;
// called only after a run-time CPU check). One work item is a tile of query
// rows against all keys of one key/value head: scores for the rows' allowed
// range of keys, a softmax whose exponential is a vector polynomial (MLX's CPU
// `exp` is scalar), then the weighted sum of the values, each pass over keys
// in blocks that stay in cache. Scores are computed three rows by four keys
// and values two rows by 32 dimensions at a time, so that each load serves
// several rows; each score and each output is still its own chain of sums in
// key (or dimension) order, so a row's result does not depend on the rows
// that share its tile (which change with the chunk a prompt is prefilled in,
// a sliding window, a row's padding).

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
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

// Four lanes' sums of four accumulators (missing ones zero), as one __m128:
// each accumulator reduced by the same tree whichever others come with it.
inline __m128 reduce4(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
  const __m256 s = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
  return _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
}

// Scores of NT query rows (scaled, D floats each, `q` rows apart by D) with
// keys c0..c0+nc-1 (nc <= 4) into s[t * S + c]. Each score is its own chain of
// vector FMAs over D in order, then `reduce4`: the same bits whatever rows and
// keys share the block. `S - c0 >= 4` lets all four keys be read (those past
// nc are computed and dropped).
template <int NT>
inline void score_block(const float* q, const float* k, int64_t kstep, int c0, int nc, int D, float* s, int S) {
  __m256 acc[NT][4];
  for (int t = 0; t < NT; ++t)
    for (int j = 0; j < 4; ++j) acc[t][j] = _mm256_setzero_ps();
  const float* k0 = k + c0 * kstep;
  if (S - c0 >= 4) {
    for (int d = 0; d < D; d += 8) {
      const __m256 kv0 = _mm256_loadu_ps(k0 + d), kv1 = _mm256_loadu_ps(k0 + kstep + d);
      const __m256 kv2 = _mm256_loadu_ps(k0 + 2 * kstep + d), kv3 = _mm256_loadu_ps(k0 + 3 * kstep + d);
      for (int t = 0; t < NT; ++t) {
        const __m256 x = _mm256_loadu_ps(q + t * D + d);
        acc[t][0] = _mm256_fmadd_ps(x, kv0, acc[t][0]);
        acc[t][1] = _mm256_fmadd_ps(x, kv1, acc[t][1]);
        acc[t][2] = _mm256_fmadd_ps(x, kv2, acc[t][2]);
        acc[t][3] = _mm256_fmadd_ps(x, kv3, acc[t][3]);
      }
    }
  } else {
    for (int d = 0; d < D; d += 8) {
      for (int t = 0; t < NT; ++t) {
        const __m256 x = _mm256_loadu_ps(q + t * D + d);
        for (int j = 0; j < nc; ++j) acc[t][j] = _mm256_fmadd_ps(x, _mm256_loadu_ps(k0 + j * kstep + d), acc[t][j]);
      }
    }
  }
  for (int t = 0; t < NT; ++t) {
    const __m128 r = reduce4(acc[t][0], acc[t][1], acc[t][2], acc[t][3]);
    float* dst = s + (size_t)t * S + c0;
    if (nc == 4) {
      _mm_storeu_ps(dst, r);
    } else {
      alignas(16) float out[4];
      _mm_store_ps(out, r);
      for (int j = 0; j < nc; ++j) dst[j] = out[j];
    }
  }
}

// Weighted sums of the values for NT rows over keys [c0, c1) (weights p, rows
// S apart; zero outside a row's range), dimensions d0..d0+8*ND, added to acc
// (rows D apart). Keys in order: each output is one chain whatever rows share
// the block.
template <int NT, int ND>
inline void value_block(const float* p, int S, const float* v, int64_t vstep, int c0, int c1, int d0, float* acc, int D) {
  __m256 o[NT][ND];
  for (int t = 0; t < NT; ++t)
    for (int j = 0; j < ND; ++j) o[t][j] = _mm256_loadu_ps(acc + t * D + d0 + 8 * j);
  for (int c = c0; c < c1; ++c) {
    const float* vc = v + c * vstep + d0;
    __m256 vv[ND];
    for (int j = 0; j < ND; ++j) vv[j] = _mm256_loadu_ps(vc + 8 * j);
    for (int t = 0; t < NT; ++t) {
      const __m256 w = _mm256_broadcast_ss(p + (size_t)t * S + c);
      for (int j = 0; j < ND; ++j) o[t][j] = _mm256_fmadd_ps(w, vv[j], o[t][j]);
    }
  }
  for (int t = 0; t < NT; ++t)
    for (int j = 0; j < ND; ++j) _mm256_storeu_ps(acc + t * D + d0 + 8 * j, o[t][j]);
}

template <int NT>
inline void values(const float* p, int S, const float* v, int64_t vstep, int c0, int c1, float* acc, int D) {
  int d0 = 0;
  for (; d0 + 32 <= D; d0 += 32) value_block<NT, 4>(p, S, v, vstep, c0, c1, d0, acc, D);
  switch ((D - d0) / 8) {
    case 3: value_block<NT, 3>(p, S, v, vstep, c0, c1, d0, acc, D); break;
    case 2: value_block<NT, 2>(p, S, v, vstep, c0, c1, d0, acc, D); break;
    case 1: value_block<NT, 1>(p, S, v, vstep, c0, c1, d0, acc, D); break;
    default: break;
  }
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
      // A contiguous run needs no per-key check.
      bool holes = false;
      if (step == 1 && l <= r) {
        // Bytes of 0 and 1 (MLX's bool): the library's vector scans.
        const auto* bytes = reinterpret_cast<const unsigned char*>(m);
        const void* f = std::memchr(bytes + l, 1, r - l + 1);
        if (f == nullptr) {
          l = r + 1;
        } else {
          l = (int)(static_cast<const unsigned char*>(f) - bytes);
          r = (int)(static_cast<const unsigned char*>(memrchr(bytes + l, 1, r - l + 1)) - bytes);
          holes = std::memchr(bytes + l, 0, r - l + 1) != nullptr;
        }
      } else {
        while (l <= r && !m[l * step]) ++l;
        while (r >= l && !m[r * step]) --r;
        for (int c = l; c <= r && !holes; ++c) holes = !m[c * step];
      }
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

  // Scores, key block by key block, three rows by four keys at a time (each
  // group of rows over the keys any of its rows sees).
  for (int c0 = first; c0 <= last; c0 += kBlock) {
    const int c1 = std::min(last + 1, c0 + kBlock);
    for (int t0 = 0; t0 < rows; t0 += 3) {
      const int nt = std::min(3, rows - t0);
      int from = c1, to = c0;
      for (int t = t0; t < t0 + nt; ++t) {
        if (lo[t] > hi[t]) continue;
        from = std::min(from, std::max(c0, lo[t]));
        to = std::max(to, std::min(c1, hi[t] + 1));
      }
      const float* q = qp + t0 * D;
      float* s = scores + (size_t)t0 * S;
      for (int c = from; c < to; c += 4) {
        const int nc = std::min(4, to - c);
        if (nt == 3) score_block<3>(q, kb, kstep, c, nc, D, s, S);
        else if (nt == 2) score_block<2>(q, kb, kstep, c, nc, D, s, S);
        else score_block<1>(q, kb, kstep, c, nc, D, s, S);
      }
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
  // Rows are grouped over the keys any of them sees: a row weighs the keys
  // outside its own range zero (adding +0 leaves each sum's bits as they are).
  for (int t = 0; t < rows && first <= last; ++t) {
    float* s = scores + (size_t)t * S;
    if (lo[t] > hi[t]) {
      std::fill(s + first, s + last + 1, 0.0f);
      continue;
    }
    std::fill(s + first, s + lo[t], 0.0f);
    std::fill(s + hi[t] + 1, s + last + 1, 0.0f);
  }

  // Weighted sum of the values, key block by key block, two rows by 32
  // dimensions at a time; a row's weights are zero outside its range.
  std::fill(acc, acc + (size_t)rows * D, 0.0f);
  for (int c0 = first; c0 <= last; c0 += kBlock) {
    const int c1 = std::min(last + 1, c0 + kBlock);
    for (int t0 = 0; t0 < rows; t0 += 2) {
      const int nt = std::min(2, rows - t0);
      int from = c1, to = c0;
      for (int t = t0; t < t0 + nt; ++t) {
        if (lo[t] > hi[t]) continue;
        from = std::min(from, std::max(c0, lo[t]));
        to = std::max(to, std::min(c1, hi[t] + 1));
      }
      if (from >= to) continue;
      const float* p = scores + (size_t)t0 * S;
      if (nt == 2) values<2>(p, S, vb, vstep, from, to, acc + t0 * D, D);
      else values<1>(p, S, vb, vstep, from, to, acc + t0 * D, D);
    }
  }
  for (int t = 0; t < rows; ++t) {
    float* dst = a.out + (((size_t)b * Lq + query[t]) * a.Hq + head[t]) * D;
    const __m256 k = _mm256_set1_ps(inv[t]);
    for (int d = 0; d < D; d += 8) _mm256_storeu_ps(dst + d, _mm256_mul_ps(_mm256_loadu_ps(acc + t * D + d), k));
  }
}

}  // namespace mlx_serving::attn
