// Skinny GEMM over FP8 weights (M <= 8 rows of x, decode at small batch): out[m, n] (+)= x[m, :] .
// w[n, :], w an e4m3 matrix with block scales (backend.h's Tensor::scale), x bf16, fp32 sums. The
// weights are dequantized in registers and never the activations quantized: the result is the
// exact product with the dequantized weights but for fp32 summation and the output's rounding.
// gemv.cu's structure: one warp per output column, 16 bytes a lane (16 weights here, 8 there), so
// the op streams half the bytes of the bf16 kernel; the weights and their scales (constant data)
// are loaded before pdl_wait(). Each 16-column chunk lies in one scale block (block columns a
// multiple of 16, or one block across the row), so its 16 products are summed first and the sum
// multiplied by the chunk's scale: per row for {1, K} scales, per 128-column group for {128, 128}.
// Shapes the 16-byte path cannot take (K not a multiple of 16, unaligned rows, other blocks) go to
// a per-element kernel: slow, exact, rare. The NORM variant (norm_linear) RMS-normalises x's rows
// in float32 on the way in, as gemv.cu's does.
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include "backend/cuda/common.cuh"
#include "backend/cuda/gemv_common.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels.h"

namespace nanovllm::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kChunk = 16;  // e4m3 weights per 16-byte load

// 16 e4m3 values (one 16-byte load, lowest address first) to floats: pairs convert to half2 in
// one instruction (cvt.rn.f16x2.e4m3x2; exact, every e4m3 value is a half), half2 to float2 exactly.
__device__ __forceinline__ void fp8x16_to_float(const uint4& v, float (&f)[16]) {
  const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const __half2_raw r =
          __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(words[i] >> (16 * h)), __NV_E4M3);
      const float2 p = __half22float2(__half2(r));
      f[4 * i + 2 * h] = p.x;
      f[4 * i + 2 * h + 1] = p.y;
    }
  }
}

__device__ __forceinline__ float fp8_to_float(uint8_t b) {
  return __half2float(__half(__nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(b), __NV_E4M3)));
}

// acc[r] += s * (the chunk's 16 weights . x[r]'s 16 values at the same columns), r < m: the scale
// multiplies the chunk's sum once. NORM: x[r]'s values first times the norm weight g's (float32),
// ss[r] sums their squares for the row's 1/rms, applied after the warp's sum (store_col).
template <int MAXM, bool NORM>
__device__ __forceinline__ void accumulate16(float (&acc)[MAXM], float (&ss)[MAXM], const float (&wf)[16], float s,
                                             const bf16* __restrict__ x, const bf16* __restrict__ g, int c, int m,
                                             int k) {
  float ga[8], gb[8];
  if constexpr (NORM) {
    load8(g + c * kChunk, ga);
    load8(g + c * kChunk + 8, gb);
  }
#pragma unroll
  for (int r = 0; r < MAXM; ++r) {
    if (r < m) {
      float xa[8], xb[8];
      const bf16* xr = x + (size_t)r * k + c * kChunk;
      load8(xr, xa);
      load8(xr + 8, xb);
      float p = 0.f;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        if constexpr (NORM) {
          ss[r] += xa[j] * xa[j] + xb[j] * xb[j];
          p += wf[j] * (xa[j] * ga[j]);
          p += wf[8 + j] * (xb[j] * gb[j]);
        } else {
          p += wf[j] * xa[j];
          p += wf[8 + j] * xb[j];
        }
      }
      acc[r] = fmaf(s, p, acc[r]);
    }
  }
}

