// e^x and ln x of 8 floats in AVX2 registers: e^x for the CPU's softmax and SiLU (libm's scalar
// expf was 4% of a 512-token prefill's CPU time), ln x for the sampler's Gumbel noise (two logf an
// entry of the vocabulary were 8% of a 16-sequence decode's). e^x: Cody-Waite reduction
// x = n ln2 + r, |r| <= ln2 / 2, and Cephes' degree-6 polynomial for e^r (within 2 ulp of e^x
// where the result is a normal float; the test holds that against std::exp in double); 2^n applied
// as two normal factors, so a result below FLT_MIN is rounded gradually to 0 and one above FLT_MAX
// is +inf, as std::exp's. NaN stays NaN.
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

// ln x: x = m 2^e with m in [sqrt(1/2), sqrt(2)), Cephes' degree-9 polynomial in m - 1, e ln2 added
// in two parts (within 2 ulp of ln x; the test holds that against std::log in double). Subnormal x
// is scaled by 2^23 first; 0 gives -inf, +inf stays +inf, a negative x or NaN gives NaN.
inline __m256 log8(__m256 x) {
  const __m256 tiny = _mm256_cmp_ps(x, _mm256_set1_ps(1.17549435e-38f), _CMP_LT_OQ);  // subnormal, 0 or negative
  const __m256 xs = _mm256_blendv_ps(x, _mm256_mul_ps(x, _mm256_set1_ps(8388608.0f)), tiny);
  const __m256i bits = _mm256_castps_si256(xs);
  // m in [0.5, 1) from the mantissa, e the unbiased exponent + 1 (frexp's convention)
  __m256 m = _mm256_castsi256_ps(_mm256_or_si256(_mm256_and_si256(bits, _mm256_set1_epi32(0x007fffff)),
                                                 _mm256_set1_epi32(0x3f000000)));
  __m256 e = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(bits, 23), _mm256_set1_epi32(126)));
  e = _mm256_sub_ps(e, _mm256_and_ps(tiny, _mm256_set1_ps(23.0f)));
  const __m256 small = _mm256_cmp_ps(m, _mm256_set1_ps(0.707106781186547524f), _CMP_LT_OQ);
  e = _mm256_sub_ps(e, _mm256_and_ps(small, _mm256_set1_ps(1.0f)));
  const __m256 r = _mm256_sub_ps(_mm256_add_ps(m, _mm256_and_ps(small, m)), _mm256_set1_ps(1.0f));  // m - 1 or 2m - 1
  const __m256 z = _mm256_mul_ps(r, r);
  __m256 p = _mm256_set1_ps(7.0376836292e-2f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(-1.1514610310e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.1676998740e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(-1.2420140846e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.4249322787e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(-1.6668057665e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(2.0000714765e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(-2.4999993993e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(3.3333331174e-1f));
  __m256 y = _mm256_mul_ps(_mm256_mul_ps(p, r), z);
  y = _mm256_fmadd_ps(e, _mm256_set1_ps(-2.12194440e-4f), y);
  y = _mm256_fnmadd_ps(z, _mm256_set1_ps(0.5f), y);
  __m256 out = _mm256_fmadd_ps(e, _mm256_set1_ps(0.693359375f), _mm256_add_ps(r, y));
  // The edges: 0 -> -inf, +inf -> +inf, x < 0 or NaN -> NaN.
  out = _mm256_blendv_ps(out, _mm256_set1_ps(-__builtin_inff()), _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_EQ_OQ));
  out = _mm256_blendv_ps(out, x, _mm256_cmp_ps(x, _mm256_set1_ps(__builtin_inff()), _CMP_EQ_OQ));
  return _mm256_blendv_ps(out, _mm256_set1_ps(__builtin_nanf("")), _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_NGE_UQ));
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
