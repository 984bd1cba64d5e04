// Half-precision (bf16, f16) <-> f32 conversions of 8 values in AVX2 registers (F16C for f16), and
// whole rows: the CPU reads bf16/f16 weights and KV caches with these, and FP8 KV caches by table. Rounding is half.h's
// (to nearest even; NaN stays NaN), so a vector store equals the scalar one bit for bit.
#pragma once
#include <immintrin.h>

#include <cstdint>

#include "backend/half.h"
#include "backend/tensor.h"

namespace nanovllm::cpu {

inline __m256 load8_bf16(const uint16_t* p) {
  const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}
inline __m256 load8_f16(const uint16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }

// FP8 (the KV cache's f8e4m3 / f8e5m2) -> f32, unscaled (the reader applies the cache's scale).
// One at a time by a 256-entry table per format, built once from half.h's conversions (so the
// table is the scalar rule, code for code); 8 at a time through f16 (F16C), exact: e5m2 is f16's
// top byte, and e4m3's bits placed in f16's (exponent in the low 4 of its 5 bits, mantissa on
// top) give the value / 256 for normals and subnormals alike, 0x7f/0xff (NaN) set apart. An AVX2
// gather from the table took 1.2-1.8x this e4m3 path's CPU time in decode attention
// (docs/cpu-backend.md, Attention).
struct Fp8Table {
  alignas(64) float v[256];
  explicit Fp8Table(float (*to_f32)(uint8_t)) {
    for (int c = 0; c < 256; ++c) v[c] = to_f32(static_cast<uint8_t>(c));
  }
};
inline const Fp8Table kFp8E4m3Table{fp8_e4m3_to_f32};
inline const Fp8Table kFp8E5m2Table{fp8_e5m2_to_f32};
template <DType T>
inline const float* fp8_table() {
  return T == DType::f8e4m3 ? kFp8E4m3Table.v : kFp8E5m2Table.v;
}
// 8 codes as the high bytes of 8 16-bit lanes (code << 8).
inline __m128i fp8_to_high_bytes(const uint8_t* p) {
  return _mm_unpacklo_epi8(_mm_setzero_si128(), _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}
inline __m256 load8_e5m2(const uint8_t* p) { return _mm256_cvtph_ps(fp8_to_high_bytes(p)); }
inline __m256 load8_e4m3(const uint8_t* p) {
  // code << 8 shifted right arithmetically by 1 and bit 14 cleared: sign at 15, the 4 exponent
  // bits at 13..10, the 3 mantissa bits at 9..7 -- an f16 of value / 256.
  const __m128i h = _mm_and_si128(_mm_srai_epi16(fp8_to_high_bytes(p), 1), _mm_set1_epi16(static_cast<short>(0xbfff)));
  const __m256 v = _mm256_mul_ps(_mm256_cvtph_ps(h), _mm256_set1_ps(256.0f));
  // 0x7f / 0xff (NaN) came out as +-480, which no other code gives (448 is the largest).
  const __m256 nan = _mm256_cmp_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), v), _mm256_set1_ps(480.0f), _CMP_EQ_OQ);
  return _mm256_blendv_ps(v, _mm256_set1_ps(__builtin_nanf("")), nan);
}

// 8 values of a KV-cache or weight row of dtype T (f32, bf16, f16; FP8 unscaled) as f32.
template <DType T>
inline __m256 load8(const void* p, int64_t i) {
  if constexpr (T == DType::f32) return _mm256_loadu_ps(static_cast<const float*>(p) + i);
  if constexpr (T == DType::bf16) return load8_bf16(static_cast<const uint16_t*>(p) + i);
  if constexpr (T == DType::f16) return load8_f16(static_cast<const uint16_t*>(p) + i);
  if constexpr (T == DType::f8e4m3) return load8_e4m3(static_cast<const uint8_t*>(p) + i);
  if constexpr (T == DType::f8e5m2) return load8_e5m2(static_cast<const uint8_t*>(p) + i);
}
template <DType T>
inline float load1(const void* p, int64_t i) {
  if constexpr (T == DType::f32) return static_cast<const float*>(p)[i];
  if constexpr (T == DType::bf16) return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
  if constexpr (T == DType::f16) return f16_to_f32(static_cast<const uint16_t*>(p)[i]);
  if constexpr (T == DType::f8e4m3 || T == DType::f8e5m2) return fp8_table<T>()[static_cast<const uint8_t*>(p)[i]];
}

// f32 -> bf16, round to nearest even, NaN -> quiet NaN (f32_to_bf16's rule), 8 at a time.
inline __m128i to_bf16x8(__m256 v) {
  const __m256i u = _mm256_castps_si256(v);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  __m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
  const __m256i nan = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
  r = _mm256_blendv_epi8(r, nan, _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
  // 32 -> 16 bits: packus works within 128-bit lanes, the permute joins the two halves.
  const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);
  return _mm256_castsi256_si128(packed);
}

// dst[0, n) = src[0, n) in dtype T (f32, bf16 or f16).
template <DType T>
inline void store_row(const float* src, void* dst, int64_t n) {
  int64_t i = 0;
  if constexpr (T == DType::f32) {
    float* d = static_cast<float*>(dst);
    for (; i < n; ++i) d[i] = src[i];
  } else {
    uint16_t* d = static_cast<uint16_t*>(dst);
    for (; i + 8 <= n; i += 8) {
      const __m256 v = _mm256_loadu_ps(src + i);
      const __m128i h = T == DType::bf16 ? to_bf16x8(v) : _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i), h);
    }
    for (; i < n; ++i) d[i] = T == DType::bf16 ? f32_to_bf16(src[i]) : f32_to_f16(src[i]);
  }
}

// dst[0, n) = row[0, n) of dtype T as f32.
template <DType T>
inline void load_row(const void* row, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, load8<T>(row, i));
  for (; i < n; ++i) dst[i] = load1<T>(row, i);
}

// An int8 weight row (tensor.h's layout): its scale and the sum of its values.
inline float i8_row_scale(const int8_t* row, int64_t K) {
  float s;
  __builtin_memcpy(&s, row + K, sizeof s);
  return s;
}
inline int32_t i8_row_sum(const int8_t* row, int64_t K) {
  int32_t s;
  __builtin_memcpy(&s, row + K + 4, sizeof s);
  return s;
}

// Calls f.template operator()<T>() with T the runtime dtype t (f32, bf16 or f16).
template <class F>
inline decltype(auto) with_float_dtype(DType t, F&& f) {
  switch (t) {
    case DType::bf16: return f.template operator()<DType::bf16>();
    case DType::f16: return f.template operator()<DType::f16>();
    default: return f.template operator()<DType::f32>();
  }
}

// The same over a KV cache's dtypes: f32, bf16, f16, f8e4m3, f8e5m2.
template <class F>
inline decltype(auto) with_kv_dtype(DType t, F&& f) {
  switch (t) {
    case DType::f8e4m3: return f.template operator()<DType::f8e4m3>();
    case DType::f8e5m2: return f.template operator()<DType::f8e5m2>();
    default: return with_float_dtype(t, f);
  }
}

}  // namespace nanovllm::cpu