// K = 512 * CPL: lane `lane` holds chunks lane + 32 u of its warp's row, all loaded (with their
// scales) before pdl_wait(), so the weights stream in while the previous kernel finishes.
template <int MAXM, int CPL, bool NORM, bool GATED, Act A, class O>
__global__ void __launch_bounds__(kWarps * 32)
gemv_fp8_kernel(const bf16* __restrict__ x, const bf16* __restrict__ g, float eps, Fp8Weight w, O* __restrict__ out,
                int m, int n, int k, bool add_out) {
  const int col = warp_col<GATED, kWarps>(n), lane = threadIdx.x & 31;
  const bool active = col < n;
  uint4 wv[CPL];
  float sc[CPL];
  if (active) {
    const uint4* wr = reinterpret_cast<const uint4*>(w.q + (size_t)col * k);
    const float* sr = scale_row(w, col);
#pragma unroll
    for (int u = 0; u < CPL; ++u) {
      const int c = lane + 32 * u;
      wv[u] = __ldcs(wr + c);  // streamed once: skip L1
      sc[u] = __ldg(sr + c * kChunk / w.block_cols);
    }
  }
  pdl_launch_dependents();
  pdl_wait();
  if (!active) return;
  float acc[MAXM], ss[MAXM];
#pragma unroll
  for (int r = 0; r < MAXM; ++r) acc[r] = ss[r] = 0.f;
#pragma unroll
  for (int u = 0; u < CPL; ++u) {
    float wf[16];
    fp8x16_to_float(wv[u], wf);
    accumulate16<MAXM, NORM>(acc, ss, wf, sc[u], x, g, lane + 32 * u, m, k);
  }
  finish_col<MAXM, NORM, GATED, A, kWarps>(acc, ss, out, m, n, k, eps, col, lane, add_out);
}

// M = 1 (batch-1 decode): 8 weights a lane per load, K = 256 * CPL, so twice the loads are in
// flight before pdl_wait() and each lane's x load is 16 contiguous bytes (in the engine on the
// H100: 0.83 ms a token against 0.88 with the 16-weight kernel; at M >= 2 that one is faster).
template <int CPL, bool NORM, bool GATED, Act A, class O>
__global__ void __launch_bounds__(kWarps * 32)
gemv_fp8_m1_kernel(const bf16* __restrict__ x, const bf16* __restrict__ g, float eps, Fp8Weight w,
                   O* __restrict__ out, int m, int n, int k, bool add_out) {
  const int col = warp_col<GATED, kWarps>(n), lane = threadIdx.x & 31;
  const bool active = col < n;
  uint2 wv[CPL];
  float sc[CPL];
  if (active) {
    const uint2* wr = reinterpret_cast<const uint2*>(w.q + (size_t)col * k);
    const float* sr = scale_row(w, col);
#pragma unroll
    for (int u = 0; u < CPL; ++u) {
      const int c = lane + 32 * u;
      wv[u] = __ldcs(wr + c);
      sc[u] = __ldg(sr + c * 8 / w.block_cols);
    }
  }
  pdl_launch_dependents();
  pdl_wait();
  if (!active) return;
  float acc[1] = {0.f}, ss[1] = {0.f};
#pragma unroll
  for (int u = 0; u < CPL; ++u) {
    const int c = lane + 32 * u;
    const uint32_t words[2] = {wv[u].x, wv[u].y};
    float wf[8], xa[8], ga[8];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const __half2_raw r =
          __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(words[i / 2] >> (16 * (i & 1))), __NV_E4M3);
      const float2 p = __half22float2(__half2(r));
      wf[2 * i] = p.x;
      wf[2 * i + 1] = p.y;
    }
    load8(x + c * 8, xa);
    if constexpr (NORM) load8(g + c * 8, ga);
    float p = 0.f;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      if constexpr (NORM) {
        ss[0] += xa[j] * xa[j];
        p += wf[j] * (xa[j] * ga[j]);
      } else {
        p += wf[j] * xa[j];
      }
    }
    acc[0] = fmaf(sc[u], p, acc[0]);
  }
  finish_col<1, NORM, GATED, A, kWarps>(acc, ss, out, m, n, k, eps, col, lane, add_out);
}

// Any K that is a multiple of 16: the row is walked in a loop (nothing loaded before pdl_wait()).
template <int MAXM, bool NORM, bool GATED, Act A, class O>
__global__ void __launch_bounds__(kWarps * 32)
gemv_fp8_loop_kernel(const bf16* __restrict__ x, const bf16* __restrict__ g, float eps, Fp8Weight w,
                     O* __restrict__ out, int m, int n, int k, bool add_out) {
  pdl_launch_dependents();
  pdl_wait();
  const int col = warp_col<GATED, kWarps>(n), lane = threadIdx.x & 31;
  if (col >= n) return;
  const uint4* wr = reinterpret_cast<const uint4*>(w.q + (size_t)col * k);
  const float* sr = scale_row(w, col);
  float acc[MAXM], ss[MAXM];
#pragma unroll
  for (int r = 0; r < MAXM; ++r) acc[r] = ss[r] = 0.f;
  const int chunks = k / kChunk;
#pragma unroll 4
  for (int c = lane; c < chunks; c += 32) {
    float wf[16];
    fp8x16_to_float(__ldcs(wr + c), wf);
    accumulate16<MAXM, NORM>(acc, ss, wf, __ldg(sr + c * kChunk / w.block_cols), x, g, c, m, k);
  }
  finish_col<MAXM, NORM, GATED, A, kWarps>(acc, ss, out, m, n, k, eps, col, lane, add_out);
}

