// bf16 / f16 / fp8 <-> f32 conversions on the host: checkpoint dtypes for the CPU backend (f32
// math), weight upload for CUDA, the CPU's FP8 KV cache, tests.
#pragma once
#include <bit>
#include <cstdint>

#include "backend/tensor.h"

namespace nanovllm {

inline float bf16_to_f32(uint16_t h) { return std::bit_cast<float>(static_cast<uint32_t>(h) << 16); }

// Round to nearest even, as torch does; NaN stays a (quiet) NaN.
inline uint16_t f32_to_bf16(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

// IEEE half, in plain C++ (no F16C) so that tests and tools built without -mf16c can use it.
inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  uint32_t mag;
  if (exp == 0) mag = std::bit_cast<uint32_t>(static_cast<float>(man) * (1.0f / 16777216.0f));  // man * 2^-24
  else if (exp == 31) mag = 0x7f800000u | (man << 13);
  else mag = ((exp + 112u) << 23) | (man << 13);
  return std::bit_cast<float>(mag | sign);
}

// Round to nearest even; overflow goes to infinity.
inline uint16_t f32_to_f16(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  u &= 0x7fffffffu;
  if (u > 0x7f800000u) return sign | 0x7e00u;             // NaN
  if (u >= 0x477ff000u) return sign | 0x7c00u;            // >= 65520 rounds to inf
  if (u < 0x38800000u) {                                  // below 2^-14: subnormal or zero
    const float a = std::bit_cast<float>(u);
    // a * 2^24 rounded to nearest even gives the subnormal mantissa (may round up to the min normal).
    return sign | static_cast<uint16_t>(__builtin_nearbyintf(a * 16777216.0f));
  }
  uint32_t r = u + 0xfffu + ((u >> 13) & 1u);
  return sign | static_cast<uint16_t>((r - (112u << 23)) >> 13);
}

// OCP FP8 e4m3 ("fn": no infinities; 0x7f/0xff are NaN; max 448; subnormals m * 2^-9).
inline float fp8_e4m3_to_f32(uint8_t v) {
  const uint32_t sign = static_cast<uint32_t>(v & 0x80u) << 24;
  const uint32_t exp = (v >> 3) & 0xfu, man = v & 0x7u;
  float mag;
  if (exp == 0xfu && man == 0x7u) return std::bit_cast<float>(sign | 0x7fc00000u);
  if (exp == 0) mag = static_cast<float>(man) * (1.0f / 512.0f);
  else mag = std::bit_cast<float>(((exp + 120u) << 23) | (man << 20));
  return std::bit_cast<float>(std::bit_cast<uint32_t>(mag) | sign);
}

// Round to nearest even, saturating to +-448 (CUDA's __nv_cvt_float_to_fp8 with __NV_SATFINITE:
// infinities too); NaN gives 0x7f.
inline uint8_t f32_to_fp8_e4m3(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  const uint8_t sign = static_cast<uint8_t>((u >> 24) & 0x80u);
  u &= 0x7fffffffu;
  if (u > 0x7f800000u) return 0x7f;
  if (u < 0x3c800000u)  // below 2^-6: subnormal (m * 2^-9, m = 8 is the smallest normal's code)
    return sign | static_cast<uint8_t>(__builtin_nearbyintf(std::bit_cast<float>(u) * 512.0f));
  u += 0x7ffffu + ((u >> 20) & 1u);
  const int e = static_cast<int>(u >> 23) - 127;
  const uint32_t m = (u >> 20) & 7u;
  if (e > 8 || (e == 8 && m == 7u)) return sign | 0x7e;
  return sign | static_cast<uint8_t>(((e + 7) << 3) | static_cast<int>(m));
}

// OCP FP8 e5m2 (IEEE-like: infinities and NaNs; max finite 57344; subnormals m * 2^-16).
inline float fp8_e5m2_to_f32(uint8_t v) {
  return f16_to_f32(static_cast<uint16_t>(static_cast<uint16_t>(v) << 8));  // e5m2 is f16's top byte
}

// Round to nearest even, saturating to +-57344 (infinities too, as __NV_SATFINITE); NaN gives 0x7f.
inline uint8_t f32_to_fp8_e5m2(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  const uint8_t sign = static_cast<uint8_t>((u >> 24) & 0x80u);
  u &= 0x7fffffffu;
  if (u > 0x7f800000u) return 0x7f;
  if (u < 0x38800000u)  // below 2^-14: subnormal (m * 2^-16)
    return sign | static_cast<uint8_t>(__builtin_nearbyintf(std::bit_cast<float>(u) * 65536.0f));
  u += 0xfffffu + ((u >> 21) & 1u);
  const int e = static_cast<int>(u >> 23) - 127;
  const uint32_t m = (u >> 21) & 3u;
  if (e > 15) return sign | 0x7b;
  return sign | static_cast<uint8_t>(((e + 15) << 2) | static_cast<int>(m));
}

// Element i of a host tensor of a floating dtype, as f32.
inline float load_as_f32(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::f32: return static_cast<const float*>(p)[i];
    case DType::bf16: return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case DType::f16: return f16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case DType::f8e4m3: return fp8_e4m3_to_f32(static_cast<const uint8_t*>(p)[i]);  // unscaled
    case DType::f8e5m2: return fp8_e5m2_to_f32(static_cast<const uint8_t*>(p)[i]);
    default: return 0.0f;
  }
}

inline void store_from_f32(void* p, DType t, int64_t i, float v) {
  switch (t) {
    case DType::f32: static_cast<float*>(p)[i] = v; break;
    case DType::bf16: static_cast<uint16_t*>(p)[i] = f32_to_bf16(v); break;
    case DType::f16: static_cast<uint16_t*>(p)[i] = f32_to_f16(v); break;
    case DType::f8e4m3: static_cast<uint8_t*>(p)[i] = f32_to_fp8_e4m3(v); break;  // unscaled
    case DType::f8e5m2: static_cast<uint8_t*>(p)[i] = f32_to_fp8_e5m2(v); break;
    default: break;
  }
}

}  // namespace nanovllm
