// GEMV over bf16/f16 weights for few rows (decode): out[M, N] = x[M, K] @ w[N, K]^T with the
// weights converted to f32 in registers, so a step streams 2 bytes a weight, not 4, and the math is
// float32 over the exact weights (the same products as the f32 path on the expanded weights).
//
// bf16 -> f32 is a shift: a 32-bit lane holding bf16 elements 2i (low half) and 2i+1 (high half)
// gives element 2i as (lane << 16) and element 2i+1 as (lane & 0xffff0000). So each weight load
// yields two vectors with one integer op each, and x is laid out once per call to match: in every
// block of 2V values (V = floats in a register), the V even ones, then the V odd ones. f16 uses
// the hardware conversion (F16C / AVX-512) and x as it is.
//
// Each step multiplies RX rows of x by RW rows of w (RX * RW accumulators), so a weight vector
// is converted once and used RX times; threads split N. AVX2: RX <= 4, RW = 2 (16 registers);
// AVX-512: RX <= 4, RW = 4 (32 registers), picked at run time (cpu_isa.h).
// GCC 12 warns of an uninitialized "undefined" vector inside its own AVX-512 intrinsics when
// they are compiled through target attributes (GCC PR 105593): spurious, silenced here.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "backend/cpu/cpu_convert.h"
#include "backend/cpu/cpu_ops.h"

#define NANOVLLM_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))

namespace nanovllm::cpu {
namespace {

constexpr int kMaxRx = 4;

// x rows laid out for the bf16 kernels: blocks of 2V values, evens then odds; the tail past the
// last whole block as it is.
void deinterleave_rows(const float* x, int64_t M, int64_t K, int V, float* xp) {
  const int64_t whole = K / (2 * V) * (2 * V);
  for (int64_t m = 0; m < M; ++m) {
    const float* src = x + m * K;
    float* dst = xp + m * K;
    for (int64_t b = 0; b < whole; b += 2 * V)
      for (int i = 0; i < V; ++i) {
        dst[b + i] = src[b + 2 * i];
        dst[b + V + i] = src[b + 2 * i + 1];
      }
    for (int64_t k = whole; k < K; ++k) dst[k] = src[k];
  }
}

// Adds or writes RX x RW sums, finishing them with the columns past `done` (scalar: the tail).
template <int RX, int RW, DType T>
inline void finish(const float* sums, const float* xp, int64_t ldx, const uint16_t* w, int64_t ldw, int64_t done,
                   int64_t K, float* out, int64_t ldo, int rw, bool acc) {
  for (int r = 0; r < RX; ++r)
    for (int j = 0; j < rw; ++j) {
      float s = sums[r * RW + j];
      for (int64_t k = done; k < K; ++k) s += xp[r * ldx + k] * load1<T>(w + j * ldw, k);
      float& o = out[r * ldo + j];
      o = acc ? o + s : s;
    }
}

// ---- AVX2 ----
inline float hsum256(__m256 v) {
  __m128 lo = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}

// RX rows of x against RW rows of w (rw <= RW real ones; the others repeat row 0 and are dropped).
template <int RX, int RW, DType T>
void block_avx2(const float* xp, int64_t ldx, const uint16_t* w, int64_t ldw, int64_t K, float* out, int64_t ldo,
                int rw, bool acc, bool prefetch) {
  __m256 a[RX][RW];
  for (int r = 0; r < RX; ++r)
    for (int j = 0; j < RW; ++j) a[r][j] = _mm256_setzero_ps();
  const uint16_t* wr[RW];
  for (int j = 0; j < RW; ++j) wr[j] = w + (j < rw ? j : 0) * ldw;
  int64_t k = 0;
  if constexpr (T == DType::bf16) {
    const __m256i hi = _mm256_set1_epi32(static_cast<int>(0xffff0000u));
    for (; k + 16 <= K; k += 16) {
      __m256 we[RW], wo[RW];
      if (prefetch && k % 32 == 0)  // the next group's rows, as in block_avx512
        for (int j = 0; j < RW; ++j) _mm_prefetch(reinterpret_cast<const char*>(w + (RW + j) * ldw + k), _MM_HINT_T0);
      for (int j = 0; j < RW; ++j) {
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wr[j] + k));
        we[j] = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
        wo[j] = _mm256_castsi256_ps(_mm256_and_si256(v, hi));
      }
      for (int r = 0; r < RX; ++r) {
        const __m256 xe = _mm256_loadu_ps(xp + r * ldx + k), xo = _mm256_loadu_ps(xp + r * ldx + k + 8);
        for (int j = 0; j < RW; ++j) a[r][j] = _mm256_fmadd_ps(wo[j], xo, _mm256_fmadd_ps(we[j], xe, a[r][j]));
      }
    }
  } else {
    for (; k + 8 <= K; k += 8) {
      __m256 wv[RW];
      if (prefetch && k % 32 == 0)
        for (int j = 0; j < RW; ++j) _mm_prefetch(reinterpret_cast<const char*>(w + (RW + j) * ldw + k), _MM_HINT_T0);
      for (int j = 0; j < RW; ++j) wv[j] = load8_f16(wr[j] + k);
      for (int r = 0; r < RX; ++r) {
        const __m256 xv = _mm256_loadu_ps(xp + r * ldx + k);
        for (int j = 0; j < RW; ++j) a[r][j] = _mm256_fmadd_ps(wv[j], xv, a[r][j]);
      }
    }
  }
  float sums[RX * RW];
  for (int r = 0; r < RX; ++r)
    for (int j = 0; j < RW; ++j) sums[r * RW + j] = hsum256(a[r][j]);
  finish<RX, RW, T>(sums, xp, ldx, w, ldw, k, K, out, ldo, rw, acc);
}

