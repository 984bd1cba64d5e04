// int8 weights (--quantization int8): quantizing rows at load, and the GEMV for few rows.
//
// Weights: per output row (channel), symmetric: scale = max |w| / 127, q = w / scale rounded to
// nearest (ties to even) in [-127, 127], stored with the scale and the sum of q in the row's tail
// (tensor.h). Activations:
// per row of x, the same rule at run time (dynamic scales). Then
//   out[m, n] = sx[m] * sw[n] * sum_k qx[m, k] * qw[n, k]
// with the integer dot products exact in int32 (|sum| <= 127 * 255 * K < 2^31 for K <= 65536).
//
// AVX-512 VNNI (vpdpbusd) multiplies unsigned by signed bytes, so x goes in as qx + 128 (u8)
// and the row's sum of qw takes the 128s back out: sum (qx + 128) qw = sum qx qw + 128 sum qw.
// AVX2 has no such instruction: maddubs (u8 x s8 -> pairs summed in s16) with the sign trick,
// |qx| times qw * sign(qx), which cannot saturate since both are at most 127 in magnitude.
// GCC 12 warns of an uninitialized "undefined" vector inside its own AVX-512 intrinsics when
// they are compiled through target attributes (GCC PR 105593): spurious, silenced here.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "backend/cpu/cpu_convert.h"
#include "backend/cpu/cpu_ops.h"

#define NANOVLLM_AVX512_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))

namespace nanovllm::cpu {
namespace {

constexpr int64_t kMaxK = 65536;  // int32 sums stay exact up to here

// Quantizes n floats with 1 / scale = inv into q: round to nearest, ties to even (the vector
// conversion's rounding, and std::nearbyint's in the default rounding mode for the tail).
inline void quantize(const float* v, int64_t n, float inv, int8_t* q) {
  const __m256 iv = _mm256_set1_ps(inv), lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  auto conv = [&](int64_t i) {
    return _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(_mm256_loadu_ps(v + i), iv), lo), hi));
  };
  int64_t k = 0;
  for (; k + 32 <= n; k += 32) {
    // 4 x 8 int32 -> 32 int8: the packs work within 128-bit lanes, the permute puts them in order.
    const __m256i ab = _mm256_packs_epi32(conv(k), conv(k + 8)), cd = _mm256_packs_epi32(conv(k + 16), conv(k + 24));
    const __m256i bytes = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(ab, cd), order);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + k), bytes);
  }
  for (; k < n; ++k) q[k] = static_cast<int8_t>(std::nearbyint(std::clamp(v[k] * inv, -127.0f, 127.0f)));
}
inline float absmax(const float* v, int64_t n) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 m = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= n; k += 8) m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(v + k)));
  float r[8], mx = 0;
  _mm256_storeu_ps(r, m);
  for (float x : r) mx = std::max(mx, x);
  for (; k < n; ++k) mx = std::max(mx, std::abs(v[k]));
  return mx;
}

// x's rows quantized, in the layout the kernels read: u8 (qx + 128) for VNNI, or |qx| and qx for
// the AVX2 sign trick; each row's scale.
struct QuantizedRows {
  std::vector<uint8_t> a;  // VNNI: qx + 128; AVX2: |qx|
  std::vector<int8_t> s;   // qx
  std::vector<float> scale;
};

void quantize_activations(const float* x, int64_t M, int64_t K, bool vnni, QuantizedRows& q) {
  q.a.resize(static_cast<size_t>(M * K));
  q.s.resize(static_cast<size_t>(M * K));
  q.scale.resize(static_cast<size_t>(M));
  for (int64_t m = 0; m < M; ++m) {
    const float mx = absmax(x + m * K, K);
    q.scale[m] = mx / 127.0f;
    int8_t* qx = q.s.data() + m * K;
    quantize(x + m * K, K, mx > 0 ? 127.0f / mx : 0.0f, qx);
    uint8_t* a = q.a.data() + m * K;
    // qx + 128 as a byte is qx with its top bit flipped.
    for (int64_t k = 0; k < K; ++k) a[k] = vnni ? static_cast<uint8_t>(qx[k] ^ 0x80) : static_cast<uint8_t>(std::abs(qx[k]));
  }
}

