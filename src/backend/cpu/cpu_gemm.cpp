// CPU GEMM (out = x @ w^T): OpenBLAS for many rows, our AVX2 kernel for few rows (decode), where
// the work is a weight-streaming GEMV and OpenBLAS's packing and thread start-up cost dominate.
#include <cblas.h>
#include <immintrin.h>

#include <algorithm>
#include <atomic>

#include "backend/cpu/cpu_ops.h"

namespace nanovllm::cpu {
namespace {

inline float hsum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}

// R rows of x against 2 rows of w: each weight vector is loaded once and used R times, and the
// 2R independent FMA chains hide the FMA latency. acc: add to out instead of overwriting it.
template <int R>
inline void dot_block(const float* x, int64_t ldx, const float* w0, const float* w1, int64_t K, float* out,
                      int64_t ldo, bool two, bool acc) {
  __m256 a0[R], a1[R];
  for (int r = 0; r < R; ++r) a0[r] = a1[r] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    __m256 v0 = _mm256_loadu_ps(w0 + k);
    __m256 v1 = _mm256_loadu_ps(w1 + k);
    for (int r = 0; r < R; ++r) {
      __m256 xv = _mm256_loadu_ps(x + r * ldx + k);
      a0[r] = _mm256_fmadd_ps(xv, v0, a0[r]);
      a1[r] = _mm256_fmadd_ps(xv, v1, a1[r]);
    }
  }
  for (int r = 0; r < R; ++r) {
    float s0 = hsum(a0[r]), s1 = hsum(a1[r]);
    for (int64_t kk = k; kk < K; ++kk) {
      s0 += x[r * ldx + kk] * w0[kk];
      s1 += x[r * ldx + kk] * w1[kk];
    }
    out[r * ldo] = acc ? out[r * ldo] + s0 : s0;
    if (two) out[r * ldo + 1] = acc ? out[r * ldo + 1] + s1 : s1;
  }
}

void openblas_threads(int n) {
  // openblas_set_num_threads is not free; remember the last value.
  static std::atomic<int> current{-1};
  if (current.load(std::memory_order_relaxed) != n) {
    openblas_set_num_threads(n);
    current.store(n, std::memory_order_relaxed);
  }
}

}  // namespace

void blas_single_thread() { openblas_threads(1); }

void gemm_avx2(const float* x, const float* w, float* out, int64_t M, int64_t N, int64_t K, ThreadPool& pool,
               bool accumulate) {
  const int64_t pairs = (N + 1) / 2;
  // At least ~64K multiply-adds per thread, or the fork-join costs more than it saves.
  const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(1, 2 * M * K));
  pool.parallel_for(pairs, grain, [&](int64_t p_begin, int64_t p_end) {
    for (int64_t p = p_begin; p < p_end; ++p) {
      const int64_t n = 2 * p;
      const bool two = n + 1 < N;
      const float* w0 = w + n * K;
      const float* w1 = two ? w0 + K : w0;
      int64_t m = 0;
      for (; m + 4 <= M; m += 4) dot_block<4>(x + m * K, K, w0, w1, K, out + m * N + n, N, two, accumulate);
      for (; m < M; ++m) dot_block<1>(x + m * K, K, w0, w1, K, out + m * N + n, N, two, accumulate);
    }
  });
}

void gemm_blas(const float* x, const float* w, float* out, int64_t M, int64_t N, int64_t K, ThreadPool& pool,
               bool accumulate) {
  openblas_threads(1);
  // Column slices of at least 64 outputs (OpenBLAS's kernels want wide panels) and ~256K
  // multiply-adds, below which a fork-join costs more than the second thread saves.
  const int64_t grain = std::max<int64_t>(64, 262144 / std::max<int64_t>(1, M * K));
  pool.parallel_for(N, grain, [&](int64_t n0, int64_t n1) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(M), static_cast<blasint>(n1 - n0),
                static_cast<blasint>(K), 1.0f, x, static_cast<blasint>(K), w + n0 * K, static_cast<blasint>(K),
                accumulate ? 1.0f : 0.0f,
                out + n0, static_cast<blasint>(N));
  });
}

void gemm(const float* x, const float* w, float* out, int64_t M, int64_t N, int64_t K, ThreadPool& pool,
          bool accumulate) {
  if (M <= 0 || N <= 0) return;
  if (K == 0) {
    if (!accumulate) std::fill(out, out + M * N, 0.0f);
    return;
  }
  if (M <= kSmallGemmRows) gemm_avx2(x, w, out, M, N, K, pool, accumulate);
  else gemm_blas(x, w, out, M, N, K, pool, accumulate);
}

}  // namespace nanovllm::cpu