// ---- AVX-512 ----

template <int RX, int RW, DType T>
NANOVLLM_AVX512 void block_avx512(const float* xp, int64_t ldx, const uint16_t* w, int64_t ldw, int64_t K, float* out,
                                  int64_t ldo, int rw, bool acc, bool prefetch) {
  __m512 a[RX][RW];
  for (int r = 0; r < RX; ++r)
    for (int j = 0; j < RW; ++j) a[r][j] = _mm512_setzero_ps();
  const uint16_t* wr[RW];
  for (int j = 0; j < RW; ++j) wr[j] = w + (j < rw ? j : 0) * ldw;
  int64_t k = 0;
  if constexpr (T == DType::bf16) {
    const __m512i hi = _mm512_set1_epi32(static_cast<int>(0xffff0000u));
    for (; k + 32 <= K; k += 32) {
      __m512 we[RW], wo[RW];
      if (prefetch)  // the next group's rows (RW rows on): in cache by the time this group's other blocks end
        for (int j = 0; j < RW; ++j) _mm_prefetch(reinterpret_cast<const char*>(w + (RW + j) * ldw + k), _MM_HINT_T0);
      for (int j = 0; j < RW; ++j) {
        const __m512i v = _mm512_loadu_si512(wr[j] + k);
        we[j] = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
        wo[j] = _mm512_castsi512_ps(_mm512_and_si512(v, hi));
      }
      for (int r = 0; r < RX; ++r) {
        const __m512 xe = _mm512_loadu_ps(xp + r * ldx + k), xo = _mm512_loadu_ps(xp + r * ldx + k + 16);
        for (int j = 0; j < RW; ++j) a[r][j] = _mm512_fmadd_ps(wo[j], xo, _mm512_fmadd_ps(we[j], xe, a[r][j]));
      }
    }
  } else {
    for (; k + 16 <= K; k += 16) {
      __m512 wv[RW];
      if (prefetch && k % 32 == 0)
        for (int j = 0; j < RW; ++j) _mm_prefetch(reinterpret_cast<const char*>(w + (RW + j) * ldw + k), _MM_HINT_T0);
      for (int j = 0; j < RW; ++j)
        wv[j] = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(wr[j] + k)));
      for (int r = 0; r < RX; ++r) {
        const __m512 xv = _mm512_loadu_ps(xp + r * ldx + k);
        for (int j = 0; j < RW; ++j) a[r][j] = _mm512_fmadd_ps(wv[j], xv, a[r][j]);
      }
    }
  }
  float sums[RX * RW];
  for (int r = 0; r < RX; ++r)
    for (int j = 0; j < RW; ++j) sums[r * RW + j] = _mm512_reduce_add_ps(a[r][j]);
  finish<RX, RW, T>(sums, xp, ldx, w, ldw, k, K, out, ldo, rw, acc);
}

