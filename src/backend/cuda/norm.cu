// RMSNorm (the model's final norm; the decoder's norms are folded into their projections): one
// block per row. The row stays in registers between the sum of squares and the scaling, so each
// element is read once.
#include <stdexcept>
#include <string>

#include "backend/cuda/common.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels.h"

namespace nanovllm::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kMaxVecs = 8;  // vectors of 8 per thread: rows up to 8192 wide stay in registers

template <class T, class W>
__global__ void rms_norm_vec_kernel(const T* x, const W* __restrict__ w, T* out, int hidden, float eps) {
  pdl_launch_dependents();
  pdl_wait();
  const int row = blockIdx.x, nvec = hidden / 8;
  const T* xr = x + (size_t)row * hidden;
  float v[kMaxVecs][8];
  float ss = 0.f;
#pragma unroll
  for (int k = 0; k < kMaxVecs; ++k) {
    const int i = threadIdx.x + k * kThreads;
    if (i < nvec) {
      load8(xr + i * 8, v[k]);
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

// Any width or alignment: two passes over the row.
template <class T, class W>
__global__ void rms_norm_scalar_kernel(const T* x, const W* __restrict__ w, T* out, int hidden, float eps) {
  pdl_launch_dependents();
  pdl_wait();
  const size_t base = (size_t)blockIdx.x * hidden;
  const float inv = block_row_inv_rms(x + base, hidden, eps);
  for (int i = threadIdx.x; i < hidden; i += blockDim.x) out[base + i] = from_f<T>(to_f(x[base + i]) * inv * to_f(w[i]));
}

template <class T, class W>
void launch_typed(const void* x, const void* w, void* out, int rows, int hidden, float eps, cudaStream_t s) {
  const bool vec = hidden % 8 == 0 && hidden / 8 <= kThreads * kMaxVecs &&
                   (sizeof(T) == 2 ? aligned16(x) && aligned16(out) : aligned32(x) && aligned32(out)) &&
                   (sizeof(W) == 2 ? aligned16(w) : aligned32(w));
  auto xp = static_cast<const T*>(x);
  auto wp = static_cast<const W*>(w);
  auto op = static_cast<T*>(out);
  if (vec) launch("rms_norm", rms_norm_vec_kernel<T, W>, rows, kThreads, 0, s, xp, wp, op, hidden, eps);
  else launch("rms_norm", rms_norm_scalar_kernel<T, W>, rows, 256, 0, s, xp, wp, op, hidden, eps);
}

}  // namespace

void launch_rms_norm(const void* x, const void* w, void* out, DType act, DType wt, int rows, int hidden, float eps,
                     cudaStream_t s) {
  if (rows == 0) return;
  if (act == DType::bf16 && wt == DType::bf16) launch_typed<bf16, bf16>(x, w, out, rows, hidden, eps, s);
  else if (act == DType::bf16 && wt == DType::f32) launch_typed<bf16, float>(x, w, out, rows, hidden, eps, s);
  else if (act == DType::f32 && wt == DType::f32) launch_typed<float, float>(x, w, out, rows, hidden, eps, s);
  else if (act == DType::f32 && wt == DType::bf16) launch_typed<float, bf16>(x, w, out, rows, hidden, eps, s);
  else
    throw std::invalid_argument(std::string("rms_norm: unsupported dtypes ") + dtype_name(act) + " / " +
                                dtype_name(wt) + " (CUDA takes F32 or BF16)");
}

}  // namespace nanovllm::cuda
