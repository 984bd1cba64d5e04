// Skinny GEMM over FP8 weights on tensor cores, for M <= 16 rows of x (decode at small
// batch): out[m, n] (+)= x[m, :] . w[n, :], w e4m3 under block scales (backend.h's Tensor::scale),
// x bf16, fp32 sums. gemv_fp8.cu's one warp a column does per weight byte a conversion and M fp32
// FMAs, and reads all of x for every column: from M = 2 on it runs far below the weights'
// bandwidth. Here a block takes 8 output columns, its warps split K, and each 16 x 8 x 16 step is
// one mma.sync (A: 16 rows of x, rows past M zero; B: the 8 columns' weights widened to bf16):
// x is read once a block, the FMAs go to the tensor cores.
// - Exactness: the weights widen to bf16 exactly (e4m3x2_to_bf16x2), x goes in as it is, the
//   products are summed in fp32 a 64-column chunk at a time and the chunk's sum times its scale
//   added to the column's sum; so the result is the dequantized weights' product up to fp32
//   summation and the output's rounding, as gemv_fp8.cu's. The NORM variant (norm_linear) sums
//   x's squares in fp32 and multiplies each row's sum by its 1 / rms at the end; x g goes into the
//   mma as two bf16 parts (hi = bf16(x g), lo = bf16(x g - hi): 2^-16 relative), so it is not
//   rounded to bf16 either.
// - Layout: a dot product does not depend on the order of its terms, so k is permuted within each
//   64-column chunk to make every lane's loads contiguous: lane (r = lane / 4, c = lane % 4)
//   supplies mma k 2c + {0, 1} and 2c + {8, 9} of step s from columns 16c + 4s + {0, 1} and
//   {2, 3} of the chunk: for the weights (B, column r of the tile) the 16 bytes 16c..16c+15 of its
//   row, 4 a step; for x (A, rows r and r + 8) 16 bf16 of each row, 4 a step.
// - The weights and their scales (constant data) are loaded before pdl_wait(); K = 512 CPW loads
//   them all into registers (CPW chunks a warp), other multiples of 64 loop after the wait.
// - GATED (norm_linear_act): the tile's 8 columns j of the gate rows and the same of the up rows
//   I + j, both sums in fp32, out[r, j] = act(gate) * up rounded once.
#include <cuda_fp16.h>

#include "backend/cuda/common.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/gemv_common.cuh"
#include "backend/cuda/kernels.h"
#include "backend/cuda/mma.cuh"

namespace nanovllm::cuda {
namespace {

constexpr int kWarps = 8;    // a block: one tile of 8 output columns, K split over its warps
constexpr int kChunk = 64;   // columns of k a lane group covers a chunk: 16 bytes of weights a lane
constexpr int kCols = 8;     // output columns a block (the mma's n)
constexpr int kMaxM = 16;    // rows of x (the mma's m)

// Two e4m3 (the low 16 bits, the lower k in the low byte) as a bf16 pair, exactly: cvt widens
// them to f16 exactly (every e4m3 value is an f16 normal or zero, with the low 7 mantissa bits
// zero); f16's exponent and top 3 mantissa bits moved to bf16's places make v 2^-112 (a normal, or
// zero), and a bf16 multiply by 2^112 (exact: both factors and the product normal) gives v.
__device__ __forceinline__ uint32_t e4m3x2_to_bf16x2(uint32_t two) {
  uint32_t h;
  asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(h) : "h"(static_cast<unsigned short>(two & 0xffffu)));
  const uint32_t t = ((h & 0x7fff7fffu) >> 3) | (h & 0x80008000u);
  const uint32_t two112 = 0x77807780u;  // 2^112 twice
  const __nv_bfloat162 r = __hmul2(*reinterpret_cast<const __nv_bfloat162*>(&t),
                                   *reinterpret_cast<const __nv_bfloat162*>(&two112));
  return *reinterpret_cast<const uint32_t*>(&r);
}

// The 16 x values (8 bf16 pairs) of row `row` at k0..k0+15, zeros past m.
__device__ __forceinline__ void load_x16(const bf16* __restrict__ x, int row, int m, int k, int k0, uint32_t (&v)[8]) {
  if (row < m) {
    const uint4* p = reinterpret_cast<const uint4*>(x + (size_t)row * k + k0);
    const uint4 a = p[0], b = p[1];
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
  } else {
#pragma unroll
    for (int i = 0; i < 8; ++i) v[i] = 0;
  }
}

// NORM: x g of the 8 pairs split into bf16 hi and lo parts; ss += the squares of x.
__device__ __forceinline__ void scale_split(uint32_t (&v)[8], const uint32_t (&gw)[8], uint32_t (&lo)[8], float& ss) {
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const float2 xf = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&v[i]));
    const float2 gf = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&gw[i]));
    ss = fmaf(xf.x, xf.x, fmaf(xf.y, xf.y, ss));
    const float a = xf.x * gf.x, b = xf.y * gf.y;
    const __nv_bfloat162 hi = __floats2bfloat162_rn(a, b);
    const float2 hf = __bfloat1622float2(hi);
    v[i] = *reinterpret_cast<const uint32_t*>(&hi);
    lo[i] = pack_bf16(a - hf.x, b - hf.y);
  }
}

