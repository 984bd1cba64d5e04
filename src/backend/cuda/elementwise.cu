// Row gathers (embedding lookup, picking the last token's hidden row) and SiLU x mul: memory-bound
// kernels with 16-byte accesses where the row width and alignment allow.
#include <algorithm>
#include <stdexcept>
#include <string>

#include "backend/cuda/common.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels.h"

namespace nanovllm::cuda {
namespace {

// Same dtype: copy 16-byte words (or bytes when misaligned). One block per output row.
template <class V>
__global__ void gather_copy_kernel(const V* __restrict__ src, const int32_t* __restrict__ idx, V* __restrict__ out,
                                   int words, int src_rows) {
  pdl_launch_dependents();
  pdl_wait();
  const int r = blockIdx.x;
  const int i = idx[r];
  V* o = out + (size_t)r * words;
  if (i < 0 || i >= src_rows) {
    for (int c = threadIdx.x; c < words; c += blockDim.x) o[c] = V{};
    return;
  }
  const V* in = src + (size_t)i * words;
  for (int c = threadIdx.x; c < words; c += blockDim.x) o[c] = in[c];
}

template <class S, class D>
__global__ void gather_convert_kernel(const S* __restrict__ src, const int32_t* __restrict__ idx, D* __restrict__ out,
                                      int cols, int src_rows) {
  pdl_launch_dependents();
  pdl_wait();
  const int r = blockIdx.x;
  const int i = idx[r];
  const bool ok = i >= 0 && i < src_rows;
  for (int c = threadIdx.x; c < cols; c += blockDim.x)
    out[(size_t)r * cols + c] = from_f<D>(ok ? to_f(src[(size_t)i * cols + c]) : 0.f);
}

__device__ __forceinline__ float silu(float g) { return g / (1.f + __expf(-g)); }

// Blocks (column chunk, row): a block's threads walk its row's columns, 8 at a time with 16-byte
// accesses when vec. A decoder norm folded into the gate/up projection (FoldedNorm) is finished
// here: the block first sums the row's residual for its factor, which scales gate and up.
template <class T, bool VEC>
__global__ void silu_mul_kernel(const T* __restrict__ x, const T* __restrict__ rms_rows, int hidden, float rms_eps,
                                T* __restrict__ out, int rows, int inter) {
  pdl_launch_dependents();
  pdl_wait();
  constexpr int E = VEC ? 8 : 1;
  for (int r = blockIdx.y; r < rows; r += gridDim.y) {
    const float f = rms_rows ? block_row_inv_rms(rms_rows + (size_t)r * hidden, hidden, rms_eps) : 1.f;
    const T* gate = x + (size_t)r * 2 * inter;
    const T* up = gate + inter;
    T* o = out + (size_t)r * inter;
    for (int c = (blockIdx.x * blockDim.x + threadIdx.x) * E; c < inter; c += gridDim.x * blockDim.x * E) {
      if constexpr (VEC) {
        float g[8], u[8];
        load8(gate + c, g);
        load8(up + c, u);
#pragma unroll
        for (int j = 0; j < 8; ++j) g[j] = silu(g[j] * f) * (u[j] * f);
        store8(o + c, g);
      } else {
        o[c] = from_f<T>(silu(to_f(gate[c]) * f) * (to_f(up[c]) * f));
      }
    }
  }
}

template <class T>
__global__ void scale_columns_kernel(T* __restrict__ w, const float* __restrict__ scale, size_t total, int cols) {
  pdl_launch_dependents();
  pdl_wait();
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x)
    w[i] = from_f<T>(to_f(w[i]) * scale[i % cols]);
}

}  // namespace

void launch_scale_columns(void* w, DType t, const float* scale, int64_t rows, int cols, cudaStream_t s) {
  const size_t total = (size_t)rows * cols;
  if (total == 0) return;
  const int grid = (int)std::min<size_t>((total + 255) / 256, (size_t)num_sms() * 8);
  if (t == DType::bf16)
    launch("scale_columns", scale_columns_kernel<bf16>, grid, 256, 0, s, static_cast<bf16*>(w), scale, total, cols);
  else if (t == DType::f32)
    launch("scale_columns", scale_columns_kernel<float>, grid, 256, 0, s, static_cast<float*>(w), scale, total, cols);
  else
    throw std::invalid_argument(std::string("scale_columns: unsupported dtype ") + dtype_name(t));
}

void launch_gather_rows(const void* src, DType src_t, const int32_t* idx, void* out, DType out_t, int rows, int cols,
                        int src_rows, cudaStream_t s) {
  if (rows == 0 || cols == 0) return;
  const char* op = "gather_rows";
  if (src_t == out_t) {
    const size_t bytes = (size_t)cols * dtype_size(src_t);
    if (bytes % 16 == 0 && aligned16(src) && aligned16(out))
      launch(op, gather_copy_kernel<uint4>, rows, 128, 0, s, static_cast<const uint4*>(src), idx,
             static_cast<uint4*>(out), (int)(bytes / 16), src_rows);
    else
      launch(op, gather_copy_kernel<uint8_t>, rows, 256, 0, s, static_cast<const uint8_t*>(src), idx,
             static_cast<uint8_t*>(out), (int)bytes, src_rows);
  } else if (src_t == DType::bf16 && out_t == DType::f32) {
    launch(op, gather_convert_kernel<bf16, float>, rows, 256, 0, s, static_cast<const bf16*>(src), idx,
           static_cast<float*>(out), cols, src_rows);
  } else if (src_t == DType::f32 && out_t == DType::bf16) {
    launch(op, gather_convert_kernel<float, bf16>, rows, 256, 0, s, static_cast<const float*>(src), idx,
           static_cast<bf16*>(out), cols, src_rows);
  } else {
    throw std::invalid_argument(std::string("gather_rows/embedding: unsupported dtypes ") + dtype_name(src_t) +
                                " -> " + dtype_name(out_t));
  }
}

void launch_silu_mul(const void* x, const RowRms& rms, void* out, DType t, int rows, int inter, cudaStream_t s) {
  if (rows == 0 || inter == 0) return;
  const char* op = "silu_mul";
  constexpr int kThreads = 256;
  const bool vec = inter % 8 == 0 && aligned16(x) && aligned16(out);
  const dim3 grid((inter / (vec ? 8 : 1) + kThreads - 1) / kThreads, std::min(rows, 65535));
  if (t == DType::bf16) {
    auto k = vec ? silu_mul_kernel<bf16, true> : silu_mul_kernel<bf16, false>;
    launch(op, k, grid, kThreads, 0, s, static_cast<const bf16*>(x), static_cast<const bf16*>(rms.rows), rms.hidden,
           rms.eps, static_cast<bf16*>(out), rows, inter);
  } else if (t == DType::f32) {
    auto k = vec ? silu_mul_kernel<float, true> : silu_mul_kernel<float, false>;
    launch(op, k, grid, kThreads, 0, s, static_cast<const float*>(x), static_cast<const float*>(rms.rows), rms.hidden,
           rms.eps, static_cast<float*>(out), rows, inter);
  } else {
    throw std::invalid_argument(std::string("silu_mul: unsupported dtype ") + dtype_name(t));
  }
}

}  // namespace nanovllm::cuda
