// One head of the q/k norm + RoPE + KV store (backend.h's RopeStore), by one warp: shared by
// qk_norm_rope_store_kernel (a warp a head of every token) and the decode attention's fused
// prologue (a block's own query heads and, in the block that holds the newest token, its K/V).
// Lane l owns elements [l*P, l*P+P) of the first half of a head and their rotation partners
// [D/2 + l*P, ...) in the second half, so RoPE needs no data exchange: D = 64 * P.
#pragma once
#include "backend/cuda/common.cuh"

namespace nanovllm::cuda {

// Head `head` (its D elements) of a qkv row, this lane's halves.
template <int P>
__device__ __forceinline__ void load_head(const bf16* __restrict__ head, float (&a)[P], float (&b)[P]) {
  constexpr int H = 32 * P;
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int p = 0; p < P; ++p) {
    a[p] = to_f(head[lane * P + p]);
    b[p] = to_f(head[H + lane * P + p]);
  }
}

// A loaded q or k head, as the CPU's norm_rope_head: times `pre` (a folded decoder norm's 1/rms,
// else 1), plus its bias columns (nullptr: none), RMS-normed with w (nullptr: no norm), rotated by
// cs (the position's cos [D/2] then sin [D/2]).
template <int P, class W, class B>
__device__ __forceinline__ void norm_rope(float (&a)[P], float (&b)[P], float pre, const B* __restrict__ bias,
                                          const W* __restrict__ w, float eps, const float* __restrict__ cs) {
  constexpr int D = 64 * P, H = D / 2;
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int p = 0; p < P; ++p) {
    a[p] *= pre;
    b[p] *= pre;
  }
  if (bias) {
#pragma unroll
    for (int p = 0; p < P; ++p) {
      a[p] += to_f(bias[lane * P + p]);
      b[p] += to_f(bias[H + lane * P + p]);
    }
  }
  if (w) {
    float ss = 0.f;
#pragma unroll
    for (int p = 0; p < P; ++p) ss += a[p] * a[p] + b[p] * b[p];
    const float inv = rsqrtf(warp_sum(ss) / D + eps);
#pragma unroll
    for (int p = 0; p < P; ++p) {
      const int i = lane * P + p;
      a[p] = a[p] * inv * to_f(w[i]);
      b[p] = b[p] * inv * to_f(w[H + i]);
    }
  }
#pragma unroll
  for (int p = 0; p < P; ++p) {
    const int i = lane * P + p;
    const float xa = a[p], xb = b[p], c = cs[i], s = cs[H + i];
    a[p] = xa * c - xb * s;
    b[p] = xb * c + xa * s;
  }
}

// A rotated q head to dst (D bf16).
template <int P>
__device__ __forceinline__ void store_q_head(const float (&a)[P], const float (&b)[P], bf16* __restrict__ dst) {
  constexpr int H = 32 * P;
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int p = 0; p < P; ++p) {
    dst[lane * P + p] = from_f<bf16>(a[p]);
    dst[H + lane * P + p] = from_f<bf16>(b[p]);
  }
}

// A rotated k head into its cache row (D elements; an FP8 cache stores x / k_scale).
template <int P, class C>
__device__ __forceinline__ void store_k_head(const float (&a)[P], const float (&b)[P], float k_scale,
                                             C* __restrict__ dst) {
  constexpr int H = 32 * P;
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int p = 0; p < P; ++p) {
    dst[lane * P + p] = to_cache<C>(is_fp8_kv<C> ? __fdiv_rn(a[p], k_scale) : a[p]);
    dst[H + lane * P + p] = to_cache<C>(is_fp8_kv<C> ? __fdiv_rn(b[p], k_scale) : b[p]);
  }
}

// A v head (src: its D columns of the qkv row) times pre, plus its bias columns, into its cache row.
template <int P, class B, class C>
__device__ __forceinline__ void store_v_head(const bf16* __restrict__ src, float pre, const B* __restrict__ bias,
                                             float v_scale, C* __restrict__ dst) {
  constexpr int H = 32 * P;
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int p = 0; p < P; ++p) {
    const int i = lane * P + p;
    float va = to_f(src[i]) * pre, vb = to_f(src[H + i]) * pre;
    if (bias) {
      va += to_f(bias[i]);
      vb += to_f(bias[H + i]);
    }
    dst[i] = to_cache<C>(is_fp8_kv<C> ? __fdiv_rn(va, v_scale) : va);
    dst[H + i] = to_cache<C>(is_fp8_kv<C> ? __fdiv_rn(vb, v_scale) : vb);
  }
}

}  // namespace nanovllm::cuda
