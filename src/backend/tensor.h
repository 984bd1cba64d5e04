// Tensor: a non-owning view of contiguous row-major memory on one device.
#pragma once
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "nanovllm/device.h"

namespace nanovllm {

// i8: an int8 weight matrix (the CPU's --quantization int8), rows of K int8 values each followed
// by kI8RowTail bytes: the row's f32 scale s (w[n, k] ~ s * q[n, k]) and the i32 sum of its q.
// Its shape is the stored one, [N, K + kI8RowTail], so rows() slices it like any matrix;
// weight_cols() gives K.
// f8e4m3, f8e5m2: OCP FP8 (e4m3 "fn": no infinities, max 448; e5m2: max 57344), for the FP8 KV
// cache (values stored divided by a per-layer scale, PagedKV) and FP8 weight matrices (values
// with block scales, Tensor::scale below).
enum class DType : uint8_t { f32, bf16, f16, i32, i64, i8, f8e4m3, f8e5m2 };
inline constexpr int64_t kI8RowTail = 8;

inline size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: case DType::i32: return 4;
    case DType::bf16: case DType::f16: return 2;
    case DType::i64: return 8;
    case DType::i8: case DType::f8e4m3: case DType::f8e5m2: return 1;
  }
  return 0;
}
inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "F32";
    case DType::bf16: return "BF16";
    case DType::f16: return "F16";
    case DType::i32: return "I32";
    case DType::i64: return "I64";
    case DType::i8: return "I8";
    case DType::f8e4m3: return "F8_E4M3";
    case DType::f8e5m2: return "F8_E5M2";
  }
  return "?";
}

struct Tensor {
  static constexpr int kMaxDims = 4;
  void* data = nullptr;
  DType dtype = DType::f32;
  DeviceKind device = DeviceKind::cpu;
  int ndim = 0;
  int64_t shape[kMaxDims] = {0, 0, 0, 0};
  // An FP8 weight matrix [N, K] (f8e4m3/f8e5m2) carries its dequantization scales, f32 in the
  // same memory as data: w[n, k] = q[n, k] * scale[(n / scale_block[0]) * scale_cols() + k / scale_block[1]]
  // (blocks of scale_block[0] rows by scale_block[1] columns, the last ones partial: per-tensor is
  // {N, K}, per output channel {1, K}, DeepSeek/Qwen3-FP8 {128, 128}). scale == nullptr: no scales
  // (an FP8 KV cache, whose per-layer scales PagedKV carries).
  float* scale = nullptr;
  int32_t scale_block[2] = {0, 0};

  Tensor() = default;
  Tensor(void* p, DType t, std::initializer_list<int64_t> dims, DeviceKind dev = DeviceKind::cpu)
      : data(p), dtype(t), device(dev) {
    for (int64_t d : dims) shape[ndim++] = d;
  }

  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < ndim; ++i) n *= shape[i];
    return n;
  }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype); }
  int64_t size(int i) const { return shape[i < 0 ? ndim + i : i]; }
  bool defined() const { return data != nullptr; }
  template <class T> T* ptr() const { return static_cast<T*>(data); }

  // Same memory, new shape (same number of elements).
  Tensor view(std::initializer_list<int64_t> dims) const {
    Tensor t = *this;
    t.ndim = 0;
    for (int64_t d : dims) t.shape[t.ndim++] = d;
    return t;
  }
  // Rows [begin, end) along the first dimension. A scaled FP8 matrix is sliced at a multiple of
  // its scale block's rows only (its scales follow; the callers keep to that).
  Tensor rows(int64_t begin, int64_t end) const {
    Tensor t = *this;
    t.shape[0] = end - begin;
    t.data = static_cast<char*>(data) + begin * (nbytes() / (shape[0] ? shape[0] : 1));
    if (scale && scale_block[0] > 0) t.scale = scale + (begin / scale_block[0]) * scale_cols();
    return t;
  }
  // Scales per row of scale blocks: ceil(K / scale_block[1]) (0 without scales).
  int64_t scale_cols() const {
    return scale && scale_block[1] > 0 ? (shape[ndim - 1] + scale_block[1] - 1) / scale_block[1] : 0;
  }
  // Rows of scale blocks: ceil(N / scale_block[0]) (0 without scales).
  int64_t scale_rows() const {
    if (!scale || scale_block[0] <= 0) return 0;
    int64_t n = 1;
    for (int i = 0; i + 1 < ndim; ++i) n *= shape[i];
    return (n + scale_block[0] - 1) / scale_block[0];
  }
  std::string shape_str() const {
    std::string s = "[";
    for (int i = 0; i < ndim; ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
  }
};

// A tensor seen as a matrix [rows, last dim]: the ops that work row by row take these. Rows are
// the product of every dim but the last (no division, so a zero-width last dim is fine); a
// scalar is one row of one column, so rows * cols == numel() always.
inline int64_t cols_of(const Tensor& t) { return t.ndim ? t.shape[t.ndim - 1] : 1; }
inline int64_t rows_of(const Tensor& t) {
  int64_t r = 1;
  for (int i = 0; i + 1 < t.ndim; ++i) r *= t.shape[i];
  return r;
}
// The K of a weight matrix [N, K] (x @ w^T takes x [T, K]): its last dim, less an int8 row's tail.
inline int64_t weight_cols(const Tensor& w) { return cols_of(w) - (w.dtype == DType::i8 ? kI8RowTail : 0); }
inline bool is_fp8(DType t) { return t == DType::f8e4m3 || t == DType::f8e5m2; }

}  // namespace nanovllm
