// Launchers for the CUDA backend's kernels: plain C++ declarations over raw device pointers, so
// the backend class compiles with the host compiler. Each launcher checks its launch.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "backend/sampling.h"
#include "backend/tensor.h"

namespace nanovllm::cuda {

// out = norm(x) * w over rows of `hidden`. act: dtype of x and out (f32 or bf16); wt: dtype of w.
void launch_rms_norm(const void* x, const void* w, void* out, DType act, DType wt, int rows, int hidden, float eps,
                     cudaStream_t s);

// residual += norm(x) * w over rows of `hidden` (rms_norm_add). act: dtype of x and residual; wt: dtype of w.
void launch_rms_norm_add(const void* x, const void* w, void* residual, DType act, DType wt, int rows, int hidden,
                         float eps, cudaStream_t s);

// out[r, :] = src[idx[r], :] * scale for r < rows (row of `cols` elements), converting dtype if
// needed (scale 1: a plain copy). Rows whose index is outside [0, src_rows) are written as zeros.
// Row r of out is row idx[r] - idx_offset of src, or zeros when that is outside [0, src_rows)
// (a shard of the vocabulary: idx_offset is its first id).
void launch_gather_rows(const void* src, DType src_t, const int32_t* idx, void* out, DType out_t,
                        int rows, int cols, int src_rows, cudaStream_t s, float scale = 1.f, int idx_offset = 0);

// x[r, :] += bias over rows x cols (x: t, bias: bt; each bf16 or f32).
void launch_add_bias(void* x, DType t, const void* bias, DType bt, int64_t rows, int cols, cudaStream_t s);

// x = cap * tanh(x / cap) over n floats.
void launch_softcap(float* x, int64_t n, float cap, cudaStream_t s);

// w[n, k] *= scale[k] over rows x cols (w bf16 or f32).
void launch_scale_columns(void* w, DType t, const float* scale, int64_t rows, int cols, cudaStream_t s);

// A folded RMSNorm's rows (see FoldedNorm in backend.h): row r of the op's input is first scaled
// by rsqrt(mean(rows[r, :hidden]^2) + eps). rows == nullptr: no scaling. Same dtype as the input.
struct RowRms {
  const void* rows;
  int hidden;
  float eps;
};

// The gate's activation (backend.h's Activation; this header stays free of backend.h for nvcc).
enum class Act { silu, gelu_tanh };
// out = act(x[:, :inter]) * x[:, inter:], x's rows scaled by `rms` first (Backend::act_mul)
void launch_act_mul(const void* x, const RowRms& rms, Act act, void* out, DType t, int rows, int inter,
                    cudaStream_t s);

// Per-head RMS norm of q and k, neox RoPE, q to q_out and k/v into the paged cache (see
// Backend::qk_norm_rope_store), qkv's rows scaled by `rms` first, then qkv_bias added (when not
// nullptr). Activations are bf16; the cache bf16 or FP8 (cache_t; FP8 stores k / k_scale and
// v / v_scale); norm weights bf16 or f32 (wt; both nullptr: no q/k norm); the bias bf16 or f32 (bias_t).
struct RopeStoreArgs {
  const void* qkv;
  RowRms rms;
  const void* qkv_bias;
  DType bias_t;
  const void *q_norm_w, *k_norm_w;
  DType wt;
  const int32_t* positions;
  const float* cos_sin;
  float eps;
  int tokens, num_q_heads, num_kv_heads, head_dim;
  const int32_t* slot_mapping;
  void *k_cache, *v_cache, *q_out;
  DType cache_t = DType::bf16;
  float k_scale = 1.f, v_scale = 1.f;
};
void launch_qk_norm_rope_store(const RopeStoreArgs& a, cudaStream_t s);

// Skinny GEMM for M <= 8 (bf16 x and w, bf16 or f32 out): out[M, N] = x[M, K] w[N, K]^T
// (accumulate: out +=).
bool gemv_supported(const void* x, const void* w, DType in_t, DType out_t, int64_t m, int64_t k);
void launch_gemv(const void* x, const void* w, void* out, DType out_t, int m, int n, int k, bool accumulate,
                 cudaStream_t s);
// The same with an RMSNorm of x's rows first (bf16 or f32 out): out[m, n] = (x[m] / rms(x[m]) * g)
// . w[n], the norm in float32 inside the kernel (norm_linear; f32 out: the final norm and lm_head).
void launch_gemv_norm(const void* x, const void* g, float eps, const void* w, void* out, DType out_t, int m, int n,
                      int k, cudaStream_t s);
// The MLP's gated input side in one kernel: out[m, j] = act(y[m, j]) * y[m, I + j], y = the above
// over the fused gate/up weight w [2I, K] (n = 2I, out [m, I] bf16); y is never rounded.
void launch_gemv_norm_act(const void* x, const void* g, float eps, const void* w, void* out, int m, int n, int k,
                          Act act, cudaStream_t s);

// A scaled FP8 (e4m3) weight matrix [n, k] on the device (backend.h's Tensor::scale):
// w[r, c] = q[r, c] * scale[(r / block_rows) * scale_cols + c / block_cols].
struct Fp8Weight {
  const uint8_t* q;
  const float* scale;
  int block_rows, block_cols, scale_cols;
};
// Skinny GEMM over FP8 weights for M <= 8 (gemv_fp8.cu): out[M, N] (+)= x[M, K] w^T with bf16 x,
// bf16 or f32 out, the weights dequantized in registers (no activation quantization), fp32 sums.
void launch_gemv_fp8(const void* x, const Fp8Weight& w, void* out, DType out_t, int m, int n, int k, bool accumulate,
                     cudaStream_t s);
// The same with an RMSNorm of x's rows first (bf16 norm weight g, bf16 out), as launch_gemv_norm.
void launch_gemv_fp8_norm(const void* x, const void* g, float eps, const Fp8Weight& w, void* out, int m, int n, int k,
                          cudaStream_t s);
// And the gated one, as launch_gemv_norm_act.
void launch_gemv_fp8_norm_act(const void* x, const void* g, float eps, const Fp8Weight& w, void* out, int m, int n,
                              int k, Act act, cudaStream_t s);
// The skinny GEMM over FP8 weights on tensor cores (gemv_fp8_mma.cu), for m <= 16 (the backend
// takes it from BackendOptions::fp8_mma rows, 2 by default): the same three ops and results, x read
// once a block of 8 columns. Whether it takes these operands: n output columns (the gated op's I)
// a multiple of 8, k of 64, scales per row or in blocks of a multiple of 64 columns, x and w
// 16-byte aligned, out 8-byte aligned.
bool fp8_mma_supported(const void* x, const Fp8Weight& w, const void* out, int m, int n, int k);
void launch_fp8_mma(const void* x, const Fp8Weight& w, void* out, DType out_t, int m, int n, int k, bool accumulate,
                    cudaStream_t s);
void launch_fp8_mma_norm(const void* x, const void* g, float eps, const Fp8Weight& w, void* out, int m, int n, int k,
                         cudaStream_t s);
void launch_fp8_mma_norm_act(const void* x, const void* g, float eps, const Fp8Weight& w, void* out, int m, int n,
                             int k, Act act, cudaStream_t s);
// Dynamic activation quantization for the FP8 tensor-core GEMM (fp8_quant.cu): x [m, k] bf16
// (16-byte aligned, k % 16 == 0) to e4m3 q [m, k] with s = amax / 448 (1 where amax is 0) and
// q = satfinite(x / s), per row (group == 0: scale[r], cuBLASLt's OUTER_VEC_32F) or per row and
// 128-column group (group == 128: scale[g * m + r], cuBLASLt's VEC128_32F layout, docs/cuda.md).
void launch_quantize_fp8_rows(const void* x, int m, int k, int group, uint8_t* q, float* scale, cudaStream_t s);
// out[r, c] = bf16(q[r, c] * scale of (r, c)) over w's n x k (the fallback: a bf16 copy for cuBLASLt's bf16 GEMM).
void launch_dequantize_fp8(const Fp8Weight& w, int n, int k, void* out_bf16, cudaStream_t s);

// Shapes and options shared by both attention kernels (AttentionOptions: window > 0 limits a query
// at position i to the keys at (i - window, i]; softcap > 0 caps scores at softcap * tanh(s / softcap)).
struct AttnShape {
  int num_q_heads, num_kv_heads, head_dim, block_size;
  float scale;
  int window = 0;
  float softcap = 0;
};

// What both attention kernels read: the paged cache (NHD, bf16 or FP8 with its per-layer scales;
// see backend.h) with the batch's block tables [num_seqs, max_num_blocks] and context lengths
// seqlens_k [num_seqs].
struct PagedKVArgs {
  const void *k, *v;
  DType cache_t;
  float k_scale, v_scale;
  const int32_t* block_tables;
  int max_num_blocks;
  const int32_t* seqlens_k;
  int num_seqs;
  AttnShape sh;
};

// Decode (one query token per sequence), split-KV: num_splits partitions of `partition` tokens
// per sequence, counted from the first key the query sees (0, or with a window its start), merged
// when num_splits > 1 (workspace: num_seqs * num_q_heads * num_splits * (head_dim + 2) floats: each
// split's unnormalised output rows, then their (max, sum) pairs).
// counters (num_seqs * num_kv_heads ints, zero, left zero) let the last block of each (sequence,
// kv head) merge in the same launch; nullptr: a second kernel merges.
struct DecodeSplits {
  int num_splits, partition;
  float* workspace;
  int* counters;
};
// rope (decode only): the step's qk_norm_rope_store done by the attention blocks (one launch fewer;
// the same bits), q then unused; it must be fusable.
void launch_attention_decode(const void* q, const PagedKVArgs& kv, const DecodeSplits& splits, void* out,
                             cudaStream_t s, const RopeStoreArgs* rope = nullptr);
// Whether launch_attention_decode can fuse this RoPE: one token a sequence, the same heads and
// cache, bf16 norm weights and bias (or none).
bool decode_rope_fusable(const RopeStoreArgs& rope, const PagedKVArgs& kv);

// Prefill over a variable-length batch whose K/V are already in the paged cache (prefix hits and
// chunked prefill included); causal within each sequence.
void launch_attention_prefill(const void* q, const PagedKVArgs& kv, const int32_t* cu_seqlens_q, int max_seqlen_q,
                              void* out, cudaStream_t s);

// Whether launches may overlap the kernel before them (programmatic dependent launch,
// common.cuh). The backend sets it from BackendOptions::pdl; one setting for the process, as the
// launch path that reads it has no backend to ask.
void set_pdl_enabled(bool on);

// The sampler (sampling.cu; backend/sampling.h's order) over logits [rows, vocab], with raw
// device pointers. scratch: sample_scratch_bytes(rows, vocab) bytes of device memory.
struct SampleArgs {
  const SamplingRow* rows;
  const int32_t* add_ids;
  const float* add_values;
  const int32_t* counts;       // TokenCounts::counts (nullptr when no row has penalties)
  const uint32_t* prompt_mask;
  int32_t* counts_rw;          // the same counts, where the sampled tokens are counted
  const int32_t* filtered_rows;
  int num_filtered;
  int max_filtered_top_k;   // SampleBatch's hint
  bool top_path = false;    // launch_sample's choice: the top-k path for every filtered row
};
size_t sample_scratch_bytes(int rows, int vocab);
void launch_sample(const float* logits, const SampleArgs& args, int rows, int vocab, void* scratch, int32_t* out,
                   cudaStream_t s);
// Backend::logprobs; num_top <= logprobs_max_top(). scratch: logprobs_scratch_bytes(num_rows, vocab, num_top).
int logprobs_max_top();
size_t logprobs_scratch_bytes(int rows, int vocab, int num_top);
void launch_logprobs(const float* logits, const int32_t* rows, const int32_t* ids, int num_rows, int vocab,
                     int num_top, void* scratch, float* token_lp, int32_t* ranks, int32_t* top_ids, float* top_lp,
                     cudaStream_t s);
// Backend::reset_token_counts for one row (counts, mask: that row's).
void launch_reset_token_counts(int32_t* counts, int32_t* mask, int vocab, const int32_t* prompt, int num_prompt,
                               const int32_t* output, int num_output, cudaStream_t s);

}  // namespace nanovllm::cuda
