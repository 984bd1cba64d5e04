// FP8 conversions around the tensor-core GEMM (fp8_gemm.cpp): bf16 activations quantized to e4m3
// per row or per row and 128-column group (the scale computed from the data each call, amax / 448,
// as vLLM and DeepSeek do), and an FP8 weight dequantized to bf16 (the fallback where cuBLASLt has
// no FP8 algorithm or scale mode for a weight).
#include <cuda_fp8.h>

#include <algorithm>

#include "backend/cuda/common.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels.h"

namespace nanovllm::cuda {
namespace {

constexpr int kRowsPerBlock = 8;  // one warp a row
constexpr float kE4m3Max = 448.f;

// The scale of a group whose largest magnitude is amax: amax / 448, so the largest value maps to
// e4m3's largest finite one; 1 for a group of zeros (or one so small that amax / 448 is 0).
__device__ __forceinline__ float group_scale(float amax) {
  const float s = amax / kE4m3Max;
  return s > 0.f ? s : 1.f;
}

// 8 values divided by s, rounded to nearest even and saturated to +-448 (satfinite), as 8 bytes.
__device__ __forceinline__ uint2 quantize8(const float (&v)[8], float s) {
  uint32_t w[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    uint32_t word = 0;
#pragma unroll
    for (int p = 0; p < 2; ++p) {
      const float2 f = make_float2(v[4 * h + 2 * p] / s, v[4 * h + 2 * p + 1] / s);
      word |= static_cast<uint32_t>(__nv_cvt_float2_to_fp8x2(f, __NV_SATFINITE, __NV_E4M3)) << (16 * p);
    }
    w[h] = word;
  }
  return make_uint2(w[0], w[1]);
}

__device__ __forceinline__ float amax8(const float (&v)[8]) {
  float a = 0.f;
#pragma unroll
  for (int j = 0; j < 8; ++j) a = fmaxf(a, fabsf(v[j]));
  return a;
}

// One warp per row, 8 values a lane: the row's amax, then its values quantized (the second read
// of the row comes from L1/L2).
__global__ void __launch_bounds__(kRowsPerBlock * 32)
quantize_rows_kernel(const bf16* __restrict__ x, int m, int k, uint8_t* __restrict__ q, float* __restrict__ scale) {
  pdl_launch_dependents();
  pdl_wait();
  const int r = blockIdx.x * kRowsPerBlock + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (r >= m) return;
  const bf16* xr = x + (size_t)r * k;
  float a = 0.f;
  for (int c = lane * 8; c < k; c += 32 * 8) {
    float v[8];
    load8(xr + c, v);
    a = fmaxf(a, amax8(v));
  }
  const float s = group_scale(warp_max(a));
  uint8_t* qr = q + (size_t)r * k;
  for (int c = lane * 8; c < k; c += 32 * 8) {
    float v[8];
    load8(xr + c, v);
    *reinterpret_cast<uint2*>(qr + c) = quantize8(v, s);
  }
  if (lane == 0) scale[r] = s;
}

// One warp per row; each half-warp (16 lanes x 8 values) takes one 128-column group, the halves
// groups g and g + 1. The last group may be partial (k % 128 != 0): lanes past k count 0.
__global__ void __launch_bounds__(kRowsPerBlock * 32)
quantize_groups_kernel(const bf16* __restrict__ x, int m, int k, uint8_t* __restrict__ q,
                       float* __restrict__ scale) {
  pdl_launch_dependents();
  pdl_wait();
  const int r = blockIdx.x * kRowsPerBlock + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (r >= m) return;  // whole warps leave: the shuffles below have all 32 lanes
  const int groups = (k + 127) / 128, half = lane >> 4, hl = lane & 15;
  const bf16* xr = x + (size_t)r * k;
  uint8_t* qr = q + (size_t)r * k;
  for (int g0 = 0; g0 < groups; g0 += 2) {
    const int g = g0 + half, c = g * 128 + hl * 8;
    const bool valid = g < groups && c < k;
    float v[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    if (valid) load8(xr + c, v);
    float a = amax8(v);
#pragma unroll
    for (int o = 8; o > 0; o >>= 1) a = fmaxf(a, __shfl_xor_sync(0xffffffffu, a, o));  // within the half
    const float s = group_scale(a);
    if (valid) *reinterpret_cast<uint2*>(qr + c) = quantize8(v, s);
    if (hl == 0 && g < groups) scale[(size_t)g * m + r] = s;
  }
}

__global__ void dequantize_kernel(Fp8Weight w, int n, int k, bf16* __restrict__ out) {
  pdl_launch_dependents();
  pdl_wait();
  const size_t total = (size_t)n * k;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
    const int r = static_cast<int>(i / k), c = static_cast<int>(i % k);
    const float v = __half2float(__half(__nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(w.q[i]), __NV_E4M3)));
    out[i] = __float2bfloat16_rn(v * w.scale[(size_t)(r / w.block_rows) * w.scale_cols + c / w.block_cols]);
  }
}

}  // namespace

void launch_quantize_fp8_rows(const void* x, int m, int k, int group, uint8_t* q, float* scale, cudaStream_t s) {
  if (k % 16 != 0 || !aligned16(x) || !aligned16(q) || (group != 0 && group != 128))
    throw std::invalid_argument("linear (FP8): activation quantization needs 16-byte aligned rows with k % 16 == 0 "
                                "and a group of 0 or 128 (got k " + std::to_string(k) + ", group " +
                                std::to_string(group) + ")");
  if (m <= 0) return;
  const int blocks = (m + kRowsPerBlock - 1) / kRowsPerBlock;
  auto xp = static_cast<const bf16*>(x);
  if (group == 0)
    launch("linear (FP8 quantize rows)", quantize_rows_kernel, blocks, kRowsPerBlock * 32, 0, s, xp, m, k, q, scale);
  else
    launch("linear (FP8 quantize groups)", quantize_groups_kernel, blocks, kRowsPerBlock * 32, 0, s, xp, m, k, q,
           scale);
}

void launch_dequantize_fp8(const Fp8Weight& w, int n, int k, void* out_bf16, cudaStream_t s) {
  const size_t total = (size_t)n * k;
  if (total == 0) return;
  const int blocks = (int)std::min<size_t>((total + 255) / 256, (size_t)num_sms() * 16);
  launch("linear (FP8 dequantize fallback)", dequantize_kernel, blocks, 256, 0, s, w, n, k,
         static_cast<bf16*>(out_bf16));
}

}  // namespace nanovllm::cuda
