// Shared by the skinny GEMMs over bf16 (gemv.cu) and FP8 (gemv_fp8.cu, gemv_fp8_mma.cu) weights.
#pragma once
#include "backend/cuda/common.cuh"
#include "backend/cuda/kernels.h"

namespace nanovllm::cuda {

// The scales of an FP8 weight's row `col`'s block row (Tensor::scale's layout).
__device__ __forceinline__ const float* scale_row(const Fp8Weight& w, int col) {
  return w.scale + (size_t)(col / w.block_rows) * w.scale_cols;
}

// Sums each row's partial dot products over the warp; lane 0 stores out[r, col] (adds to it with
// add_out: the residual stream, read in the same fp32 sum before the one rounding). NORM: the
// row's dot product times rsqrt(mean(x[r]^2) + eps), the lanes' squares summed first (every lane
// ends with the whole row's sum).
template <int MAXM, bool NORM, class O>
__device__ __forceinline__ void store_col(float (&acc)[MAXM], float (&ss)[MAXM], O* __restrict__ out, int m, int n,
                                          int k, float eps, int col, int lane, bool add_out) {
#pragma unroll
  for (int r = 0; r < MAXM; ++r) {
    if (r < m) {
      float v = warp_sum(acc[r]);
      if constexpr (NORM) v *= rsqrtf(warp_sum(ss[r]) / static_cast<float>(k) + eps);
      O* o = out + (size_t)r * n + col;
      if (lane == 0) *o = from_f<O>(add_out ? v + to_f(*o) : v);
    }
  }
}

// The gated variant (GATED: the MLP's fused gate/up weight [2I, K], n = 2I, and its activation
// A): out[r, j] = act(x[r] . w[j]) * (x[r] . w[I + j]), out [m, I], both sums in float32 and
// rounded once. A block's first KW/2 warps take gate rows j = block KW/2 + w, the others the up
// rows I + j; each warp's sums meet in shared memory. A j past I is clamped to I - 1 (computed,
// not stored), so every warp stays to the block's barrier.
template <bool GATED, int KW>
__device__ __forceinline__ int warp_col(int n) {
  const int warp = threadIdx.x >> 5;
  if constexpr (!GATED) {
    return blockIdx.x * KW + warp;
  } else {
    const int inter = n / 2, j = min(blockIdx.x * (KW / 2) + warp % (KW / 2), inter - 1);
    return j + (warp / (KW / 2)) * inter;
  }
}
template <bool GATED, int KW>
inline int gemv_blocks(int n) {
  return GATED ? (n / 2 + KW / 2 - 1) / (KW / 2) : (n + KW - 1) / KW;
}

// The column's end: store_col, or (GATED) the block's gate and up sums combined.
template <int MAXM, bool NORM, bool GATED, Act A, int KW, class O>
__device__ __forceinline__ void finish_col(float (&acc)[MAXM], float (&ss)[MAXM], O* __restrict__ out, int m, int n,
                                           int k, float eps, int col, int lane, bool add_out) {
  if constexpr (!GATED) {
    store_col<MAXM, NORM>(acc, ss, out, m, n, k, eps, col, lane, add_out);
  } else {
    __shared__ float sums[KW][MAXM];
    const int warp = threadIdx.x >> 5, inter = n / 2;
#pragma unroll
    for (int r = 0; r < MAXM; ++r) {
      if (r < m) {
        float v = warp_sum(acc[r]);
        if constexpr (NORM) v *= rsqrtf(warp_sum(ss[r]) / static_cast<float>(k) + eps);
        if (lane == 0) sums[warp][r] = v;
      }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < (KW / 2) * m; i += blockDim.x) {
      const int w = i % (KW / 2), r = i / (KW / 2), j = blockIdx.x * (KW / 2) + w;
      if (j < inter) out[(size_t)r * inter + j] = from_f<O>(activate<A>(sums[w][r]) * sums[w + KW / 2][r]);
    }
  }
}

// The launchers' dispatch: f(std::integral_constant<int, MAXM>) with the instantiation that covers
// m rows (1, 2, 4 or 8), and f(std::integral_constant<Act, A>) for an activation.
template <class F>
inline void with_max_rows(int m, F&& f) {
  if (m <= 1) f(std::integral_constant<int, 1>{});
  else if (m <= 2) f(std::integral_constant<int, 2>{});
  else if (m <= 4) f(std::integral_constant<int, 4>{});
  else f(std::integral_constant<int, 8>{});
}
template <class F>
inline void with_act(Act act, F&& f) {
  if (act == Act::silu) f(std::integral_constant<Act, Act::silu>{});
  else f(std::integral_constant<Act, Act::gelu_tanh>{});
}

}  // namespace nanovllm::cuda
