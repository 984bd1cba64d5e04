// FP8 weight matrices on the host: per-row quantization to f8e4m3 and dequantization of scaled
// FP8 rows, the one definition upload_convert (both backends) and the model's loader share
// (backend.h, upload_convert: scale = max |w| / 448, 1 for a row of zeros; w = q * scale in float32).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "backend/half.h"
#include "backend/tensor.h"

namespace nanovllm {

inline float fp8_to_f32(uint8_t v, DType t) { return t == DType::f8e5m2 ? fp8_e5m2_to_f32(v) : fp8_e4m3_to_f32(v); }

// The number of f32 scales a scaled FP8 matrix carries.
inline int64_t scale_count(const Tensor& w) { return w.scale_rows() * w.scale_cols(); }

// The dequantization multiplier of element (r, c) of a scaled FP8 matrix.
inline float fp8_scale_at(const Tensor& w, int64_t r, int64_t c) {
  return w.scale[(r / w.scale_block[0]) * w.scale_cols() + c / w.scale_block[1]];
}

// One row w[K] (float32) into f8e4m3 q[K] and its scale: scale = max |w| / 448 (1 when every w
// is 0), q = w / scale rounded to nearest even (saturating).
inline void quantize_row_fp8_e4m3(const float* w, int64_t K, uint8_t* q, float* scale) {
  float amax = 0.0f;
  for (int64_t k = 0; k < K; ++k) amax = std::fmax(amax, std::fabs(w[k]));
  const float s = amax > 0.0f ? amax / 448.0f : 1.0f;
  for (int64_t k = 0; k < K; ++k) q[k] = f32_to_fp8_e4m3(w[k] / s);
  *scale = s;
}

// Rows [r0, r1) of scaled FP8 matrix `w` dequantized into `dst` (dst_dtype, row-major, row r0
// first): q * scale formed in float32, rounded to dst_dtype once.
inline void dequantize_fp8_rows(const Tensor& w, int64_t r0, int64_t r1, void* dst, DType dst_dtype) {
  const int64_t K = w.shape[w.ndim - 1];
  const auto* q = static_cast<const uint8_t*>(w.data);
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t k = 0; k < K; ++k)
      store_from_f32(dst, dst_dtype, (r - r0) * K + k, fp8_to_f32(q[r * K + k], w.dtype) * fp8_scale_at(w, r, k));
}

}  // namespace nanovllm
