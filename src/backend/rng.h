// Counter-based random numbers shared by the CPU and CUDA samplers, so both backends draw the
// same numbers for the same (key, counter, index): sampling is reproducible and independent of
// batch composition. The sampler adds Gumbel noise: argmax(logit/T - log(-log u)) is a draw from
// softmax(logit/T) (equivalently nano-vLLM's argmax(p / Exp(1)) "exponential race").
#pragma once
#include <cstdint>

#ifdef __CUDACC__
#define NANOVLLM_HD __host__ __device__ __forceinline__
#else
#define NANOVLLM_HD inline
#endif

namespace nanovllm {

NANOVLLM_HD uint64_t mix64(uint64_t z) {  // splitmix64's finalizer
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// One sampling draw's stream (a request's key, the draw's counter), computed once per row, so a
// vocabulary entry costs one mix64: the GPU sampler is bound by its arithmetic otherwise.
NANOVLLM_HD uint64_t draw_stream(uint64_t key, uint64_t counter) { return mix64(key ^ mix64(counter)); }

// Uniform in (0, 1), never 0 or 1: (i + 0.5) / 2^23 for 23 random bits i, exact in float32, so u
// lies in [2^-24, 1 - 2^-24]. (With 24 bits, i + 0.5 needs 25: 2^24 - 1 + 0.5 rounds to 2^24, u = 1,
// and -log(-log u) = +inf would win the draw for a vocabulary entry 1 time in 2^24.)
NANOVLLM_HD float uniform01_from_bits(uint64_t h) { return (static_cast<float>(h >> 41) + 0.5f) * (1.0f / 8388608.0f); }

// Entry `index` of a stream, splitmix64-style (the stream plus index + 1 golden-ratio steps, mixed).
NANOVLLM_HD float uniform01(uint64_t stream, uint32_t index) {
  return uniform01_from_bits(mix64(stream + (static_cast<uint64_t>(index) + 1) * 0x9e3779b97f4a7c15ULL));
}
NANOVLLM_HD float uniform01(uint64_t key, uint64_t counter, uint32_t index) {
  return uniform01(draw_stream(key, counter), index);
}

}  // namespace nanovllm
