// Row gathers (embedding lookup, scaled for Gemma; picking the last token's hidden row), the gated
// MLP's act(gate) x up (SiLU or tanh-GELU), a projection's bias add and logit soft-capping:
// memory-bound kernels with 16-byte accesses where the row width and alignment allow.
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
                                   int words, int src_rows, int idx_offset) {
  pdl_launch_dependents();
  pdl_wait();
  const int r = blockIdx.x;
  const int i = idx[r] - idx_offset;
  V* o = out + (size_t)r * words;
  if (i < 0 || i >= src_rows) {
    for (int c = threadIdx.x; c < words; c += blockDim.x) o[c] = V{};
    return;
  }
  const V* in = src + (size_t)i * words;
  for (int c = threadIdx.x; c < words; c += blockDim.x) o[c] = in[c];
}

// Converting (or scaling: the embedding times Gemma's sqrt(hidden)) copy of the picked rows, in float32.
template <class S, class D>
__global__ void gather_convert_kernel(const S* __restrict__ src, const int32_t* __restrict__ idx, D* __restrict__ out,
                                      int cols, int src_rows, float scale, int idx_offset) {
  pdl_launch_dependents();
  pdl_wait();
  const int r = blockIdx.x;
  const int i = idx[r] - idx_offset;
  const bool ok = i >= 0 && i < src_rows;
  for (int c = threadIdx.x; c < cols; c += blockDim.x)
    out[(size_t)r * cols + c] = from_f<D>(ok ? to_f(src[(size_t)i * cols + c]) * scale : 0.f);
}

// Blocks (column chunk, row): a block's threads walk its row's columns, 8 at a time with 16-byte
// accesses when vec. A decoder norm folded into the gate/up projection (FoldedNorm) is finished
// here: the block first sums the row's residual for its factor, which scales gate and up. The
// activation is a template argument: the SiLU instantiation is the kernel as it was.
template <class T, bool VEC, Act A>
__global__ void act_mul_kernel(const T* __restrict__ x, const T* __restrict__ rms_rows, int hidden, float rms_eps,
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
        for (int j = 0; j < 8; ++j) g[j] = activate<A>(g[j] * f) * (u[j] * f);
        store8(o + c, g);
      } else {
        o[c] = from_f<T>(activate<A>(to_f(gate[c]) * f) * (to_f(up[c]) * f));
      }
    }
  }
}

// x[r, c] += bias[c]: blocks (column chunk, row), 8 columns a thread with 16-byte accesses when vec.
template <class T, class B, bool VEC>
__global__ void add_bias_kernel(T* __restrict__ x, const B* __restrict__ bias, int64_t rows, int cols) {
  pdl_launch_dependents();
  pdl_wait();
  constexpr int E = VEC ? 8 : 1;
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    T* row = x + (size_t)r * cols;
    for (int c = (blockIdx.x * blockDim.x + threadIdx.x) * E; c < cols; c += gridDim.x * blockDim.x * E) {
      if constexpr (VEC) {
        float v[8], b[8];
        load8(row + c, v);
        load8(bias + c, b);
#pragma unroll
        for (int j = 0; j < 8; ++j) v[j] += b[j];
        store8(row + c, v);
      } else {
        row[c] = from_f<T>(to_f(row[c]) + to_f(bias[c]));
      }
    }
  }
}

// x = cap * tanh(x / cap) over f32 logits (Gemma's final soft-capping).
__global__ void softcap_kernel(float* __restrict__ x, int64_t n, float cap, float inv_cap) {
  pdl_launch_dependents();
  pdl_wait();
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    x[i] = cap * tanhf(x[i] * inv_cap);
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
                        int src_rows, cudaStream_t s, float scale, int idx_offset) {
  if (rows == 0 || cols == 0) return;
  const char* op = "gather_rows";
  if (scale != 1.f) {  // the embedding times a factor: every element through float32
    if (src_t == DType::bf16 && out_t == DType::bf16)
      launch(op, gather_convert_kernel<bf16, bf16>, rows, 256, 0, s, static_cast<const bf16*>(src), idx,
             static_cast<bf16*>(out), cols, src_rows, scale, idx_offset);
    else if (src_t == DType::bf16 && out_t == DType::f32)
      launch(op, gather_convert_kernel<bf16, float>, rows, 256, 0, s, static_cast<const bf16*>(src), idx,
             static_cast<float*>(out), cols, src_rows, scale, idx_offset);
    else if (src_t == DType::f32 && out_t == DType::bf16)
      launch(op, gather_convert_kernel<float, bf16>, rows, 256, 0, s, static_cast<const float*>(src), idx,
             static_cast<bf16*>(out), cols, src_rows, scale, idx_offset);
    else if (src_t == DType::f32 && out_t == DType::f32)
      launch(op, gather_convert_kernel<float, float>, rows, 256, 0, s, static_cast<const float*>(src), idx,
             static_cast<float*>(out), cols, src_rows, scale, idx_offset);
    else
      throw std::invalid_argument(std::string("embedding: unsupported dtypes ") + dtype_name(src_t) + " -> " +
                                  dtype_name(out_t));
    return;
  }
  if (src_t == out_t) {
    const size_t bytes = (size_t)cols * dtype_size(src_t);
    if (bytes % 16 == 0 && aligned16(src) && aligned16(out))
      launch(op, gather_copy_kernel<uint4>, rows, 128, 0, s, static_cast<const uint4*>(src), idx,
             static_cast<uint4*>(out), (int)(bytes / 16), src_rows, idx_offset);
    else
      launch(op, gather_copy_kernel<uint8_t>, rows, 256, 0, s, static_cast<const uint8_t*>(src), idx,
             static_cast<uint8_t*>(out), (int)bytes, src_rows, idx_offset);
  } else if (src_t == DType::bf16 && out_t == DType::f32) {
    launch(op, gather_convert_kernel<bf16, float>, rows, 256, 0, s, static_cast<const bf16*>(src), idx,
           static_cast<float*>(out), cols, src_rows, 1.f, idx_offset);
  } else if (src_t == DType::f32 && out_t == DType::bf16) {
    launch(op, gather_convert_kernel<float, bf16>, rows, 256, 0, s, static_cast<const float*>(src), idx,
           static_cast<bf16*>(out), cols, src_rows, 1.f, idx_offset);
  } else {
    throw std::invalid_argument(std::string("gather_rows/embedding: unsupported dtypes ") + dtype_name(src_t) +
                                " -> " + dtype_name(out_t));
  }
}

