// The CPU backend's kernels as plain functions over raw f32 pointers, so the backend class stays
// a thin validating shell and the benchmarks can time each GEMM path on its own.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/cpu_isa.h"
#include "backend/cpu/thread_pool.h"

namespace nanovllm::cpu {

// A weight matrix [N, K] as the GEMMs read it: f32, bf16 or f16 rows of K (row stride K), or i8
// rows of K + kI8RowTail bytes (tensor.h).
struct WeightView {
  const void* data;
  DType dtype;
  int64_t N, K;
};
inline WeightView weight_view(const Tensor& w) { return {w.data, w.dtype, rows_of(w), weight_cols(w)}; }

// out[M, N] = x[M, K] @ w[N, K]^T (accumulate: out +=), picking the faster path for M and the
// weight's dtype (see docs/cpu-backend.md): f32 weights as below; half and int8 weights through
// our kernels (GEMV, weights converted in registers) for few rows, else OpenBLAS over blocks of
// weights converted to f32.
void gemm(const float* x, const WeightView& w, float* out, int64_t M, ThreadPool& pool, Isa isa,
          bool accumulate = false);
void gemm(const float* x, const float* w, float* out, int64_t M, int64_t N, int64_t K, ThreadPool& pool,
          bool accumulate = false);
// The two paths gemm chooses between, exposed for the benchmark. gemm_blas runs single-threaded
// OpenBLAS on column slices, one per pool thread, so only one set of threads ever exists.
void gemm_blas(const float* x, const float* w, float* out, int64_t M, int64_t N, int64_t K, ThreadPool& pool,
               bool accumulate = false);
void gemm_avx2(const float* x, const float* w, float* out, int64_t M, int64_t N, int64_t K, ThreadPool& pool,
               bool accumulate = false);
// At and below this many rows gemm uses the AVX2 kernel: faster than OpenBLAS at 1-2 rows (both
// weight-bandwidth bound), a tie at 4, slower beyond (docs/cpu-backend.md has the numbers).
inline constexpr int64_t kSmallGemmRows = 2;

// bf16/f16 weights: gemv_half for up to kHalfGemvRows rows (cpu_gemv_half.cpp), else
// gemm_panels. int8 weights: gemv_int8 for up to kInt8GemvRows rows (cpu_gemv_int8.cpp). At 16
// rows the GEMV's forward is 1.6x faster than the panels' (a 256-token prefill 1.4x slower):
// docs/cpu-backend.md, beside llama.cpp.
inline constexpr int64_t kHalfGemvRows = 16, kInt8GemvRows = 16;
void gemv_half(const float* x, const WeightView& w, float* out, int64_t M, ThreadPool& pool, Isa isa, bool accumulate);
void gemv_int8(const float* x, const WeightView& w, float* out, int64_t M, ThreadPool& pool, Isa isa, bool accumulate);
// OpenBLAS over blocks of w converted to f32 (any weight dtype), one pool thread per column slice.
void gemm_panels(const float* x, const WeightView& w, float* out, int64_t M, ThreadPool& pool, bool accumulate);
// Rows [n0, n1) of w as f32 into dst [(n1 - n0), K] (an int8 row times its scale).
void weight_rows_to_f32(const WeightView& w, int64_t n0, int64_t n1, float* dst);
// Rows [n0, n1), columns [k0, k1) of w as f32 into dst [(n1 - n0), (k1 - k0)].
void weight_block_to_f32(const WeightView& w, int64_t n0, int64_t n1, int64_t k0, int64_t k1, float* dst);
// Quantizes rows [R, K] of src (f32/bf16/f16) into int8 rows (tensor.h's layout) at dst.
void quantize_rows_int8(const void* src, DType src_dtype, int64_t R, int64_t K, int8_t* dst, ThreadPool& pool);

// out[i] = e^x[i] and ln x[i], by cpu_math.h's exp8 (the softmax's and SiLU's) and log8 (the
// sampler's); n any length.
void exp_rows(const float* x, float* out, int64_t n);
void log_rows(const float* x, float* out, int64_t n);

// Pins OpenBLAS to the calling thread: our pool supplies the parallelism (docs/cpu-backend.md).
void blas_single_thread();
// OpenBLAS's kernels re-picked by the CPU's features where OpenBLAS fell back to generic ones
// (a CPU model it does not know); once a process, before the first BLAS call. Returns the core
// in use, saying which it replaced.
std::string pick_blas_kernels();

// Paged attention exactly as AttentionMetadata documents it; q/out f32 [T, Hq, D], caches NHD
// in f32, bf16 or f16.
// Prefill chunks of at least kMinTiledQuery tokens go through OpenBLAS in tiles of kQueryTile
// queries; decode and shorter chunks through the per-token kernel.
inline constexpr int kMinTiledQuery = 8, kQueryTile = 32;
void paged_attention(const Tensor& q, const PagedKV& cache, const AttentionMetadata& meta, const AttentionOptions& opts,
                     const Tensor& out, ThreadPool& pool);

// Backend::qk_norm_rope_store on f32 tensors (the cache f32, bf16 or f16: k and v rounded to it
// on the store). in_scale: nullptr, or a factor per token that scales its qkv row first (a folded
// RMSNorm's).
void qk_norm_rope_store(const RopeStore& in, const float* in_scale, const PagedKV& cache, const Tensor& q_out,
                        ThreadPool& pool);

// The sampler (backend/sampling.h's order), on host memory; counts the tokens in batch.counts.
void sample(const float* logits, int64_t B, int64_t V, const SampleBatch& batch, int32_t* out, ThreadPool& pool);
// Steps 1-5 of one row: x = the processed logits (sparse adds, penalties), divided by the
// temperature when it is > 0. The reference the CUDA sampler and the tests use.
void process_row(const float* logits, int64_t V, const SamplingRow& r, const SampleBatch& batch, float* x);
// Steps 6-8 over processed x: the smallest value that survives min_p, top_k and top_p (every id
// with x >= it survives), or -inf when nothing is dropped. `ids` is scratch.
float survivor_threshold(const float* x, int64_t V, const SamplingRow& r, std::vector<int32_t>& ids);
// Backend::logprobs on host memory (log-softmax in double).
void logprobs(const float* logits, int64_t V, const int32_t* rows, int64_t R, const int32_t* ids, int num_top,
              LogprobsOut& out, ThreadPool& pool);
void reset_token_counts(const TokenCounts& counts, int row, const int32_t* prompt_ids, int64_t num_prompt,
                        const int32_t* output_ids, int64_t num_output);

}  // namespace nanovllm::cpu
