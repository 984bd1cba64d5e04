// Shared by the skinny GEMMs over bf16 (gemv.cu) and FP8 (gemv_fp8.cu) weights, one warp an
// output column.
#pragma once
#include "backend/cuda/common.cuh"

namespace nanovllm::cuda {

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

}  // namespace nanovllm::cuda
