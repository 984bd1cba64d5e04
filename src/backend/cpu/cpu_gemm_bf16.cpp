// GEMM over bf16 weights with AVX512_BF16 dot products (prefill): out[M, N] = x[M, K] @ w[N, K]^T
// with x rounded to bf16 once per call (to nearest even, as transformers' bf16 matmuls and
// llama.cpp's f16 path round their activations) and the products summed in float32.
// `vdpbf16ps` multiplies pairs of bf16 values exactly and adds both products into a float32 lane:
// 32 multiply-adds an instruction against an f32 FMA's 16, with the weights read as bf16.
//
// Layout: vdpbf16ps takes its operands as pairs along K, a 32-bit word holding elements 2p (low
// half) and 2p + 1. x, rounded, keeps its rows of words (ceil(K / 2) a row, an odd K's last
// word padded with zero), and a micro-kernel broadcasts one row's word p to all lanes. The
// weights are packed per call, kPanel rows at a time into a thread's buffer that stays in L2, as
// tiles of 32 rows: for each p, the 32 rows' words side by side (two zmm). The micro-kernel keeps
// up to kMr rows of x by one tile's 32 columns in 2 * kMr accumulators across all of K, then
// writes them (masked at N's edge); threads split N by panels.
// GCC 12 warns of an uninitialized "undefined" vector inside its own AVX-512 intrinsics when
// they are compiled through target attributes (GCC PR 105593): spurious, silenced here.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <utility>
#include <vector>

#include "backend/cpu/cpu_ops.h"

#define NANOVLLM_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))

namespace nanovllm::cpu {
namespace {

constexpr int kMr = 14;          // rows of x a micro-kernel holds: 28 accumulators + 2 weight vectors
constexpr int kTile = 32;        // weight rows (output columns) a micro-kernel holds: two zmm
constexpr int64_t kKc = 128;     // words of K a micro-kernel sweeps: its tile's slice (16 KiB) stays in L1
constexpr int64_t kPanel = 128;  // weight rows packed at a time: 128 x K bf16 (768 KiB at K = 3072) sits in L2

// Rows [m0, m1) of x rounded to bf16 words (ldx words a row, the odd K's last high half zero).
NANOVLLM_BF16 void round_rows(const float* x, int64_t m0, int64_t m1, int64_t K, uint32_t* xw, int64_t ldx) {
  for (int64_t m = m0; m < m1; ++m) {
    const float* src = x + m * K;
    uint16_t* dst = reinterpret_cast<uint16_t*>(xw + m * ldx);
    for (int64_t k = 0; k < K; k += 16) {
      const __mmask16 mask = K - k >= 16 ? __mmask16(0xffff) : __mmask16((1u << (K - k)) - 1);
      const __m256bh h = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mask, src + k));  // round to nearest even
      _mm256_mask_storeu_epi16(dst + k, mask, (__m256i)h);
    }
    if (K % 2) dst[K] = 0;
  }
}

// Weight rows [n0, n0 + rows) packed as tiles of kTile rows: word p of the tile's row j at
// [p * kTile + j]; rows past `rows` are zero.
void pack_panel(const uint16_t* w, int64_t n0, int64_t rows, int64_t K, uint32_t* dst) {
  const int64_t K2 = (K + 1) / 2, whole = K / 2;
  for (int64_t t = 0; t * kTile < rows; ++t) {
    uint32_t* tile = dst + t * K2 * kTile;
    const int64_t in_tile = std::min<int64_t>(kTile, rows - t * kTile);
    const uint16_t* src[kTile];
    for (int64_t j = 0; j < in_tile; ++j) src[j] = w + (n0 + t * kTile + j) * K;
    for (int64_t p = 0; p < whole; ++p) {
      uint32_t* d = tile + p * kTile;
      for (int64_t j = 0; j < in_tile; ++j) std::memcpy(d + j, src[j] + 2 * p, 4);
      for (int64_t j = in_tile; j < kTile; ++j) d[j] = 0;
    }
    if (K % 2) {  // the last word holds one element; the next row's first must not come with it
      uint32_t* d = tile + whole * kTile;
      for (int64_t j = 0; j < kTile; ++j) d[j] = j < in_tile ? src[j][K - 1] : 0;
    }
  }
}

