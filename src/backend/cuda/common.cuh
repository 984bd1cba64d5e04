// Device helpers shared by the kernels: bf16/f32 loads and stores of 8 elements (16-byte
// bf16 vectors), and warp reductions.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>
#include <utility>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels.h"

namespace nanovllm::cuda {

using bf16 = __nv_bfloat16;

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(bf16 x) { return __bfloat162float(x); }
template <class T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ bf16 from_f<bf16>(float x) { return __float2bfloat16_rn(x); }

// 8 consecutive elements at p (16-byte aligned for bf16, 32-byte for f32) to floats and back.
__device__ __forceinline__ void load8(const bf16* p, float (&v)[8]) {
  uint4 u = *reinterpret_cast<const uint4*>(p);
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&u);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    float2 f = __bfloat1622float2(h[i]);
    v[2 * i] = f.x;
    v[2 * i + 1] = f.y;
  }
}
__device__ __forceinline__ void load8(const float* p, float (&v)[8]) {
  float4 a = reinterpret_cast<const float4*>(p)[0], b = reinterpret_cast<const float4*>(p)[1];
  v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w; v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
}
__device__ __forceinline__ void store8(bf16* p, const float (&v)[8]) {
  uint4 u;
  __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&u);
#pragma unroll
  for (int i = 0; i < 4; ++i) h[i] = __floats2bfloat162_rn(v[2 * i], v[2 * i + 1]);
  *reinterpret_cast<uint4*>(p) = u;
}
__device__ __forceinline__ void store8(float* p, const float (&v)[8]) {
  reinterpret_cast<float4*>(p)[0] = make_float4(v[0], v[1], v[2], v[3]);
  reinterpret_cast<float4*>(p)[1] = make_float4(v[4], v[5], v[6], v[7]);
}

// ---- FP8 KV-cache elements (backend.h's PagedKV: stored = x / scale, read = stored * scale) ----
// The cache's element type: bf16, or fp8 e4m3 / e5m2 (one byte, __nv_fp8_storage_t).
struct e4m3 { __nv_fp8_storage_t x; };
struct e5m2 { __nv_fp8_storage_t x; };
template <class C> constexpr __nv_fp8_interpretation_t fp8_kind = __NV_E4M3;
template <> constexpr __nv_fp8_interpretation_t fp8_kind<e5m2> = __NV_E5M2;
template <class C> constexpr bool is_fp8_kv = sizeof(C) == 1;

// Two FP8 values (the low byte first) to an f16 pair, exactly (every e4m3 and e5m2 value is a half).
template <class C>
__device__ __forceinline__ uint32_t fp8x2_to_half2_bits(uint16_t two) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(two), fp8_kind<C>);
  return static_cast<uint32_t>(h.x) | (static_cast<uint32_t>(h.y) << 16);
}
template <class C>
__device__ __forceinline__ float2 fp8x2_to_float2(uint16_t two) {
  const uint32_t b = fp8x2_to_half2_bits<C>(two);
  return __half22float2(*reinterpret_cast<const __half2*>(&b));
}
// x rounded to nearest even into the cache's element type, saturating (FP8: __NV_SATFINITE).
template <class C> __device__ __forceinline__ C to_cache(float x);
template <> __device__ __forceinline__ bf16 to_cache<bf16>(float x) { return __float2bfloat16_rn(x); }
template <> __device__ __forceinline__ e4m3 to_cache<e4m3>(float x) {
  return {__nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3)};
}
template <> __device__ __forceinline__ e5m2 to_cache<e5m2>(float x) {
  return {__nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E5M2)};
}
// The raw vector holding 8 cache elements (16 bytes of bf16, 8 of FP8), and its 8 values as floats.
template <class C> using Vec8 = std::conditional_t<is_fp8_kv<C>, uint2, uint4>;
template <class C>
__device__ __forceinline__ void unpack8(const Vec8<C>& u, float (&v)[8]) {
  if constexpr (is_fp8_kv<C>) {
    const uint16_t* p = reinterpret_cast<const uint16_t*>(&u);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 f = fp8x2_to_float2<C>(p[i]);
      v[2 * i] = f.x;
      v[2 * i + 1] = f.y;
    }
  } else {
    load8(reinterpret_cast<const bf16*>(&u), v);
  }
}

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}
__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
__device__ __forceinline__ float block_sum(float x) {
  __shared__ float part[32];
  __shared__ float total;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  x = warp_sum(x);
  if (lane == 0) part[warp] = x;
  __syncthreads();
  if (warp == 0) {
    float y = lane < (int)(blockDim.x >> 5) ? part[lane] : 0.f;
    y = warp_sum(y);
    if (lane == 0) total = y;
  }
  __syncthreads();
  return total;
}