// Any shape, alignment and scale block: element by element, each weight times its own scale.
template <bool NORM, bool GATED, Act A, class O>
__global__ void __launch_bounds__(kWarps * 32)
gemv_fp8_any_kernel(const bf16* __restrict__ x, const bf16* __restrict__ g, float eps, Fp8Weight w,
                    O* __restrict__ out, int m, int n, int k, bool add_out) {
  constexpr int MAXM = 8;
  pdl_launch_dependents();
  pdl_wait();
  const int col = warp_col<GATED, kWarps>(n), lane = threadIdx.x & 31;
  if (col >= n) return;
  const uint8_t* wr = w.q + (size_t)col * k;
  const float* sr = scale_row(w, col);
  float acc[MAXM], ss[MAXM];
#pragma unroll
  for (int r = 0; r < MAXM; ++r) acc[r] = ss[r] = 0.f;
  for (int c = lane; c < k; c += 32) {
    const float wv = fp8_to_float(wr[c]) * sr[c / w.block_cols];
    const float gv = NORM ? to_f(g[c]) : 1.f;
#pragma unroll
    for (int r = 0; r < MAXM; ++r) {
      if (r < m) {
        const float xv = to_f(x[(size_t)r * k + c]);
        if constexpr (NORM) ss[r] += xv * xv;
        acc[r] += wv * (NORM ? xv * gv : xv);
      }
    }
  }
  finish_col<MAXM, NORM, GATED, A, kWarps>(acc, ss, out, m, n, k, eps, col, lane, add_out);
}

// The 16-byte kernels' conditions: whole 16-byte chunks (K % 16, aligned rows of w, x and g) that
// each lie in one scale block.
bool vector_ok(const void* x, const void* g, const Fp8Weight& w, int k) {
  return k % kChunk == 0 && aligned16(x) && (!g || aligned16(g)) && aligned16(w.q) &&
         (w.block_cols % kChunk == 0 || w.block_cols >= k);
}

template <int MAXM, bool NORM, class O, bool GATED = false, Act A = Act::silu>
void launch_mo(const bf16* x, const bf16* g, float eps, const Fp8Weight& w, O* out, int m, int n, int k, bool add,
               cudaStream_t s) {
  const int blocks = gemv_blocks<GATED, kWarps>(n);
  const char* op = GATED ? "norm_linear_act (FP8 gemv)" : NORM ? "norm_linear (FP8 gemv)" : "linear (FP8 gemv)";
  auto go = [&](auto kernel) { launch(op, kernel, blocks, kWarps * 32, 0, s, x, g, eps, w, out, m, n, k, add); };
  if (!vector_ok(x, g, w, k)) {
    go(gemv_fp8_any_kernel<NORM, GATED, A, O>);
    return;
  }
  if constexpr (MAXM == 1) {  // 8 weights a lane (block columns a multiple of 16 hold 8-column chunks too)
    switch (k % 256 == 0 ? k / 256 : 0) {
      case 4: go(gemv_fp8_m1_kernel<4, NORM, GATED, A, O>); return;
      case 8: go(gemv_fp8_m1_kernel<8, NORM, GATED, A, O>); return;
      case 12: go(gemv_fp8_m1_kernel<12, NORM, GATED, A, O>); return;
      case 16: go(gemv_fp8_m1_kernel<16, NORM, GATED, A, O>); return;
      case 24: go(gemv_fp8_m1_kernel<24, NORM, GATED, A, O>); return;
      default: break;
    }
  }
  // K of the Qwen3 family's projections: 1024, 2048, 2560, 3072, 4096, 6144 (the rest loop).
  switch (k % 512 == 0 ? k / 512 : 0) {
    case 2: go(gemv_fp8_kernel<MAXM, 2, NORM, GATED, A, O>); break;
    case 4: go(gemv_fp8_kernel<MAXM, 4, NORM, GATED, A, O>); break;
    case 5: go(gemv_fp8_kernel<MAXM, 5, NORM, GATED, A, O>); break;
    case 6: go(gemv_fp8_kernel<MAXM, 6, NORM, GATED, A, O>); break;
    case 8: go(gemv_fp8_kernel<MAXM, 8, NORM, GATED, A, O>); break;
    case 12: go(gemv_fp8_kernel<MAXM, 12, NORM, GATED, A, O>); break;
    default: go(gemv_fp8_loop_kernel<MAXM, NORM, GATED, A, O>); break;
  }
}

