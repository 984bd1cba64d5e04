// FP8 checkpoints' matrices on the host: loading with scales, packing rows, sharding columns.
#include "model/fp8_weights.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "backend/fp8_host.h"
#include "backend/half.h"

namespace nanovllm {

Tensor HostFp8::tensor() {
  Tensor t(q.data(), dtype, {rows, cols});
  t.scale = scale.data();
  t.scale_block[0] = block[0], t.scale_block[1] = block[1];
  return t;
}

namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

HostFp8 load_fp8_matrix(const Checkpoint& ckpt, const QuantConfig& quant, const std::string& name, int64_t N,
                        int64_t K) {
  const Tensor w = ckpt.get(name, {N, K});
  if (w.dtype != quant.weight_dtype)
    throw std::runtime_error("tensor '" + name + "' has dtype " + dtype_name(w.dtype) + "; config.json's " +
                             quant_method_name(quant.method) + " quantization_config says " +
                             dtype_name(quant.weight_dtype));
  const std::string module = name.size() > 7 && name.ends_with(".weight") ? name.substr(0, name.size() - 7) : name;
  std::string scale_name;
  for (const std::string& s : quant.scale_names)
    if (ckpt.contains(module + "." + s)) {
      scale_name = module + "." + s;
      break;
    }
  if (scale_name.empty())
    throw std::runtime_error("tensor '" + name + "' is " + dtype_name(w.dtype) + " but the checkpoint has no '" +
                             module + "." + quant.scale_names.front() + "' (its dequantization scales)");
  const Tensor s = ckpt.get(scale_name);
  if (s.dtype != DType::f32 && s.dtype != DType::bf16 && s.dtype != DType::f16)
    throw std::runtime_error("tensor '" + scale_name + "' has dtype " + dtype_name(s.dtype) +
                             "; scales must be F32, BF16 or F16");
  HostFp8 m;
  m.dtype = w.dtype, m.rows = N, m.cols = K;
  const int64_t n = s.numel();
  std::string expected;
  // The strategy's own shape first: a matrix within one 128 x 128 block has one block scale
  // ([1, 1]), which must stay a block scale to pack with its neighbours' blocks.
  if (quant.strategy == ScaleStrategy::block && s.ndim == 2 && s.shape[0] == ceil_div(N, quant.block_rows) &&
      s.shape[1] == ceil_div(K, quant.block_cols)) {
    m.block[0] = quant.block_rows, m.block[1] = quant.block_cols;
  } else if (n == 1 && s.ndim <= 2) {  // one scale: per tensor (any strategy may write it so)
    m.block[0] = static_cast<int32_t>(N), m.block[1] = static_cast<int32_t>(K);
  } else if (quant.strategy == ScaleStrategy::channel) {
    expected = std::string("[") + std::to_string(N) + ", 1]";
    if ((s.ndim == 2 && s.shape[0] == N && s.shape[1] == 1) || (s.ndim == 1 && s.shape[0] == N))
      m.block[0] = 1, m.block[1] = static_cast<int32_t>(K);
  } else if (quant.strategy == ScaleStrategy::block) {
    const int64_t sr = ceil_div(N, quant.block_rows), sc = ceil_div(K, quant.block_cols);
    expected = std::string("[") + std::to_string(sr) + ", " + std::to_string(sc) + "]";
    if (s.ndim == 2 && s.shape[0] == sr && s.shape[1] == sc)
      m.block[0] = quant.block_rows, m.block[1] = quant.block_cols;
  } else {
    expected = "[] or [1]";
  }
  if (m.block[0] == 0)
    throw std::runtime_error("tensor '" + scale_name + "' has shape " + s.shape_str() + "; expected " + expected +
                             " for '" + name + "' " + w.shape_str() + " under config.json's quantization_config");
  m.q.resize(static_cast<size_t>(N * K));
  std::memcpy(m.q.data(), w.data, m.q.size());
  m.scale.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    m.scale[i] = load_as_f32(s.data, s.dtype, i);
    if (!(m.scale[i] > 0.0f) || !std::isfinite(m.scale[i]))
      throw std::runtime_error("tensor '" + scale_name + "' holds " + std::to_string(m.scale[i]) + " at " +
                               std::to_string(i) + "; scales must be positive and finite");
  }
  return m;
}