// R rows of x (words, ldx apart) against one packed tile, over K2 words: out[r, j] for j under
// the masks (columns 0-15, 16-31), written or added.
template <int R>
NANOVLLM_BF16 void micro_kernel(const uint32_t* xw, int64_t ldx, const uint32_t* tile, int64_t K2, float* out,
                                int64_t ldo, __mmask16 lo, __mmask16 hi, bool acc) {
  __m512 c[R][2];
  for (int r = 0; r < R; ++r) c[r][0] = c[r][1] = _mm512_setzero_ps();
  for (int64_t p = 0; p < K2; ++p) {  // the loop over r unrolled (also at -O2): c stays in registers
    const __m512bh b0 = (__m512bh)_mm512_loadu_si512(tile + p * kTile);
    const __m512bh b1 = (__m512bh)_mm512_loadu_si512(tile + p * kTile + 16);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const __m512bh a = (__m512bh)_mm512_set1_epi32(static_cast<int>(xw[r * ldx + p]));
      c[r][0] = _mm512_dpbf16_ps(c[r][0], a, b0);
      c[r][1] = _mm512_dpbf16_ps(c[r][1], a, b1);
    }
  }
  for (int r = 0; r < R; ++r) {
    float* o = out + r * ldo;
    if (acc) {
      c[r][0] = _mm512_add_ps(c[r][0], _mm512_maskz_loadu_ps(lo, o));
      c[r][1] = _mm512_add_ps(c[r][1], _mm512_maskz_loadu_ps(hi, o + 16));
    }
    _mm512_mask_storeu_ps(o, lo, c[r][0]);
    _mm512_mask_storeu_ps(o + 16, hi, c[r][1]);
  }
}

using MicroKernel = void (*)(const uint32_t*, int64_t, const uint32_t*, int64_t, float*, int64_t, __mmask16,
                             __mmask16, bool);
template <size_t... R>
constexpr auto kernel_table(std::index_sequence<R...>) {
  return std::array<MicroKernel, sizeof...(R)>{&micro_kernel<int(R) + 1>...};
}
constexpr auto kKernels = kernel_table(std::make_index_sequence<kMr>{});  // kKernels[r - 1]: r rows

__mmask16 columns_mask(int64_t cols) { return cols >= 16 ? __mmask16(0xffff) : __mmask16((1u << std::max<int64_t>(cols, 0)) - 1); }

}  // namespace

bool bf16_gemm_supported() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512bf16");
}

void gemm_bf16(const float* x, const WeightView& w, float* out, int64_t M, ThreadPool& pool, bool accumulate) {
  const int64_t N = w.N, K = w.K, K2 = (K + 1) / 2;
  thread_local std::vector<uint32_t> rounded;  // x as bf16 words: the caller's, which pool threads read
  rounded.resize(static_cast<size_t>(M * K2));
  uint32_t* xw = rounded.data();
  pool.parallel_for(M, std::max<int64_t>(1, 65536 / K), [&](int64_t m0, int64_t m1) { round_rows(x, m0, m1, K, xw, K2); });
  const uint16_t* wp = static_cast<const uint16_t*>(w.data);
  const int64_t panels = (N + kPanel - 1) / kPanel;
  pool.parallel_for(panels, 1, [&](int64_t q0, int64_t q1) {
    thread_local std::vector<uint32_t> packed;
    packed.resize(static_cast<size_t>(kPanel * K2));
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t n0 = q * kPanel, rows = std::min(kPanel, N - n0);
      pack_panel(wp, n0, rows, K, packed.data());
      for (int64_t k0 = 0; k0 < K2; k0 += kKc)
        for (int64_t t = 0; t * kTile < rows; ++t) {
          const int64_t cols = rows - t * kTile, kc = std::min(kKc, K2 - k0);
          const uint32_t* tile = packed.data() + (t * K2 + k0) * kTile;
          for (int64_t m = 0; m < M; m += kMr) {
            const int r = static_cast<int>(std::min<int64_t>(kMr, M - m));
            kKernels[r - 1](xw + m * K2 + k0, K2, tile, kc, out + m * N + n0 + t * kTile, N, columns_mask(cols),
                            columns_mask(cols - 16), accumulate || k0 > 0);
          }
        }
    }
  });
}

}  // namespace nanovllm::cpu