// One 64-column chunk of a warp: the lane's weights wq (its column's 16 bytes; GATED: uq, the up
// column's) against x rows r and r + 8 at k0 = chunk + 16c; tmp (tmpu) the chunk's sums.
template <bool NORM, bool GATED>
__device__ __forceinline__ void chunk_mma(const bf16* __restrict__ x, const bf16* __restrict__ g, int m, int k,
                                          int k0, int r, const uint4& wq, const uint4& uq, float (&tmp)[4],
                                          float (&tmpu)[4], float (&ss)[2]) {
  uint32_t x0[8], x1[8], l0[8] = {}, l1[8] = {};  // l: NORM only
  load_x16(x, r, m, k, k0, x0);
  load_x16(x, r + 8, m, k, k0, x1);
  if constexpr (NORM) {
    uint32_t gw[8];
    const uint4* gp = reinterpret_cast<const uint4*>(g + k0);
    const uint4 a = gp[0], b = gp[1];
    gw[0] = a.x, gw[1] = a.y, gw[2] = a.z, gw[3] = a.w, gw[4] = b.x, gw[5] = b.y, gw[6] = b.z, gw[7] = b.w;
    scale_split(x0, gw, l0, ss[0]);
    scale_split(x1, gw, l1, ss[1]);
  }
  const uint32_t wv[4] = {wq.x, wq.y, wq.z, wq.w}, uv[4] = {uq.x, uq.y, uq.z, uq.w};
#pragma unroll
  for (int s = 0; s < 4; ++s) {
    const uint32_t a[4] = {x0[2 * s], x1[2 * s], x0[2 * s + 1], x1[2 * s + 1]};
    const uint32_t al[4] = {l0[2 * s], l1[2 * s], l0[2 * s + 1], l1[2 * s + 1]};  // NORM only
    // The step's products of one B fragment's 8 columns (the weights' word s) into t.
    auto step = [&](float (&t)[4], uint32_t word) {
      const uint32_t b0 = e4m3x2_to_bf16x2(word), b1 = e4m3x2_to_bf16x2(word >> 16);
      mma_bf16(t, a, b0, b1);
      if constexpr (NORM) mma_bf16(t, al, b0, b1);
    };
    step(tmp, wv[s]);
    if constexpr (GATED) step(tmpu, uv[s]);
  }
}

// acc += tmp times the chunk's scales of the lane's two output columns (C's columns 2c, 2c + 1);
// tmp cleared.
__device__ __forceinline__ void add_scaled(float (&acc)[4], float (&tmp)[4], float s0, float s1) {
  acc[0] = fmaf(tmp[0], s0, acc[0]);
  acc[1] = fmaf(tmp[1], s1, acc[1]);
  acc[2] = fmaf(tmp[2], s0, acc[2]);
  acc[3] = fmaf(tmp[3], s1, acc[3]);
#pragma unroll
  for (int i = 0; i < 4; ++i) tmp[i] = 0.f;
}

__device__ __forceinline__ float scale_at(const Fp8Weight& w, int row, int kc) {
  return __ldg(scale_row(w, row) + kc / w.block_cols);
}

