// e^x of 8 floats in AVX2 registers, for the CPU's softmax and SiLU (libm's scalar expf was 4% of
// a 512-token prefill's CPU time). Cody-Waite reduction x = n ln2 + r, |r| <= ln2 / 2, and Cephes'
// degree-6 polynomial for e^r (within 2 ulp of e^x where the result is a normal float; the test
// holds that against std::exp in double); 2^n applied as two normal factors, so a result below
// FLT_MIN is rounded gradually to 0 and one above FLT_MAX is +inf, as std::exp's. NaN stays NaN.
#pragma once
#include <immintrin.h>

namespace nanovllm::cpu {

inline __m256 exp8(__m256 x) {
  // Past these e^x is 0 or +inf anyway; the clamp keeps n within the two factors' range. max/min
  // return their second operand when one is NaN, so a NaN x passes through.
  x = _mm256_min_ps(_mm256_set1_ps(89.0f), _mm256_max_ps(_mm256_set1_ps(-104.0f), x));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);  // ln2 in two parts: n * hi is exact
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  // 2^n = 2^n1 2^n2, n1 = floor(n / 2): each in [-75, 65], a normal float built from its exponent.
  const __m256i ni = _mm256_cvtps_epi32(n);
  const __m256i n1 = _mm256_srai_epi32(ni, 1), n2 = _mm256_sub_epi32(ni, n1);
  auto pow2 = [](__m256i k) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k, _mm256_set1_epi32(127)), 23));
  };
  return _mm256_mul_ps(_mm256_mul_ps(p, pow2(n1)), pow2(n2));
}

// n < 8 values of x, the rest of the vector `fill`; and the store of n.
inline __m256 load_partial(const float* x, int n, float fill) {
  alignas(32) float t[8];
  for (int i = 0; i < 8; ++i) t[i] = i < n ? x[i] : fill;
  return _mm256_load_ps(t);
}
inline void store_partial(float* out, __m256 v, int n) {
  alignas(32) float t[8];
  _mm256_store_ps(t, v);
  for (int i = 0; i < n; ++i) out[i] = t[i];
}

}  // namespace nanovllm::cpu
