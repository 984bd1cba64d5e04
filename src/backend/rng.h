// Counter-based random numbers shared by the CPU and CUDA samplers, so both backends draw the
// same numbers for the same (key, counter, index): sampling is reproducible and independent of
// batch composition. The sampler adds Gumbel noise: argmax(logit/T - log(-log u)) is a draw from
// softmax(logit/T) (equivalently nano-vLLM's argmax(p / Exp(1)) "exponential race").
#pragma once
#include <cstdint>
#include <cstring>

#ifdef __CUDACC__
#define NANOVLLM_HD __host__ __device__ __forceinline__
#else
#define NANOVLLM_HD inline
#endif

namespace nanovllm {

// splitmix64's constants: the finalizer's two multipliers, and the golden-ratio step between the
// words of a stream. (The CPU sampler's 8-wide draw, cpu_sample.cpp, computes the same words.)
inline constexpr uint64_t kMixMul1 = 0xbf58476d1ce4e5b9ULL, kMixMul2 = 0x94d049bb133111ebULL;
inline constexpr uint64_t kGoldenStep = 0x9e3779b97f4a7c15ULL;
// The random bits a uniform keeps: the top kUniformBits of a mixed word.
inline constexpr int kUniformBits = 23;

NANOVLLM_HD uint64_t mix64(uint64_t z) {  // splitmix64's finalizer
  z = (z ^ (z >> 30)) * kMixMul1;
  z = (z ^ (z >> 27)) * kMixMul2;
  return z ^ (z >> 31);
}

// One sampling draw's stream (a request's key, the draw's counter), computed once per row, so a
// vocabulary entry costs one mix64: the GPU sampler is bound by its arithmetic otherwise.
NANOVLLM_HD uint64_t draw_stream(uint64_t key, uint64_t counter) { return mix64(key ^ mix64(counter)); }

// The word of entry `index` of a stream, before mixing: the stream plus index + 1 golden-ratio steps.
NANOVLLM_HD uint64_t stream_word(uint64_t stream, uint64_t index) { return stream + (index + 1) * kGoldenStep; }

// Uniform in (0, 1), never 0 or 1: (i + 0.5) / 2^23 for 23 random bits i, exact in float32, so u
// lies in [2^-24, 1 - 2^-24]. (With 24 bits, i + 0.5 needs 25: 2^24 - 1 + 0.5 rounds to 2^24, u = 1,
// and -log(-log u) = +inf would win the draw for a vocabulary entry 1 time in 2^24.) Computed
// without an int-to-float conversion (a quarter-rate instruction on the GPU): the float 1 + i / 2^23
// from its bits, minus 1 (exact), plus 2^-24 (exact: 2i + 1 < 2^24).
NANOVLLM_HD float uniform01_from_bits(uint64_t h) {
  const uint32_t one_plus_i = 0x3f800000u | static_cast<uint32_t>(h >> (64 - kUniformBits));
#ifdef __CUDA_ARCH__
  const float f = __uint_as_float(one_plus_i);
#else
  float f;
  std::memcpy(&f, &one_plus_i, sizeof f);
#endif
  return (f - 1.0f) + 0x1p-24f;
}

// Entry `index` of a stream, splitmix64-style.
NANOVLLM_HD float uniform01(uint64_t stream, uint32_t index) {
  return uniform01_from_bits(mix64(stream_word(stream, index)));
}
NANOVLLM_HD float uniform01(uint64_t key, uint64_t counter, uint32_t index) {
  return uniform01(draw_stream(key, counter), index);
}

}  // namespace nanovllm
