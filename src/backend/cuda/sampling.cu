// Token sampling on the GPU, one block per row: greedy argmax (lowest index on ties) or the
// Gumbel-max draw argmax(logit/T - log(-log u)) with u from backend/rng.h, the same numbers the
// CPU sampler draws for (key, counter, index), so both backends pick the same token.
#include "backend/cuda/common.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels.h"
#include "backend/rng.h"

namespace nanovllm::cuda {
namespace {

constexpr int kThreads = 1024;

__device__ __forceinline__ bool better(float s, int i, float bs, int bi) {
  return s > bs || (s == bs && i < bi);  // NaN never wins
}

__global__ void sample_kernel(const float* __restrict__ logits, const float* __restrict__ temperatures,
                              const int64_t* __restrict__ keys, const int64_t* __restrict__ counters,
                              int32_t* __restrict__ out, int vocab) {
  const int row = blockIdx.x;
  const float* l = logits + (size_t)row * vocab;
  const float t = temperatures[row];
  const uint64_t key = static_cast<uint64_t>(keys[row]), ctr = static_cast<uint64_t>(counters[row]);
  float best = -INFINITY;
  int bi = 0x7fffffff;
  if (t == 0.f) {
    for (int v = threadIdx.x; v < vocab; v += kThreads) {
      const float s = l[v];
      if (better(s, v, best, bi)) { best = s; bi = v; }
    }
  } else {
    const float inv_t = 1.f / t;  // multiply by 1/T exactly as the CPU sampler does
    for (int v = threadIdx.x; v < vocab; v += kThreads) {
      const float u = uniform01(key, ctr, static_cast<uint32_t>(v));
      const float s = l[v] * inv_t - logf(-logf(u));
      if (better(s, v, best, bi)) { best = s; bi = v; }
    }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float os = __shfl_xor_sync(0xffffffffu, best, o);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (better(os, oi, best, bi)) { best = os; bi = oi; }
  }
  __shared__ float ws[32];
  __shared__ int wi[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) { ws[warp] = best; wi[warp] = bi; }
  __syncthreads();
  if (warp == 0) {
    best = ws[lane];
    bi = wi[lane];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float os = __shfl_xor_sync(0xffffffffu, best, o);
      const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (better(os, oi, best, bi)) { best = os; bi = oi; }
    }
    // All logits NaN: fall back to token 0 rather than an out-of-range id.
    if (lane == 0) out[row] = bi == 0x7fffffff ? 0 : bi;
  }
}

}  // namespace

void launch_sample(const float* logits, const float* temperatures, const int64_t* keys, const int64_t* counters,
                   int32_t* out, int rows, int vocab, cudaStream_t s) {
  if (rows == 0) return;
  sample_kernel<<<rows, kThreads, 0, s>>>(logits, temperatures, keys, counters, out, vocab);
  check_launch("sample");
}

}  // namespace nanovllm::cuda
