// CPU GEMM (out = x @ w^T): OpenBLAS for many rows, our kernels for few rows (decode), where the
// work is a weight-streaming GEMV and OpenBLAS's packing and thread start-up cost dominate. f32
// weights here; bf16/f16 and int8 weights in cpu_gemv_half.cpp and cpu_gemv_int8.cpp, or here in
// panels converted to f32 for OpenBLAS when there are many rows (prefill).
#include <cblas.h>
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "backend/cpu/cpu_convert.h"
#include "backend/cpu/cpu_ops.h"

// OpenBLAS's DYNAMIC_ARCH entry points (Debian's build exports them): weak, so a build of
// OpenBLAS for one fixed target, which lacks them, still links.
extern "C" {
void gotoblas_dynamic_init(void) __attribute__((weak));
void gotoblas_dynamic_quit(void) __attribute__((weak));
}

namespace nanovllm::cpu {
namespace {

// gemm_panels' blocks of converted weights: at most kPanelCols columns and rows, kPanelFloats in all.
constexpr int64_t kPanelCols = 1024, kPanelFloats = 1 << 20;

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

std::string pick_blas_kernels() {
  static std::once_flag once;
  static std::string picked;
  std::call_once(once, [] {
    // OpenBLAS picks its kernels by CPU model when it loads, and one that does not know the model
    // falls back to its generic SSE3 kernels ("Prescott"): Debian 12's 0.3.21 does so on Intel's
    // Emerald Rapids (family 6, model 207), where its sgemm then runs ~3x slower than its AVX-512
    // kernels (docs/cpu-backend.md). Such a fallback is re-picked here by the features the CPU
    // has, as OPENBLAS_CORETYPE would have before load (quit, then init again: OpenBLAS's own
    // start-up path, before any BLAS call of this process); a core the user named is kept.
    const char* core = openblas_get_corename();
    picked = core ? core : "unknown";
    if (std::getenv("OPENBLAS_CORETYPE") || !gotoblas_dynamic_init || !gotoblas_dynamic_quit) return;
    static const char* const kFallbacks[] = {"Unknown", "Prescott", "Core2", "Penryn", "Dunnington", "Nehalem",
                                             "Katmai", "Atom"};
    bool fallback = false;
    for (const char* f : kFallbacks) fallback = fallback || picked == f;
    const char* want = nullptr;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
      want = __builtin_cpu_supports("avx512bf16") ? "Cooperlake" : "SkylakeX";
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
      want = "Haswell";
    if (!fallback || !want) return;
    setenv("OPENBLAS_CORETYPE", want, 1);
    gotoblas_dynamic_quit();
    gotoblas_dynamic_init();
    unsetenv("OPENBLAS_CORETYPE");  // child processes (tensor-parallel ranks) pick for themselves
    core = openblas_get_corename();
    picked = std::string(core ? core : "unknown") + " (OpenBLAS had picked " + picked + ")";
  });
  return picked;
}

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

void weight_block_to_f32(const WeightView& w, int64_t n0, int64_t n1, int64_t k0, int64_t k1, float* dst) {
  const int64_t K = w.K, cols = k1 - k0;
  if (w.dtype == DType::i8) {
    const int64_t ld = K + kI8RowTail;
    for (int64_t n = n0; n < n1; ++n) {
      const int8_t* row = static_cast<const int8_t*>(w.data) + n * ld;
      const float scale = i8_row_scale(row, K);
      const __m256 s = _mm256_set1_ps(scale);
      float* d = dst + (n - n0) * cols - k0;
      int64_t k = k0;
      for (; k + 8 <= k1; k += 8) {
        const __m256i q = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + k)));
        _mm256_storeu_ps(d + k, _mm256_mul_ps(s, _mm256_cvtepi32_ps(q)));
      }
      for (; k < k1; ++k) d[k] = scale * row[k];
    }
    return;
  }
  with_float_dtype(w.dtype, [&]<DType T>() {
    const char* base = static_cast<const char*>(w.data);
    const int64_t size = static_cast<int64_t>(dtype_size(T));
    if (cols == K) load_row<T>(base + n0 * K * size, dst, (n1 - n0) * K);
    else
      for (int64_t n = n0; n < n1; ++n) load_row<T>(base + (n * K + k0) * size, dst + (n - n0) * cols, cols);
  });
}

void weight_rows_to_f32(const WeightView& w, int64_t n0, int64_t n1, float* dst) {
  weight_block_to_f32(w, n0, n1, 0, w.K, dst);
}

void gemm_panels(const float* x, const WeightView& w, float* out, int64_t M, ThreadPool& pool, bool accumulate) {
  openblas_threads(1);
  const int64_t N = w.N, K = w.K;
  // Blocks of weights converted to f32 (up to 1024 rows x 1024 columns, 4 MiB) that OpenBLAS
  // sweeps x over, adding up the blocks along K. The conversion is one pass over the weights
  // against 2 M multiply-adds per weight; OpenBLAS packs x's columns once per call, so a block
  // needs many rows: 1 MiB blocks of whole rows (85 rows at K = 3072) took down_proj's 512-row
  // GEMM 1.35x the time of these (docs/cpu-backend.md).
  const int64_t kc = std::min<int64_t>(K, kPanelCols);
  const int64_t panel = std::clamp<int64_t>(kPanelFloats / kc, 16, kPanelCols);
  const int64_t grain = std::max<int64_t>(64, 262144 / std::max<int64_t>(1, M * K));
  pool.parallel_for(N, grain, [&](int64_t n0, int64_t n1) {
    thread_local std::vector<float> buf;
    buf.resize(static_cast<size_t>(std::min(panel, n1 - n0) * kc));
    for (int64_t p0 = n0; p0 < n1; p0 += panel) {
      const int64_t p1 = std::min(n1, p0 + panel);
      for (int64_t k0 = 0; k0 < K; k0 += kc) {
        const int64_t k1 = std::min(K, k0 + kc);
        weight_block_to_f32(w, p0, p1, k0, k1, buf.data());
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(M), static_cast<blasint>(p1 - p0),
                    static_cast<blasint>(k1 - k0), 1.0f, x + k0, static_cast<blasint>(K), buf.data(),
                    static_cast<blasint>(k1 - k0), accumulate || k0 > 0 ? 1.0f : 0.0f, out + p0,
                    static_cast<blasint>(N));
      }
    }
  });
}

void gemm(const float* x, const WeightView& w, float* out, int64_t M, ThreadPool& pool, Isa isa, bool accumulate) {
  if (M <= 0 || w.N <= 0) return;
  if (w.K == 0) {
    if (!accumulate) std::fill(out, out + M * w.N, 0.0f);
    return;
  }
  switch (w.dtype) {
    case DType::f32: gemm(x, static_cast<const float*>(w.data), out, M, w.N, w.K, pool, accumulate); return;
    case DType::bf16:
    case DType::f16:
      if (M <= kHalfGemvRows) gemv_half(x, w, out, M, pool, isa, accumulate);
      else gemm_panels(x, w, out, M, pool, accumulate);
      return;
    case DType::i8:
      if (M <= kInt8GemvRows) gemv_int8(x, w, out, M, pool, isa, accumulate);
      else gemm_panels(x, w, out, M, pool, accumulate);
      return;
    default: throw std::logic_error(std::string("cpu gemm: weights of dtype ") + dtype_name(w.dtype));
  }
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
