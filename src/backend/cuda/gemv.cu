// Skinny GEMM (M <= 8 rows of x, decode at small batch): out[m, n] = x[m, :] . w[n, :]. One warp
// per output column n reads w's row once for all M rows of x, 16 bytes a lane, so the op runs
// at weight-streaming bandwidth (and, launched with programmatic dependent launch, loads its
// weights while the kernel before it finishes); cuBLASLt's tiles leave most SMs idle for the N=1024 projections.
// Gemm (gemm.cpp) times this against cuBLASLt per shape and keeps the faster. The NORM variant
// (norm_linear) applies an RMSNorm to x's rows on the way in, in float32: the projection after a
// decoder norm at decode batch <= 8 is one kernel, and its input is never rounded to bf16.
#include "backend/cuda/common.cuh"
#include "backend/cuda/gemv_common.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels.h"

namespace nanovllm::cuda {
namespace {

constexpr int kWarps = 8;

// acc[r] += w's 8 values (chunk c of the row) . x[r]'s 8 values at the same columns, for r < m.
// NORM: x[r]'s values are first multiplied by the norm weight g's (in float32), and ss[r] sums
// their squares for the row's 1/rms, applied after the warp's sum (store_col).
template <int MAXM, bool NORM>
__device__ __forceinline__ void accumulate8(float (&acc)[MAXM], float (&ss)[MAXM], const float (&wf)[8],
                                            const bf16* __restrict__ x, const bf16* __restrict__ g, int c, int m,
                                            int k) {
  float gf[8];
  if constexpr (NORM) load8(g + c * 8, gf);
#pragma unroll
  for (int r = 0; r < MAXM; ++r) {
    if (r < m) {
      float xf[8];
      load8(x + (size_t)r * k + c * 8, xf);
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        if constexpr (NORM) {
          ss[r] += xf[j] * xf[j];
          acc[r] += wf[j] * (xf[j] * gf[j]);
        } else {
          acc[r] += wf[j] * xf[j];
        }
      }
    }
  }
}

// Lanes of a warp stride over w's row in 16-byte chunks: chunk c = lane + 32 * u. CPL = chunks
// per lane (K / 256), so the whole row slice lives in registers and is loaded before pdl_wait():
// the weights (which no kernel writes) stream in while the previous kernel is still finishing.
template <int MAXM, int CPL, bool NORM, bool GATED, Act A, class O>
__global__ void __launch_bounds__(kWarps * 32)
gemv_kernel(const bf16* __restrict__ x, const bf16* __restrict__ g, float eps, const bf16* __restrict__ w,
            O* __restrict__ out, int m, int n, int k, bool add_out) {
  const int col = warp_col<GATED, kWarps>(n), lane = threadIdx.x & 31;
  const bool active = col < n;
  uint4 wv[CPL];
  if (active) {
    const uint4* wr = reinterpret_cast<const uint4*>(w + (size_t)col * k);
#pragma unroll
    for (int u = 0; u < CPL; ++u) wv[u] = __ldcs(wr + lane + 32 * u);  // streamed once: skip L1
  }
  pdl_launch_dependents();
  pdl_wait();
  if (!active) return;
  float acc[MAXM], ss[MAXM];
#pragma unroll
  for (int r = 0; r < MAXM; ++r) acc[r] = ss[r] = 0.f;
#pragma unroll
  for (int u = 0; u < CPL; ++u) {
    float wf[8];
    load8(reinterpret_cast<const bf16*>(&wv[u]), wf);
    accumulate8<MAXM, NORM>(acc, ss, wf, x, g, lane + 32 * u, m, k);
  }
  finish_col<MAXM, NORM, GATED, A, kWarps>(acc, ss, out, m, n, k, eps, col, lane, add_out);
}

// Any K that is a multiple of 8: the row is walked in a loop (nothing loaded before pdl_wait()).
template <int MAXM, bool NORM, bool GATED, Act A, class O>
__global__ void __launch_bounds__(kWarps * 32)
gemv_loop_kernel(const bf16* __restrict__ x, const bf16* __restrict__ g, float eps, const bf16* __restrict__ w,
                 O* __restrict__ out, int m, int n, int k, bool add_out) {
  pdl_launch_dependents();
  pdl_wait();
  const int col = warp_col<GATED, kWarps>(n), lane = threadIdx.x & 31;
  if (col >= n) return;
  const bf16* wr = w + (size_t)col * k;
  float acc[MAXM], ss[MAXM];
#pragma unroll
  for (int r = 0; r < MAXM; ++r) acc[r] = ss[r] = 0.f;
  const int chunks = k / 8;
#pragma unroll 4
  for (int c = lane; c < chunks; c += 32) {
    float wf[8];
    load8(wr + c * 8, wf);
    accumulate8<MAXM, NORM>(acc, ss, wf, x, g, c, m, k);
  }
  finish_col<MAXM, NORM, GATED, A, kWarps>(acc, ss, out, m, n, k, eps, col, lane, add_out);
}

template <int MAXM, bool NORM, class O, bool GATED = false, Act A = Act::silu>
void launch_mo(const bf16* x, const bf16* g, float eps, const bf16* w, O* out, int m, int n, int k, bool add,
               cudaStream_t s) {
  const int blocks = gemv_blocks<GATED, kWarps>(n);
  const char* op = GATED ? "norm_linear_act (gemv)" : NORM ? "norm_linear (gemv)" : "linear (gemv)";
  auto go = [&](auto kernel) { launch(op, kernel, blocks, kWarps * 32, 0, s, x, g, eps, w, out, m, n, k, add); };
  switch (k % 256 == 0 ? k / 256 : 0) {
    case 2: go(gemv_kernel<MAXM, 2, NORM, GATED, A, O>); break;
    case 4: go(gemv_kernel<MAXM, 4, NORM, GATED, A, O>); break;
    case 8: go(gemv_kernel<MAXM, 8, NORM, GATED, A, O>); break;
    case 12: go(gemv_kernel<MAXM, 12, NORM, GATED, A, O>); break;
    case 16: go(gemv_kernel<MAXM, 16, NORM, GATED, A, O>); break;
    default: go(gemv_loop_kernel<MAXM, NORM, GATED, A, O>); break;
  }
}

template <int MAXM>
void launch_m(const void* x, const void* w, void* out, DType out_t, int m, int n, int k, bool add, cudaStream_t s) {
  auto xp = static_cast<const bf16*>(x);
  auto wp = static_cast<const bf16*>(w);
  if (out_t == DType::bf16) launch_mo<MAXM, false>(xp, nullptr, 0.f, wp, static_cast<bf16*>(out), m, n, k, add, s);
  else launch_mo<MAXM, false>(xp, nullptr, 0.f, wp, static_cast<float*>(out), m, n, k, add, s);
}

template <int MAXM>
void launch_norm_m(const void* x, const void* g, float eps, const void* w, void* out, DType out_t, int m, int n, int k,
                   cudaStream_t s) {
  auto xp = static_cast<const bf16*>(x), gp = static_cast<const bf16*>(g), wp = static_cast<const bf16*>(w);
  if (out_t == DType::bf16) launch_mo<MAXM, true>(xp, gp, eps, wp, static_cast<bf16*>(out), m, n, k, false, s);
  else launch_mo<MAXM, true>(xp, gp, eps, wp, static_cast<float*>(out), m, n, k, false, s);
}

template <int MAXM>
void launch_norm_act_m(const void* x, const void* g, float eps, const void* w, void* out, int m, int n, int k, Act act,
                       cudaStream_t s) {
  auto go = [&](auto a) {
    launch_mo<MAXM, true, bf16, true, decltype(a)::value>(static_cast<const bf16*>(x), static_cast<const bf16*>(g), eps,
                                                          static_cast<const bf16*>(w), static_cast<bf16*>(out), m, n,
                                                          k, false, s);
  };
  with_act(act, go);
}

}  // namespace

