// RMSNorm (the model's final norm, and the decoder's norms before the projections when they are not
// folded into them): one block per row. The row stays in registers between the sum of squares and
// the scaling, so each element is read once. ADD (rms_norm_add, Gemma's post-attention and
// post-feedforward norms): the normalised row is added into `out` (the residual stream) in float32
// instead of replacing it, one kernel and one rounding.
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
      T* o = out + (size_t)row * hidden + i * 8;
#pragma unroll
      for (int j = 0; j < 8; ++j) v[k][j] = v[k][j] * inv * wv[j];
      if constexpr (ADD) {
        float r[8];
        load8(o, r);
#pragma unroll
        for (int j = 0; j < 8; ++j) v[k][j] += r[j];
      }
      store8(o, v[k]);
    }
  }
}

// Any width or alignment: two passes over the row.
template <class T, class W, bool ADD>
__global__ void rms_norm_scalar_kernel(const T* x, const W* __restrict__ w, T* out, int hidden, float eps) {
  pdl_launch_dependents();
  pdl_wait();
  const size_t base = (size_t)blockIdx.x * hidden;
  const float inv = block_row_inv_rms(x + base, hidden, eps);
  for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
    const float y = to_f(x[base + i]) * inv * to_f(w[i]);
    out[base + i] = from_f<T>(ADD ? to_f(out[base + i]) + y : y);
  }
}

template <class T, class W, bool ADD>
void launch_typed(const void* x, const void* w, void* out, int rows, int hidden, float eps, cudaStream_t s) {
  const bool vec = hidden % 8 == 0 && hidden / 8 <= kThreads * kMaxVecs &&
                   (sizeof(T) == 2 ? aligned16(x) && aligned16(out) : aligned32(x) && aligned32(out)) &&
                   (sizeof(W) == 2 ? aligned16(w) : aligned32(w));
  auto xp = static_cast<const T*>(x);
  auto wp = static_cast<const W*>(w);
  auto op = static_cast<T*>(out);
  const char* name = ADD ? "rms_norm_add" : "rms_norm";
  if (vec) launch(name, rms_norm_vec_kernel<T, W, ADD>, rows, kThreads, 0, s, xp, wp, op, hidden, eps);
  else launch(name, rms_norm_scalar_kernel<T, W, ADD>, rows, 256, 0, s, xp, wp, op, hidden, eps);
}

template <bool ADD>
void launch_norm(const void* x, const void* w, void* out, DType act, DType wt, int rows, int hidden, float eps,
                 cudaStream_t s) {
  if (rows == 0) return;
  if (act == DType::bf16 && wt == DType::bf16) launch_typed<bf16, bf16, ADD>(x, w, out, rows, hidden, eps, s);
  else if (act == DType::bf16 && wt == DType::f32) launch_typed<bf16, float, ADD>(x, w, out, rows, hidden, eps, s);
  else if (act == DType::f32 && wt == DType::f32) launch_typed<float, float, ADD>(x, w, out, rows, hidden, eps, s);
  else if (act == DType::f32 && wt == DType::bf16) launch_typed<float, bf16, ADD>(x, w, out, rows, hidden, eps, s);
  else
    throw std::invalid_argument(std::string(ADD ? "rms_norm_add" : "rms_norm") + ": unsupported dtypes " +
                                dtype_name(act) + " / " + dtype_name(wt) + " (CUDA takes F32 or BF16)");
}

}  // namespace

void launch_rms_norm(const void* x, const void* w, void* out, DType act, DType wt, int rows, int hidden, float eps,
                     cudaStream_t s) {
  launch_norm<false>(x, w, out, act, wt, rows, hidden, eps, s);
}

void launch_rms_norm_add(const void* x, const void* w, void* residual, DType act, DType wt, int rows, int hidden,
                         float eps, cudaStream_t s) {
  launch_norm<true>(x, w, residual, act, wt, rows, hidden, eps, s);
}

}  // namespace nanovllm::cuda