// Groups [g0, g1) of RW weight rows (a super-group) against all M rows of x, one block of up to
// kMaxRx rows of x at a time across the whole super-group: the block's rows (16 KB at K = 1024)
// stay in L1 while the groups' weights pass, where taking each group against every block in turn
// read all of x (64 KB at 16 rows: more than L1) from L2 again for each group. The first block's
// pass streams the weights from memory (asking for the next group's as it goes); the others find
// them in L2.
template <int RW, DType T, bool Avx512>
void rows_groups(const float* xp, int64_t M, const uint16_t* wp, int64_t K, float* out, int64_t N, int64_t g0,
                 int64_t g1, bool acc) {
  int64_t m = 0;
  auto run = [&]<int RX>() {
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t n = g * RW;
      const int rw = static_cast<int>(std::min<int64_t>(RW, N - n));
      if constexpr (Avx512) block_avx512<RX, RW, T>(xp + m * K, K, wp + n * K, K, K, out + m * N + n, N, rw, acc, m == 0);
      else block_avx2<RX, RW, T>(xp + m * K, K, wp + n * K, K, K, out + m * N + n, N, rw, acc, m == 0);
    }
  };
  for (; m + 4 <= M; m += 4) run.template operator()<4>();
  switch (M - m) {
    case 3: run.template operator()<3>(); break;
    case 2: run.template operator()<2>(); break;
    case 1: run.template operator()<1>(); break;
    default: break;
  }
}

// Groups in a super-group: their weights (64 KB of bf16 at K = 1024) wait in L2 between blocks.
constexpr int64_t kSuperGroup = 8;

template <DType T, bool Avx512>
void gemv(const float* xp, const WeightView& w, float* out, int64_t M, ThreadPool& pool, bool acc) {
  constexpr int RW = Avx512 ? 4 : 2;
  const int64_t N = w.N, K = w.K, groups = (N + RW - 1) / RW;
  const uint16_t* wp = static_cast<const uint16_t*>(w.data);
  // At least ~64K multiply-adds a thread, or the fork-join costs more than it saves.
  const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(1, RW * M * K));
  pool.parallel_for(groups, grain, [&](int64_t g0, int64_t g1) {
    for (int64_t s = g0; s < g1; s += kSuperGroup)
      rows_groups<RW, T, Avx512>(xp, M, wp, K, out, N, s, std::min(g1, s + kSuperGroup), acc);
  });
}

}  // namespace

void gemv_half(const float* x, const WeightView& w, float* out, int64_t M, ThreadPool& pool, Isa isa, bool accumulate) {
  const bool avx512 = isa == Isa::avx512;
  const float* xp = x;
  thread_local std::vector<float> laid_out;  // x in the bf16 kernels' layout (pool threads read the caller's)
  if (w.dtype == DType::bf16) {
    laid_out.resize(static_cast<size_t>(M * w.K));
    deinterleave_rows(x, M, w.K, avx512 ? 16 : 8, laid_out.data());
    xp = laid_out.data();
  }
  if (w.dtype == DType::bf16) {
    if (avx512) gemv<DType::bf16, true>(xp, w, out, M, pool, accumulate);
    else gemv<DType::bf16, false>(xp, w, out, M, pool, accumulate);
  } else {
    if (avx512) gemv<DType::f16, true>(xp, w, out, M, pool, accumulate);
    else gemv<DType::f16, false>(xp, w, out, M, pool, accumulate);
  }
}

}  // namespace nanovllm::cpu
