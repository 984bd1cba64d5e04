// The CPU backend's kernels as plain functions over raw f32 pointers, so the backend class stays
// a thin validating shell and the benchmarks can time each GEMM path on its own.
#pragma once
#include <cstdint>

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

struct AttentionShape {
  int num_q_heads, num_kv_heads, head_dim, block_size, num_blocks;
};
// Paged attention exactly as AttentionMetadata documents it; q/out [T, Hq, D], caches NHD.
// Prefill chunks of at least kMinTiledQuery tokens go through OpenBLAS in tiles of kQueryTile
// queries; decode and shorter chunks through the per-token kernel.
inline constexpr int kMinTiledQuery = 8, kQueryTile = 32;
void paged_attention(const float* q, const float* k_cache, const float* v_cache, const AttentionMetadata& meta,
                     const AttentionShape& s, float scale, float* out, ThreadPool& pool);

// in_scale: nullptr, or a factor per token that scales its qkv row first (a folded RMSNorm).
void qk_norm_rope_store(const float* qkv, const float* in_scale, const float* q_norm_w, const float* k_norm_w,
                        const int32_t* positions, const float* cos_sin, float eps, int64_t T, int Hq, int Hkv, int D,
                        const int32_t* slot_mapping, float* k_cache, float* v_cache, float* q_out, ThreadPool& pool);

void sample(const float* logits, int64_t B, int64_t V, const float* temperatures, const int64_t* keys,
            const int64_t* counters, int32_t* out, ThreadPool& pool);

}  // namespace nanovllm::cpu