// The block's end: the warps' sums (and squares) meet in shared memory; warp 0 holds the tile's
// C fragment (rows r, r + 8; columns 2c, 2c + 1) and stores it.
template <bool NORM, bool GATED, Act A, class O>
__device__ __forceinline__ void finish_tile(float (&acc)[4], float (&accu)[4], float (&ss)[2], O* __restrict__ out,
                                            int m, int n_out, int k, float eps, int col0, bool add_out) {
  constexpr int V = 4 + (GATED ? 4 : 0) + (NORM ? 2 : 0);
  __shared__ float part[kWarps - 1][V][32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  auto vals = [&](auto&& f) {
#pragma unroll
    for (int i = 0; i < 4; ++i) f(i, acc[i]);
    if constexpr (GATED) {
#pragma unroll
      for (int i = 0; i < 4; ++i) f(4 + i, accu[i]);
    }
    if constexpr (NORM) {
      f(V - 2, ss[0]);
      f(V - 1, ss[1]);
    }
  };
  if (warp > 0) vals([&](int i, float& v) { part[warp - 1][i][lane] = v; });
  __syncthreads();
  if (warp > 0) return;
#pragma unroll
  for (int w = 0; w < kWarps - 1; ++w) vals([&](int i, float& v) { v += part[w][i][lane]; });
  const int r = lane >> 2, c = lane & 3;
  float f[2] = {1.f, 1.f};
  if constexpr (NORM) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float t = ss[h];
      t += __shfl_xor_sync(0xffffffffu, t, 1);
      t += __shfl_xor_sync(0xffffffffu, t, 2);
      f[h] = rsqrtf(t / static_cast<float>(k) + eps);
    }
  }
  const int col = col0 + 2 * c;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int row = r + 8 * h;
    if (row >= m) continue;
    float v0 = acc[2 * h] * f[h], v1 = acc[2 * h + 1] * f[h];
    if constexpr (GATED) {
      v0 = activate<A>(v0) * (accu[2 * h] * f[h]);
      v1 = activate<A>(v1) * (accu[2 * h + 1] * f[h]);
    }
    O* o = out + (size_t)row * n_out + col;
    if (add_out) v0 += to_f(o[0]), v1 += to_f(o[1]);
    o[0] = from_f<O>(v0);
    o[1] = from_f<O>(v1);
  }
}

// K = 512 CPW: warp w takes chunks w + kWarps u, u < CPW, its weights and scales loaded before
// pdl_wait(). n: w's rows (GATED: 2I, the gate rows then the up rows); out has n (GATED: I) columns.
template <int CPW, bool NORM, bool GATED, Act A, class O>
__global__ void __launch_bounds__(kWarps * 32)
fp8_mma_kernel(const bf16* __restrict__ x, const bf16* __restrict__ g, float eps, Fp8Weight w, O* __restrict__ out,
               int m, int n, int k, bool add_out) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, r = lane >> 2, c = lane & 3;
  // This lane's B column (a row of w) and its two C columns (their rows' scales); n_out is a
  // multiple of 8 (fp8_mma_supported), so every tile is whole.
  const int n_out = GATED ? n / 2 : n, col0 = blockIdx.x * kCols;
  const int wrow = col0 + r, srow = col0 + 2 * c, srow1 = srow + 1;
  uint4 wq[CPW], uq[GATED ? CPW : 1];
  float sc[CPW][2], su[GATED ? CPW : 1][2];
#pragma unroll
  for (int u = 0; u < CPW; ++u) {
    const int kc = (warp + kWarps * u) * kChunk;
    wq[u] = __ldcs(reinterpret_cast<const uint4*>(w.q + (size_t)wrow * k + kc + 16 * c));
    sc[u][0] = scale_at(w, srow, kc);
    sc[u][1] = scale_at(w, srow1, kc);
    if constexpr (GATED) {
      uq[u] = __ldcs(reinterpret_cast<const uint4*>(w.q + (size_t)(n_out + wrow) * k + kc + 16 * c));
      su[u][0] = scale_at(w, n_out + srow, kc);
      su[u][1] = scale_at(w, n_out + srow1, kc);
    }
  }
  pdl_launch_dependents();
  pdl_wait();
  float acc[4] = {}, accu[4] = {}, tmp[4] = {}, tmpu[4] = {}, ss[2] = {};
#pragma unroll
  for (int u = 0; u < CPW; ++u) {
    const int kc = (warp + kWarps * u) * kChunk;
    chunk_mma<NORM, GATED>(x, g, m, k, kc + 16 * c, r, wq[u], uq[GATED ? u : 0], tmp, tmpu, ss);
    add_scaled(acc, tmp, sc[u][0], sc[u][1]);
    if constexpr (GATED) add_scaled(accu, tmpu, su[u][0], su[u][1]);
  }
  finish_tile<NORM, GATED, A>(acc, accu, ss, out, m, n_out, k, eps, col0, add_out);
}

