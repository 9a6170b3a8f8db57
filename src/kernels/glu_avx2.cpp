// The gated activations for x86-64 with AVX2 + FMA (compiled with -mavx2
// -mfma; called only after a run-time CPU check), eight elements at a time
// with the vector exponential the attention kernel uses.

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

}  // namespace

void glu_avx2(const Args& a, int64_t r0, int64_t r1) {
  const __m256 one = _mm256_set1_ps(1.0f);
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