bool gemv_supported(const void* x, const void* w, DType in_t, DType out_t, int64_t m, int64_t k) {
  return in_t == DType::bf16 && (out_t == DType::bf16 || out_t == DType::f32) && m >= 1 && m <= 8 && k % 8 == 0 &&
         aligned16(x) && aligned16(w);
}

void launch_gemv(const void* x, const void* w, void* out, DType out_t, int m, int n, int k, bool accumulate,
                 cudaStream_t s) {
  with_max_rows(m, [&](auto r) { launch_m<decltype(r)::value>(x, w, out, out_t, m, n, k, accumulate, s); });
}

void launch_gemv_norm(const void* x, const void* g, float eps, const void* w, void* out, DType out_t, int m, int n,
                      int k, cudaStream_t s) {
  with_max_rows(m, [&](auto r) { launch_norm_m<decltype(r)::value>(x, g, eps, w, out, out_t, m, n, k, s); });
}

void launch_gemv_norm_act(const void* x, const void* g, float eps, const void* w, void* out, int m, int n, int k,
                          Act act, cudaStream_t s) {
  with_max_rows(m, [&](auto r) { launch_norm_act_m<decltype(r)::value>(x, g, eps, w, out, m, n, k, act, s); });
}

}  // namespace nanovllm::cuda
