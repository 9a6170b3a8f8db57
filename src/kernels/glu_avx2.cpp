// The gated activations for x86-64 with AVX2 + FMA (compiled with -mavx2
// -mfma; called only after a run-time CPU check), eight elements at a time
// with the vector exponential the attention kernel uses; and BERT's exact
// (erf) GELU, not gated.

#include <immintrin.h>

#include <cmath>

#include "glu_api.h"
#include "simd.h"

namespace mlx_serving::glu {
namespace {

// GELU's tanh approximation as a sigmoid: (1 + tanh(z)) / 2 = 1 / (1 + e^-2z),
// z = sqrt(2 / pi) * (g + 0.044715 g^3).
constexpr float kTwoSqrt2OverPi = 2.0f * 0.7978845608028654f;
constexpr float kCubic = 0.044715f;

// The argument t of the sigmoid 1 / (1 + e^-t) that scales g * up.
inline __m256 sigmoid_arg(__m256 g, Kind kind) {
  if (kind == kSilu) return g;
  const __m256 g3 = _mm256_mul_ps(_mm256_mul_ps(g, g), g);
  return _mm256_mul_ps(_mm256_fmadd_ps(g3, _mm256_set1_ps(kCubic), g), _mm256_set1_ps(kTwoSqrt2OverPi));
}

inline float sigmoid_arg(float g, Kind kind) {
  return kind == kSilu ? g : kTwoSqrt2OverPi * (g + kCubic * g * g * g);
}

// erf(x) for x >= 0 by Abramowitz and Stegun 7.1.26 (absolute error below
// 1.5e-7): 1 - t (a1 + t (a2 + ... + t a5)) e^(-x^2), t = 1 / (1 + p x).
inline __m256 erf_nonneg(__m256 x) {
  const __m256 t = _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_fmadd_ps(x, _mm256_set1_ps(0.3275911f), _mm256_set1_ps(1.0f)));
  __m256 p = _mm256_set1_ps(1.061405429f);
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-1.453152027f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.421413741f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-0.284496736f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.254829592f));
  p = _mm256_mul_ps(p, t);
  const __m256 e = simd::exp256(_mm256_sub_ps(_mm256_setzero_ps(), _mm256_mul_ps(x, x)));
  return _mm256_fnmadd_ps(p, e, _mm256_set1_ps(1.0f));
}

// The exact GELU, x (1 + erf(x / sqrt 2)) / 2, eight at a time.
inline __m256 gelu_erf(__m256 x) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256 s = _mm256_mul_ps(x, _mm256_set1_ps(0.7071067811865476f));
  const __m256 e = erf_nonneg(_mm256_andnot_ps(sign, s));
  const __m256 erf = _mm256_or_ps(e, _mm256_and_ps(sign, s));
  return _mm256_mul_ps(_mm256_mul_ps(x, _mm256_set1_ps(0.5f)), _mm256_add_ps(_mm256_set1_ps(1.0f), erf));
}

}  // namespace

void glu_avx2(const Args& a, int64_t r0, int64_t r1) {
  const __m256 one = _mm256_set1_ps(1.0f);
  if (a.kind == kGeluErf) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* g = a.gate + r * a.in_row;
      float* o = a.out + r * a.width;
      int64_t i = 0;
      for (; i + 8 <= a.width; i += 8) _mm256_storeu_ps(o + i, gelu_erf(_mm256_loadu_ps(g + i)));
      for (; i < a.width; ++i) o[i] = 0.5f * g[i] * (1.0f + std::erf(g[i] * 0.7071067811865476f));
    }
    return;
  }
  for (int64_t r = r0; r < r1; ++r) {
    const float* g = a.gate + r * a.in_row;
    const float* u = a.up + r * a.in_row;
    float* o = a.out + r * a.width;
    int64_t i = 0;
    for (; i + 8 <= a.width; i += 8) {
      const __m256 gv = _mm256_loadu_ps(g + i);
      const __m256 e = simd::exp256(_mm256_sub_ps(_mm256_setzero_ps(), sigmoid_arg(gv, a.kind)));
      _mm256_storeu_ps(o + i, _mm256_div_ps(_mm256_mul_ps(gv, _mm256_loadu_ps(u + i)), _mm256_add_ps(one, e)));
    }
    for (; i < a.width; ++i) o[i] = g[i] * u[i] / (1.0f + std::exp(-sigmoid_arg(g[i], a.kind)));
  }
}

}  // namespace mlx_serving::glu