template <int MAXM>
void launch_m(const void* x, const Fp8Weight& w, void* out, DType out_t, int m, int n, int k, bool add,
              cudaStream_t s) {
  auto xp = static_cast<const bf16*>(x);
  if (out_t == DType::bf16) launch_mo<MAXM, false>(xp, nullptr, 0.f, w, static_cast<bf16*>(out), m, n, k, add, s);
  else launch_mo<MAXM, false>(xp, nullptr, 0.f, w, static_cast<float*>(out), m, n, k, add, s);
}

template <int MAXM>
void launch_norm_m(const void* x, const void* g, float eps, const Fp8Weight& w, void* out, int m, int n, int k,
                   cudaStream_t s) {
  launch_mo<MAXM, true>(static_cast<const bf16*>(x), static_cast<const bf16*>(g), eps, w, static_cast<bf16*>(out),
                        m, n, k, false, s);
}

template <int MAXM>
void launch_norm_act_m(const void* x, const void* g, float eps, const Fp8Weight& w, void* out, int m, int n, int k,
                       Act act, cudaStream_t s) {
  auto go = [&](auto a) {
    launch_mo<MAXM, true, bf16, true, decltype(a)::value>(static_cast<const bf16*>(x), static_cast<const bf16*>(g), eps,
                                                          w, static_cast<bf16*>(out), m, n, k, false, s);
  };
  with_act(act, go);
}

void check_args(const char* op, DType out_t, int m, const Fp8Weight& w) {
  if (m < 1 || m > 8 || (out_t != DType::bf16 && out_t != DType::f32) || !w.q || !w.scale || w.block_rows <= 0 ||
      w.block_cols <= 0 || w.scale_cols <= 0)
    throw std::invalid_argument(std::string(op) + ": the FP8 skinny GEMM takes 1 to 8 rows, bf16 or f32 out and a " +
                                "weight with scales (got " + std::to_string(m) + " rows, out " + dtype_name(out_t) +
                                ", scale blocks " + std::to_string(w.block_rows) + " x " +
                                std::to_string(w.block_cols) + ")");
}

}  // namespace

void launch_gemv_fp8(const void* x, const Fp8Weight& w, void* out, DType out_t, int m, int n, int k, bool accumulate,
                     cudaStream_t s) {
  check_args("linear (FP8 gemv)", out_t, m, w);
  with_max_rows(m, [&](auto r) { launch_m<decltype(r)::value>(x, w, out, out_t, m, n, k, accumulate, s); });
}

void launch_gemv_fp8_norm(const void* x, const void* g, float eps, const Fp8Weight& w, void* out, int m, int n, int k,
                          cudaStream_t s) {
  check_args("norm_linear (FP8 gemv)", DType::bf16, m, w);
  with_max_rows(m, [&](auto r) { launch_norm_m<decltype(r)::value>(x, g, eps, w, out, m, n, k, s); });
}

void launch_gemv_fp8_norm_act(const void* x, const void* g, float eps, const Fp8Weight& w, void* out, int m, int n,
                              int k, Act act, cudaStream_t s) {
  check_args("norm_linear_act (FP8 gemv)", DType::bf16, m, w);
  with_max_rows(m, [&](auto r) { launch_norm_act_m<decltype(r)::value>(x, g, eps, w, out, m, n, k, act, s); });
}

}  // namespace nanovllm::cuda
