// FP8 checkpoints' weight matrices on the host: each FP8 tensor with its scale tensor (the
// checkpoint's "<module>.weight_scale_inv" or ".weight_scale", w = q * scale), and the packed or
// sharded matrices DecoderModel uploads: q/k/v and gate/up rows of several tensors side by side,
// a row-parallel projection's columns.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "backend/tensor.h"
#include "model/hf_config.h"
#include "model/safetensors.h"

namespace nanovllm {

// A scaled FP8 matrix in host memory of its own (data and scales), viewed by tensor().
struct HostFp8 {
  std::vector<uint8_t> q;
  std::vector<float> scale;
  DType dtype = DType::f8e4m3;
  int64_t rows = 0, cols = 0;
  int32_t block[2] = {0, 0};
  // A host Tensor [rows, cols] over q with scale and scale_block set (valid while this lives).
  Tensor tensor();
};

// Checkpoint tensor `name` ("<module>.weight", FP8 [N, K]) with its scales, validated against
// quant's strategy: one per tensor ([] or [1]) is block {N, K}, per channel ([N, 1] or [N]) {1, K},
// blocks ([ceil(N / br), ceil(K / bc)]) {br, bc}. Throws naming the tensor, the scale tensor and
// the shapes on a missing or misshapen scale.
HostFp8 load_fp8_matrix(const Checkpoint& ckpt, const QuantConfig& quant, const std::string& name, int64_t N, int64_t K);

// Rows [first, first + rows) of each matrix, one after another. Scale blocks are kept where every
// part starts at a multiple of the block's rows (in the packed matrix and in its own), else the
// scales are replicated into per-row blocks {1, bc}: the same values, exactly.
struct Fp8Part {
  const HostFp8* matrix;
  int64_t first, rows;
  std::string name;  // the checkpoint tensor, for errors
};
HostFp8 pack_fp8_rows(const std::vector<Fp8Part>& parts);

// Columns [first, first + cols) of `m` (a row-parallel projection's shard): exact when the shard
// starts on a scale block's column boundary (or the rows have one scale each); else throws
// naming `name` and the shard.
HostFp8 fp8_columns(const HostFp8& m, const std::string& name, int64_t first, int64_t cols);

// Float rows w [R, K] quantized per row to f8e4m3 (block {1, K}; backend.h's upload_convert rule).
HostFp8 quantize_fp8_rows(const float* w, int64_t R, int64_t K);

}  // namespace nanovllm
