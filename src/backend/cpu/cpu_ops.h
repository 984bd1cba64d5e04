// The CPU backend's kernels as plain functions over raw f32 pointers, so the backend class stays
// a thin validating shell and the benchmarks can time each GEMM path on its own.
#pragma once
#include <cstdint>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/thread_pool.h"

namespace nanovllm::cpu {

// out[M, N] = x[M, K] @ w[N, K]^T (accumulate: out +=), picking the faster path for M (see
// docs/cpu-backend.md).
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

// Pins OpenBLAS to the calling thread: our pool supplies the parallelism (docs/cpu-backend.md).
void blas_single_thread();

// Paged attention exactly as AttentionMetadata documents it; q/out f32 [T, Hq, D], caches NHD.
// Prefill chunks of at least kMinTiledQuery tokens go through OpenBLAS in tiles of kQueryTile
// queries; decode and shorter chunks through the per-token kernel.
inline constexpr int kMinTiledQuery = 8, kQueryTile = 32;
void paged_attention(const Tensor& q, const PagedKV& cache, const AttentionMetadata& meta, const AttentionOptions& opts,
                     const Tensor& out, ThreadPool& pool);

// Backend::qk_norm_rope_store on f32 tensors. in_scale: nullptr, or a factor per token that
// scales its qkv row first (a folded RMSNorm's).
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