template <class T, Act A>
void launch_act_typed(const void* x, const RowRms& rms, void* out, int rows, int inter, cudaStream_t s) {
  constexpr int kThreads = 256;
  const bool vec = inter % 8 == 0 && aligned16(x) && aligned16(out);  // load8/store8 need 16 bytes for f32 too
  const dim3 grid((inter / (vec ? 8 : 1) + kThreads - 1) / kThreads, std::min(rows, 65535));
  auto k = vec ? act_mul_kernel<T, true, A> : act_mul_kernel<T, false, A>;
  launch("act_mul", k, grid, kThreads, 0, s, static_cast<const T*>(x), static_cast<const T*>(rms.rows), rms.hidden,
         rms.eps, static_cast<T*>(out), rows, inter);
}

void launch_act_mul(const void* x, const RowRms& rms, Act act, void* out, DType t, int rows, int inter,
                    cudaStream_t s) {
  if (rows == 0 || inter == 0) return;
  if (t == DType::bf16) {
    if (act == Act::silu) launch_act_typed<bf16, Act::silu>(x, rms, out, rows, inter, s);
    else launch_act_typed<bf16, Act::gelu_tanh>(x, rms, out, rows, inter, s);
  } else if (t == DType::f32) {
    if (act == Act::silu) launch_act_typed<float, Act::silu>(x, rms, out, rows, inter, s);
    else launch_act_typed<float, Act::gelu_tanh>(x, rms, out, rows, inter, s);
  } else {
    throw std::invalid_argument(std::string("act_mul: unsupported dtype ") + dtype_name(t));
  }
}

template <class T, class B>
void launch_bias_typed(void* x, const void* bias, int64_t rows, int cols, cudaStream_t s) {
  constexpr int kThreads = 256;
  const bool vec = cols % 8 == 0 && aligned16(x) && aligned16(bias);
  const dim3 grid((cols / (vec ? 8 : 1) + kThreads - 1) / kThreads, (unsigned)std::min<int64_t>(rows, 65535));
  auto k = vec ? add_bias_kernel<T, B, true> : add_bias_kernel<T, B, false>;
  launch("add_bias", k, grid, kThreads, 0, s, static_cast<T*>(x), static_cast<const B*>(bias), rows, cols);
}

void launch_add_bias(void* x, DType t, const void* bias, DType bt, int64_t rows, int cols, cudaStream_t s) {
  if (rows == 0 || cols == 0) return;
  if (t == DType::bf16 && bt == DType::bf16) launch_bias_typed<bf16, bf16>(x, bias, rows, cols, s);
  else if (t == DType::bf16 && bt == DType::f32) launch_bias_typed<bf16, float>(x, bias, rows, cols, s);
  else if (t == DType::f32 && bt == DType::f32) launch_bias_typed<float, float>(x, bias, rows, cols, s);
  else if (t == DType::f32 && bt == DType::bf16) launch_bias_typed<float, bf16>(x, bias, rows, cols, s);
  else
    throw std::invalid_argument(std::string("add_bias: unsupported dtypes ") + dtype_name(t) + " / " +
                                dtype_name(bt) + " (CUDA takes F32 or BF16)");
}

void launch_softcap(float* x, int64_t n, float cap, cudaStream_t s) {
  if (n == 0) return;
  const int grid = (int)std::min<int64_t>((n + 255) / 256, (int64_t)num_sms() * 8);
  launch("softcap", softcap_kernel, grid, 256, 0, s, x, n, cap, 1.f / cap);
}

}  // namespace nanovllm::cuda
