// Small AVX2 helpers the kernel translation units share (each compiled with
// AVX2 target flags; include nowhere else).
#pragma once

#include <immintrin.h>

namespace mlx_serving::simd {

// The sum of a vector's eight lanes.
static inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

}  // namespace mlx_serving::simd