// Any K that is a multiple of 64: the chunks walked in a loop after pdl_wait().
template <bool NORM, bool GATED, Act A, class O>
__global__ void __launch_bounds__(kWarps * 32)
fp8_mma_loop_kernel(const bf16* __restrict__ x, const bf16* __restrict__ g, float eps, Fp8Weight w,
                    O* __restrict__ out, int m, int n, int k, bool add_out) {
  pdl_launch_dependents();
  pdl_wait();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, r = lane >> 2, c = lane & 3;
  const int n_out = GATED ? n / 2 : n, col0 = blockIdx.x * kCols;
  const int wrow = col0 + r, srow = col0 + 2 * c, srow1 = srow + 1;  // as fp8_mma_kernel's
  float acc[4] = {}, accu[4] = {}, tmp[4] = {}, tmpu[4] = {}, ss[2] = {};
  for (int kc = warp * kChunk; kc < k; kc += kWarps * kChunk) {
    const uint4 wq = __ldcs(reinterpret_cast<const uint4*>(w.q + (size_t)wrow * k + kc + 16 * c));
    uint4 uq = wq;
    if constexpr (GATED) uq = __ldcs(reinterpret_cast<const uint4*>(w.q + (size_t)(n_out + wrow) * k + kc + 16 * c));
    chunk_mma<NORM, GATED>(x, g, m, k, kc + 16 * c, r, wq, uq, tmp, tmpu, ss);
    add_scaled(acc, tmp, scale_at(w, srow, kc), scale_at(w, srow1, kc));
    if constexpr (GATED) add_scaled(accu, tmpu, scale_at(w, n_out + srow, kc), scale_at(w, n_out + srow1, kc));
  }
  finish_tile<NORM, GATED, A>(acc, accu, ss, out, m, n_out, k, eps, col0, add_out);
}

template <bool NORM, bool GATED, Act A, class O>
void launch_mma(const void* x, const void* g, float eps, const Fp8Weight& w, O* out, int m, int n, int k, bool add,
                cudaStream_t s) {
  const int n_out = GATED ? n / 2 : n, blocks = n_out / kCols;
  const char* op = GATED ? "norm_linear_act (FP8 mma)" : NORM ? "norm_linear (FP8 mma)" : "linear (FP8 mma)";
  auto xp = static_cast<const bf16*>(x);
  auto gp = static_cast<const bf16*>(g);
  auto go = [&](auto kernel) { launch(op, kernel, blocks, kWarps * 32, 0, s, xp, gp, eps, w, out, m, n, k, add); };
  switch (k % (kWarps * kChunk) == 0 ? k / (kWarps * kChunk) : 0) {
    case 1: go(fp8_mma_kernel<1, NORM, GATED, A, O>); break;
    case 2: go(fp8_mma_kernel<2, NORM, GATED, A, O>); break;
    case 3: go(fp8_mma_kernel<3, NORM, GATED, A, O>); break;
    case 4: go(fp8_mma_kernel<4, NORM, GATED, A, O>); break;
    case 5: go(fp8_mma_kernel<5, NORM, GATED, A, O>); break;
    case 6: go(fp8_mma_kernel<6, NORM, GATED, A, O>); break;
    case 8: go(fp8_mma_kernel<8, NORM, GATED, A, O>); break;
    default: go(fp8_mma_loop_kernel<NORM, GATED, A, O>); break;
  }
}

}  // namespace

bool fp8_mma_supported(const void* x, const Fp8Weight& w, const void* out, int m, int n, int k) {
  const bool scales = w.scale_cols == 1 || w.block_cols % kChunk == 0;
  return m >= 1 && m <= kMaxM && n % kCols == 0 && k % kChunk == 0 && scales && aligned16(x) && aligned16(w.q) &&
         reinterpret_cast<uintptr_t>(out) % 8 == 0;
}

void launch_fp8_mma(const void* x, const Fp8Weight& w, void* out, DType out_t, int m, int n, int k, bool accumulate,
                    cudaStream_t s) {
  if (out_t == DType::f32)
    launch_mma<false, false, Act::silu>(x, nullptr, 0.f, w, static_cast<float*>(out), m, n, k, accumulate, s);
  else
    launch_mma<false, false, Act::silu>(x, nullptr, 0.f, w, static_cast<bf16*>(out), m, n, k, accumulate, s);
}

void launch_fp8_mma_norm(const void* x, const void* g, float eps, const Fp8Weight& w, void* out, int m, int n, int k,
                         cudaStream_t s) {
  launch_mma<true, false, Act::silu>(x, g, eps, w, static_cast<bf16*>(out), m, n, k, false, s);
}

void launch_fp8_mma_norm_act(const void* x, const void* g, float eps, const Fp8Weight& w, void* out, int m, int n,
                             int k, Act act, cudaStream_t s) {
  if (act == Act::silu)
    launch_mma<true, true, Act::silu>(x, g, eps, w, static_cast<bf16*>(out), m, n, k, false, s);
  else
    launch_mma<true, true, Act::gelu_tanh>(x, g, eps, w, static_cast<bf16*>(out), m, n, k, false, s);
}

}  // namespace nanovllm::cuda
