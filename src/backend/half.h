// bf16 / f16 <-> f32 conversions on the host: checkpoint dtypes for the CPU backend (f32 math),
// weight upload for CUDA, tests.
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

// Element i of a host tensor of a floating dtype, as f32.
inline float load_as_f32(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::f32: return static_cast<const float*>(p)[i];
    case DType::bf16: return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case DType::f16: return f16_to_f32(static_cast<const uint16_t*>(p)[i]);
    default: return 0.0f;
  }
}

inline void store_from_f32(void* p, DType t, int64_t i, float v) {
  switch (t) {
    case DType::f32: static_cast<float*>(p)[i] = v; break;
    case DType::bf16: static_cast<uint16_t*>(p)[i] = f32_to_bf16(v); break;
    case DType::f16: static_cast<uint16_t*>(p)[i] = f32_to_f16(v); break;
    default: break;
  }
}

}  // namespace nanovllm
