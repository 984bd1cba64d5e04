// RMSNorm and nano-vLLM's fused residual add + RMSNorm: one block per row. The row stays in
// registers between the sum of squares and the scaling, so each element is read once and the
// norm is taken of the float sum (as nano-vLLM does) rather than of its rounded bf16 copy.
#include <stdexcept>
#include <string>

#include "backend/cuda/common.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels.h"

namespace nanovllm::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kMaxVecs = 8;  // vectors of 8 per thread: rows up to 8192 wide stay in registers

template <class T, class W, bool ADD>
__global__ void rms_norm_vec_kernel(const T* x, T* __restrict__ residual,
                                    const W* __restrict__ w, T* out, int hidden, float eps) {
  pdl_launch_dependents();
  pdl_wait();
  const int row = blockIdx.x, nvec = hidden / 8;
  const T* xr = x + (size_t)row * hidden;
  T* rr = ADD ? residual + (size_t)row * hidden : nullptr;
  float v[kMaxVecs][8];
  float ss = 0.f;
#pragma unroll
  for (int k = 0; k < kMaxVecs; ++k) {
    const int i = threadIdx.x + k * kThreads;
    if (i < nvec) {
      load8(xr + i * 8, v[k]);
      if constexpr (ADD) {
        float r[8];
        load8(rr + i * 8, r);
#pragma unroll
        for (int j = 0; j < 8; ++j) v[k][j] += r[j];
        store8(rr + i * 8, v[k]);
      }
#pragma unroll
      for (int j = 0; j < 8; ++j) ss += v[k][j] * v[k][j];
    }
  }
  const float inv = rsqrtf(block_sum(ss) / hidden + eps);
#pragma unroll
  for (int k = 0; k < kMaxVecs; ++k) {
    const int i = threadIdx.x + k * kThreads;
    if (i < nvec) {
      float wv[8];
      load8(w + i * 8, wv);
#pragma unroll
      for (int j = 0; j < 8; ++j) v[k][j] = v[k][j] * inv * wv[j];
      store8(out + (size_t)row * hidden + i * 8, v[k]);
    }
  }
}

// Any width or alignment: two passes over the row (the second reads the stored sum).
template <class T, class W, bool ADD>
__global__ void rms_norm_scalar_kernel(const T* __restrict__ x, T* residual, const W* __restrict__ w,
                                       T* out, int hidden, float eps) {
  pdl_launch_dependents();
  pdl_wait();
  const size_t base = (size_t)blockIdx.x * hidden;
  float ss = 0.f;
  for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
    float v = to_f(x[base + i]);
    if constexpr (ADD) {
      v += to_f(residual[base + i]);
      residual[base + i] = from_f<T>(v);
    }
    ss += v * v;
  }
  const float inv = rsqrtf(block_sum(ss) / hidden + eps);
  for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
    float v = ADD ? to_f(residual[base + i]) : to_f(x[base + i]);
    out[base + i] = from_f<T>(v * inv * to_f(w[i]));
  }
}

template <class T, class W>
void launch_typed(const void* x, void* residual, const void* w, void* out, int rows, int hidden, float eps,
                  cudaStream_t s) {
  const bool add = residual != nullptr;
  const bool vec = hidden % 8 == 0 && hidden / 8 <= kThreads * kMaxVecs &&
                   (sizeof(T) == 2 ? aligned16(x) && aligned16(out) && (!add || aligned16(residual))
                                   : aligned32(x) && aligned32(out) && (!add || aligned32(residual))) &&
                   (sizeof(W) == 2 ? aligned16(w) : aligned32(w));
  auto xp = static_cast<const T*>(x);
  auto rp = static_cast<T*>(residual);
  auto wp = static_cast<const W*>(w);
  auto op = static_cast<T*>(out);
  const char* name = add ? "add_rms_norm" : "rms_norm";
  if (vec) {
    if (add) launch(name, rms_norm_vec_kernel<T, W, true>, rows, kThreads, 0, s, xp, rp, wp, op, hidden, eps);
    else launch(name, rms_norm_vec_kernel<T, W, false>, rows, kThreads, 0, s, xp, rp, wp, op, hidden, eps);
  } else {
    if (add) launch(name, rms_norm_scalar_kernel<T, W, true>, rows, 256, 0, s, xp, rp, wp, op, hidden, eps);
    else launch(name, rms_norm_scalar_kernel<T, W, false>, rows, 256, 0, s, xp, rp, wp, op, hidden, eps);
  }
}

}  // namespace

void launch_rms_norm(const void* x, void* residual, const void* w, void* out, DType act, DType wt, int rows,
                     int hidden, float eps, cudaStream_t s) {
  const char* op = residual ? "add_rms_norm" : "rms_norm";
  if (rows == 0) return;
  if (act == DType::bf16 && wt == DType::bf16) launch_typed<bf16, bf16>(x, residual, w, out, rows, hidden, eps, s);
  else if (act == DType::bf16 && wt == DType::f32) launch_typed<bf16, float>(x, residual, w, out, rows, hidden, eps, s);
  else if (act == DType::f32 && wt == DType::f32) launch_typed<float, float>(x, residual, w, out, rows, hidden, eps, s);
  else if (act == DType::f32 && wt == DType::bf16) launch_typed<float, bf16>(x, residual, w, out, rows, hidden, eps, s);
  else
    throw std::invalid_argument(std::string(op) + ": unsupported dtypes " + dtype_name(act) + " / " + dtype_name(wt) +
                                " (CUDA takes F32 or BF16)");
}

}  // namespace nanovllm::cuda