// rsqrt(mean(row[0, n)^2) + eps) over the whole block: every thread must call it and gets the
// result. 16-byte loads when n % 8 == 0 and the row is 16-byte aligned.
template <class T>
__device__ __forceinline__ float block_row_inv_rms(const T* __restrict__ row, int n, float eps) {
  float ss = 0.f;
  if (n % 8 == 0 && (reinterpret_cast<uintptr_t>(row) & 15u) == 0) {
    for (int i = threadIdx.x * 8; i < n; i += blockDim.x * 8) {
      float v[8];
      load8(row + i, v);
#pragma unroll
      for (int j = 0; j < 8; ++j) ss += v[j] * v[j];
    }
  } else {
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      const float v = to_f(row[i]);
      ss += v * v;
    }
  }
  return rsqrtf(block_sum(ss) / n + eps);
}

// Programmatic dependent launch (Hopper). launch() lets a kernel start while the one before it on
// the stream is still finishing, so launch latency and prologues overlap the previous kernel's
// tail: inside a decode graph of ~280 small kernels that is most of the batch-1 step. The rule
// that keeps it correct: every kernel launched this way calls pdl_wait() before it reads anything
// an earlier kernel wrote or writes anything an earlier kernel reads; only constant data (weights)
// may be touched before it. pdl_launch_dependents() lets the next kernel begin launching.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// BackendOptions::pdl = false (NANOVLLM_PDL=0, for measurements) turns the overlap off through
// set_pdl_enabled (kernels.h); kernels still call pdl_wait(), which then returns at once.
extern bool pdl_on;  // launch_settings.cu
inline bool pdl_enabled() { return pdl_on; }

// Launches `kernel` on `s` with programmatic stream serialization allowed; throws naming `op`.
template <class... Params, class... Args>
void launch(const char* op, void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t s,
            Args&&... args) {
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = pdl_enabled() ? 1 : 0;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  check(cudaLaunchKernelEx(&cfg, kernel, static_cast<Params>(std::forward<Args>(args))...), op, "kernel launch");
}

// Multiprocessors of the current device (asked once).
inline int num_sms() {
  static const int n = [] {
    int dev = 0, sms = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
      sms = 0;
    cudaGetLastError();
    return sms > 0 ? sms : 132;
  }();
  return n;
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }
inline bool aligned32(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 31u) == 0; }

// The gated MLP's activations (act_mul, and the skinny GEMM's gated variant).
__device__ __forceinline__ float silu(float g) { return g / (1.f + __expf(-g)); }
// torch's gelu(approximate="tanh"); tanhf, not a fast approximation: the CPU oracle uses std::tanh.
__device__ __forceinline__ float gelu_tanh(float g) {
  constexpr float kSqrt2OverPi = 0.7978845608028654f;
  return 0.5f * g * (1.f + tanhf(kSqrt2OverPi * (g + 0.044715f * g * g * g)));
}
template <Act A>
__device__ __forceinline__ float activate(float g) {
  if constexpr (A == Act::silu) return silu(g);
  else return gelu_tanh(g);
}

}  // namespace nanovllm::cuda
