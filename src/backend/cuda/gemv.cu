// Skinny GEMM (M <= 8 rows of x, decode at small batch): out[m, n] = x[m, :] . w[n, :]. One warp
// per output column n reads w's row once for all M rows of x, 16 bytes a lane, so the op runs
// at weight-streaming bandwidth; cuBLASLt's tiles leave most SMs idle for the N=1024 projections.
// Gemm (gemm.cpp) times this against cuBLASLt per shape and keeps the faster.
#include "backend/cuda/common.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels.h"

namespace nanovllm::cuda {
namespace {

constexpr int kWarps = 8;

template <int MAXM, class O>
__global__ void __launch_bounds__(kWarps * 32)
gemv_kernel(const bf16* __restrict__ x, const bf16* __restrict__ w, O* __restrict__ out, int m, int n, int k) {
  const int col = blockIdx.x * kWarps + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (col >= n) return;
  const bf16* wr = w + (size_t)col * k;
  float acc[MAXM];
#pragma unroll
  for (int r = 0; r < MAXM; ++r) acc[r] = 0.f;
  const int chunks = k / 8;
#pragma unroll 4
  for (int c = lane; c < chunks; c += 32) {
    float wf[8];
    load8(wr + c * 8, wf);
#pragma unroll
    for (int r = 0; r < MAXM; ++r) {
      if (r < m) {
        float xf[8];
        load8(x + (size_t)r * k + c * 8, xf);
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[r] += wf[j] * xf[j];
      }
    }
  }
#pragma unroll
  for (int r = 0; r < MAXM; ++r) {
    if (r < m) {
      const float v = warp_sum(acc[r]);
      if (lane == 0) out[(size_t)r * n + col] = from_f<O>(v);
    }
  }
}

template <int MAXM>
void launch_m(const void* x, const void* w, void* out, DType out_t, int m, int n, int k, cudaStream_t s) {
  const int blocks = (n + kWarps - 1) / kWarps;
  if (out_t == DType::bf16)
    gemv_kernel<MAXM, bf16><<<blocks, kWarps * 32, 0, s>>>(static_cast<const bf16*>(x), static_cast<const bf16*>(w),
                                                            static_cast<bf16*>(out), m, n, k);
  else
    gemv_kernel<MAXM, float><<<blocks, kWarps * 32, 0, s>>>(static_cast<const bf16*>(x), static_cast<const bf16*>(w),
                                                             static_cast<float*>(out), m, n, k);
}

}  // namespace

bool gemv_supported(const void* x, const void* w, DType in_t, DType out_t, int64_t m, int64_t k) {
  return in_t == DType::bf16 && (out_t == DType::bf16 || out_t == DType::f32) && m >= 1 && m <= 8 && k % 8 == 0 &&
         aligned16(x) && aligned16(w);
}

void launch_gemv(const void* x, const void* w, void* out, DType out_t, int m, int n, int k, cudaStream_t s) {
  if (m <= 1) launch_m<1>(x, w, out, out_t, m, n, k, s);
  else if (m <= 2) launch_m<2>(x, w, out, out_t, m, n, k, s);
  else if (m <= 4) launch_m<4>(x, w, out, out_t, m, n, k, s);
  else launch_m<8>(x, w, out, out_t, m, n, k, s);
  check_launch("linear (gemv)");
}

}  // namespace nanovllm::cuda