HostFp8 pack_fp8_rows(const std::vector<Fp8Part>& parts) {
  HostFp8 out;
  const HostFp8& p0 = *parts.front().matrix;
  out.dtype = p0.dtype, out.cols = p0.cols;
  for (const Fp8Part& p : parts) out.rows += p.rows;
  // Kept blocks: every part has p0's block, starts on a block row in the packed matrix and in its own.
  const int64_t br = p0.block[0], bc = p0.block[1];
  bool keep = true;
  int64_t start = 0;
  for (const Fp8Part& p : parts) {
    const HostFp8& m = *p.matrix;
    if (m.dtype != out.dtype || m.cols != out.cols || m.block[1] != bc) {
      auto desc = [](const Fp8Part& q) {
        return "'" + q.name + "' (" + dtype_name(q.matrix->dtype) + ", " + std::to_string(q.matrix->cols) +
               " columns, scale blocks " + std::to_string(q.matrix->block[0]) + " x " +
               std::to_string(q.matrix->block[1]) + ")";
      };
      throw std::runtime_error("FP8 matrices packed into one projection differ in dtype, columns or scale block "
                               "columns: " + desc(parts.front()) + " and " + desc(p));
    }
    keep = keep && m.block[0] == br && start % br == 0 && p.first % br == 0;
    start += p.rows;
  }
  out.block[0] = keep ? static_cast<int32_t>(br) : 1;
  out.block[1] = static_cast<int32_t>(bc);
  if (keep && parts.size() == 1 && parts[0].first == 0 && parts[0].rows == p0.rows && br == p0.rows)
    out.block[0] = static_cast<int32_t>(out.rows);  // a whole per-tensor matrix stays per tensor
  const int64_t sc = ceil_div(out.cols, bc);
  out.q.resize(static_cast<size_t>(out.rows * out.cols));
  out.scale.resize(static_cast<size_t>(ceil_div(out.rows, out.block[0]) * sc));
  int64_t row = 0;
  for (const Fp8Part& p : parts) {
    const HostFp8& m = *p.matrix;
    std::memcpy(out.q.data() + row * out.cols, m.q.data() + p.first * m.cols, static_cast<size_t>(p.rows * m.cols));
    const int64_t mbr = m.block[0];
    if (keep) {
      for (int64_t b = 0; b < ceil_div(p.rows, mbr); ++b)
        std::memcpy(out.scale.data() + (row / mbr + b) * sc, m.scale.data() + (p.first / mbr + b) * sc,
                    static_cast<size_t>(sc) * sizeof(float));
    } else {
      for (int64_t r = 0; r < p.rows; ++r)
        std::memcpy(out.scale.data() + (row + r) * sc, m.scale.data() + ((p.first + r) / mbr) * sc,
                    static_cast<size_t>(sc) * sizeof(float));
    }
    row += p.rows;
  }
  return out;
}

HostFp8 fp8_columns(const HostFp8& m, const std::string& name, int64_t first, int64_t cols) {
  const int64_t bc = m.block[1], sc = ceil_div(m.cols, bc);
  HostFp8 out;
  out.dtype = m.dtype, out.rows = m.rows, out.cols = cols;
  out.block[0] = m.block[0];
  int64_t first_block = 0, blocks = 1;
  if (sc == 1) {  // one scale across each row: any columns keep it
    out.block[1] = static_cast<int32_t>(cols);
  } else {
    if (first % bc)
      throw std::runtime_error("tensor '" + name + "': this rank's columns [" + std::to_string(first) + ", " +
                               std::to_string(first + cols) + ") do not start on a " + std::to_string(bc) +
                               "-column scale block; choose a tensor_parallel_size that splits it on block boundaries");
    out.block[1] = static_cast<int32_t>(bc);
    first_block = first / bc, blocks = ceil_div(cols, bc);
  }
  out.q.resize(static_cast<size_t>(out.rows * cols));
  for (int64_t r = 0; r < out.rows; ++r)
    std::memcpy(out.q.data() + r * cols, m.q.data() + r * m.cols + first, static_cast<size_t>(cols));
  const int64_t srows = ceil_div(m.rows, m.block[0]);
  out.scale.resize(static_cast<size_t>(srows * blocks));
  for (int64_t r = 0; r < srows; ++r)
    for (int64_t b = 0; b < blocks; ++b) out.scale[r * blocks + b] = m.scale[r * sc + first_block + b];
  return out;
}

HostFp8 quantize_fp8_rows(const float* w, int64_t R, int64_t K) {
  HostFp8 out;
  out.dtype = DType::f8e4m3, out.rows = R, out.cols = K;
  out.block[0] = 1, out.block[1] = static_cast<int32_t>(K);
  out.q.resize(static_cast<size_t>(R * K));
  out.scale.resize(static_cast<size_t>(R));
  for (int64_t r = 0; r < R; ++r) quantize_row_fp8_e4m3(w + r * K, K, out.q.data() + r * K, &out.scale[r]);
  return out;
}

}  // namespace nanovllm