// The integer sums of RX rows of x against RW rows of w for columns [0, done), finished in
// scalar over [done, K), scaled into out.
template <int RX, int RW>
inline void finish(const int32_t* sums, const QuantizedRows& q, int64_t m0, bool vnni, const int8_t* w, int64_t ldw,
                   int64_t done, int64_t K, float* out, int64_t ldo, int rw, bool acc) {
  for (int r = 0; r < RX; ++r) {
    const uint8_t* a = q.a.data() + (m0 + r) * K;
    for (int j = 0; j < rw; ++j) {
      const int8_t* wr = w + j * ldw;
      int64_t s = sums[r * RW + j];
      if (vnni) {
        for (int64_t k = done; k < K; ++k) s += static_cast<int32_t>(a[k]) * wr[k];
        s -= 128LL * i8_row_sum(wr, K);
      } else {
        const int8_t* sg = q.s.data() + (m0 + r) * K;
        for (int64_t k = done; k < K; ++k) s += static_cast<int32_t>(sg[k]) * wr[k];
      }
      const float v = q.scale[m0 + r] * i8_row_scale(wr, K) * static_cast<float>(s);
      float& o = out[r * ldo + j];
      o = acc ? o + v : v;
    }
  }
}

// ---- AVX2: maddubs(|qx|, qw * sign(qx)) -> 16 s16 pair sums -> madd by 1 -> 8 s32 ----
inline int32_t hsum_epi32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

template <int RX, int RW>
void block_avx2(const QuantizedRows& q, int64_t m0, const int8_t* w, int64_t ldw, int64_t K, float* out, int64_t ldo,
                int rw, bool acc) {
  __m256i a[RX][RW];
  for (int r = 0; r < RX; ++r)
    for (int j = 0; j < RW; ++j) a[r][j] = _mm256_setzero_si256();
  const int8_t* wr[RW];
  for (int j = 0; j < RW; ++j) wr[j] = w + (j < rw ? j : 0) * ldw;
  const __m256i ones = _mm256_set1_epi16(1);
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    __m256i wv[RW];
    for (int j = 0; j < RW; ++j) wv[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wr[j] + k));
    for (int r = 0; r < RX; ++r) {
      const __m256i ax = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q.a.data() + (m0 + r) * K + k));
      const __m256i sx = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q.s.data() + (m0 + r) * K + k));
      for (int j = 0; j < RW; ++j) {
        const __m256i p = _mm256_maddubs_epi16(ax, _mm256_sign_epi8(wv[j], sx));
        a[r][j] = _mm256_add_epi32(a[r][j], _mm256_madd_epi16(p, ones));
      }
    }
  }
  int32_t sums[RX * RW];
  for (int r = 0; r < RX; ++r)
    for (int j = 0; j < RW; ++j) sums[r * RW + j] = hsum_epi32(a[r][j]);
  finish<RX, RW>(sums, q, m0, false, w, ldw, k, K, out, ldo, rw, acc);
}

// ---- AVX-512 VNNI: vpdpbusd(qx + 128, qw), 64 bytes a step ----

template <int RX, int RW>
NANOVLLM_AVX512_VNNI void block_vnni(const QuantizedRows& q, int64_t m0, const int8_t* w, int64_t ldw, int64_t K,
                                     float* out, int64_t ldo, int rw, bool acc) {
  __m512i a[RX][RW];
  for (int r = 0; r < RX; ++r)
    for (int j = 0; j < RW; ++j) a[r][j] = _mm512_setzero_si512();
  const int8_t* wr[RW];
  for (int j = 0; j < RW; ++j) wr[j] = w + (j < rw ? j : 0) * ldw;
  int64_t k = 0;
  for (; k + 64 <= K; k += 64) {
    __m512i wv[RW];
    for (int j = 0; j < RW; ++j) wv[j] = _mm512_loadu_si512(wr[j] + k);
    for (int r = 0; r < RX; ++r) {
      const __m512i ax = _mm512_loadu_si512(q.a.data() + (m0 + r) * K + k);
      for (int j = 0; j < RW; ++j) a[r][j] = _mm512_dpbusd_epi32(a[r][j], ax, wv[j]);
    }
  }
  int32_t sums[RX * RW];
  for (int r = 0; r < RX; ++r)
    for (int j = 0; j < RW; ++j) sums[r * RW + j] = _mm512_reduce_add_epi32(a[r][j]);
  finish<RX, RW>(sums, q, m0, true, w, ldw, k, K, out, ldo, rw, acc);
}

