// Token sampling on the GPU, each row split over blocks of 4096 entries, then reduced: greedy
// argmax (lowest index on ties) or the Gumbel-max draw argmax(logit/T - log(-log u)) with u from
// backend/rng.h, the same numbers the CPU sampler draws for (key, counter, index), so both
// backends pick the same token.
#include "backend/cuda/common.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels.h"
#include "backend/rng.h"

namespace nanovllm::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kChunk = kThreads * 16;  // vocabulary entries per block: many blocks even for one row

struct Pick {
  float score;
  int index;
};

__device__ __forceinline__ bool better(float s, int i, float bs, int bi) {
  return s > bs || (s == bs && i < bi);  // NaN never wins; ties keep the lowest index
}

__device__ __forceinline__ void warp_best(float& best, int& bi) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float os = __shfl_xor_sync(0xffffffffu, best, o);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (better(os, oi, best, bi)) { best = os; bi = oi; }
  }
}

// Block (chunk, row): the best score of logits[row, chunk*kChunk ...) into part[row][chunk].
__global__ void sample_chunk_kernel(const float* __restrict__ logits, const float* __restrict__ temperatures,
                                    const int64_t* __restrict__ keys, const int64_t* __restrict__ counters,
                                    Pick* __restrict__ part, int vocab) {
  pdl_launch_dependents();
  pdl_wait();
  const int row = blockIdx.y, chunk = blockIdx.x;
  const float* l = logits + (size_t)row * vocab;
  const float t = temperatures[row];
  const int begin = chunk * kChunk, end = min(vocab, begin + kChunk);
  float best = -INFINITY;
  int bi = 0x7fffffff;
  if (t == 0.f) {
    for (int v = begin + threadIdx.x; v < end; v += kThreads) {
      const float s = l[v];
      if (better(s, v, best, bi)) { best = s; bi = v; }
    }
  } else {
    const uint64_t stream = draw_stream(static_cast<uint64_t>(keys[row]), static_cast<uint64_t>(counters[row]));
    const float inv_t = 1.f / t;  // multiply by 1/T exactly as the CPU sampler does
    for (int v = begin + threadIdx.x; v < end; v += kThreads) {
      const float u = uniform01(stream, static_cast<uint32_t>(v));
      const float s = l[v] * inv_t - logf(-logf(u));
      if (better(s, v, best, bi)) { best = s; bi = v; }
    }
  }
  warp_best(best, bi);
  __shared__ Pick w[kThreads / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) w[warp] = {best, bi};
  __syncthreads();
  if (warp == 0) {
    best = lane < kThreads / 32 ? w[lane].score : -INFINITY;
    bi = lane < kThreads / 32 ? w[lane].index : 0x7fffffff;
    warp_best(best, bi);
    if (lane == 0) part[(size_t)row * gridDim.x + chunk] = {best, bi};
  }
}

// One warp per row: the best of the row's chunk picks.
__global__ void sample_reduce_kernel(const Pick* __restrict__ part, int chunks, int32_t* __restrict__ out) {
  pdl_launch_dependents();
  pdl_wait();
  const int row = blockIdx.x, lane = threadIdx.x;
  float best = -INFINITY;
  int bi = 0x7fffffff;
  for (int c = lane; c < chunks; c += 32) {
    const Pick p = part[(size_t)row * chunks + c];
    if (better(p.score, p.index, best, bi)) { best = p.score; bi = p.index; }
  }
  warp_best(best, bi);
  if (lane == 0) out[row] = bi == 0x7fffffff ? 0 : bi;  // all NaN: token 0, not an out-of-range id
}

}  // namespace

size_t sample_scratch_bytes(int rows, int vocab) {
  return sizeof(Pick) * (size_t)rows * ((vocab + kChunk - 1) / kChunk);
}

void launch_sample(const float* logits, const float* temperatures, const int64_t* keys, const int64_t* counters,
                   int32_t* out, int rows, int vocab, void* scratch, cudaStream_t s) {
  if (rows == 0) return;
  const int chunks = (vocab + kChunk - 1) / kChunk;
  launch("sample", sample_chunk_kernel, dim3(chunks, rows), kThreads, 0, s, logits, temperatures, keys, counters,
         static_cast<Pick*>(scratch), vocab);
  launch("sample (reduce)", sample_reduce_kernel, rows, 32, 0, s, static_cast<const Pick*>(scratch), chunks, out);
}

}  // namespace nanovllm::cuda