template <int RW, bool Vnni>
void rows_group(const QuantizedRows& q, int64_t M, const int8_t* w, int64_t ldw, int64_t K, float* out, int64_t N,
                int rw, bool acc) {
  int64_t m = 0;
  auto run = [&]<int RX>() {
    if constexpr (Vnni) block_vnni<RX, RW>(q, m, w, ldw, K, out + m * N, N, rw, acc);
    else block_avx2<RX, RW>(q, m, w, ldw, K, out + m * N, N, rw, acc);
  };
  for (; m + 4 <= M; m += 4) run.template operator()<4>();
  switch (M - m) {
    case 3: run.template operator()<3>(); break;
    case 2: run.template operator()<2>(); break;
    case 1: run.template operator()<1>(); break;
    default: break;
  }
}

template <bool Vnni>
void gemv(const QuantizedRows& q, const WeightView& w, float* out, int64_t M, ThreadPool& pool, bool acc) {
  constexpr int RW = Vnni ? 4 : 2;
  const int64_t N = w.N, K = w.K, ldw = K + kI8RowTail, groups = (N + RW - 1) / RW;
  const int8_t* wp = static_cast<const int8_t*>(w.data);
  const int64_t grain = std::max<int64_t>(1, 131072 / std::max<int64_t>(1, RW * M * K));
  pool.parallel_for(groups, grain, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t n = g * RW;
      const int rw = static_cast<int>(std::min<int64_t>(RW, N - n));
      rows_group<RW, Vnni>(q, M, wp + n * ldw, ldw, K, out + n, N, rw, acc);
    }
  });
}

}  // namespace

void quantize_rows_int8(const void* src, DType src_dtype, int64_t R, int64_t K, int8_t* dst, ThreadPool& pool) {
  if (K > kMaxK)
    throw std::invalid_argument("int8 weights: rows of " + std::to_string(K) + " values, at most " +
                                std::to_string(kMaxK) + " keep the int32 sums exact");
  const int64_t ld = K + kI8RowTail;
  pool.parallel_for(R, std::max<int64_t>(1, 65536 / std::max<int64_t>(1, K)), [&](int64_t r0, int64_t r1) {
    std::vector<float> row(static_cast<size_t>(K));
    for (int64_t r = r0; r < r1; ++r) {
      with_float_dtype(src_dtype, [&]<DType T>() { load_row<T>(static_cast<const char*>(src) + r * K * dtype_size(T), row.data(), K); });
      const float mx = absmax(row.data(), K);
      int8_t* q = dst + r * ld;
      quantize(row.data(), K, mx > 0 ? 127.0f / mx : 0.0f, q);
      const float scale = mx / 127.0f;
      int32_t sum = 0;
      for (int64_t k = 0; k < K; ++k) sum += q[k];
      std::memcpy(q + K, &scale, sizeof scale);
      std::memcpy(q + K + 4, &sum, sizeof sum);
    }
  });
}

void gemv_int8(const float* x, const WeightView& w, float* out, int64_t M, ThreadPool& pool, Isa isa, bool accumulate) {
  const bool vnni = isa == Isa::avx512;
  thread_local QuantizedRows q;  // pool threads read the caller's
  quantize_activations(x, M, w.K, vnni, q);
  if (vnni) gemv<true>(q, w, out, M, pool, accumulate);
  else gemv<false>(q, w, out, M, pool, accumulate);
}

}  // namespace nanovllm::cpu
