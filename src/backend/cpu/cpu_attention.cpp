// CPU attention path: q/k RMS-norm + RoPE + KV store, and paged attention over block tables.
// Attention is two-pass per query (scores, then max-subtracted softmax and the weighted V sum),
// so it is exact up to float rounding and serves as the oracle the CUDA kernels are held to.
// The cache is f32, bf16 or f16 (stored rounded to nearest even, read back converted in
// registers), or FP8 (e4m3, e5m2) holding k / k_scale and v / v_scale (half.h's rounding and
// saturation), read back by a 256-entry table; the math is float32 either way.
#include <cblas.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "backend/cpu/cpu_convert.h"
#include "backend/cpu/cpu_math.h"
#include "backend/cpu/cpu_ops.h"

namespace nanovllm::cpu {
namespace {

// q (f32) . k (a cache row of dtype T)
template <DType T>
inline float dot(const float* a, const void* b, int n) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), load8<T>(b, i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), load8<T>(b, i + 8), acc1);
  }
  for (; i + 8 <= n; i += 8) acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), load8<T>(b, i), acc0);
  acc0 = _mm256_add_ps(acc0, acc1);
  __m128 lo = _mm_add_ps(_mm256_castps256_ps128(acc0), _mm256_extractf128_ps(acc0, 1));
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
  float s = _mm_cvtss_f32(lo);
  for (; i < n; ++i) s += a[i] * load1<T>(b, i);
  return s;
}

// y += a * x, x a cache row of dtype T
template <DType T>
inline void axpy(float a, const void* x, float* y, int n) {
  const __m256 av = _mm256_set1_ps(a);
  int i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, load8<T>(x, i), _mm256_loadu_ps(y + i)));
  for (; i < n; ++i) y[i] += a * load1<T>(x, i);
}

// A cache row `rows` rows after row p (rows of `stride` elements of dtype T).
template <DType T>
inline const void* row_at(const void* p, int64_t rows, int64_t stride) {
  return static_cast<const char*>(p) + rows * stride * static_cast<int64_t>(dtype_size(T));
}

// r[j] = the sum of acc[j]'s 8 lanes, j < 8. hadd(a, b) sums neighbours within each 128-bit lane;
// two levels leave per-lane partial sums of vectors 0-3 and 4-7, and adding the two lanes finishes
// them: one tree for eight sums, each summed in the same order whichever vectors share it.
inline void sum8(const __m256* acc, float* r) {
  const __m256 s01 = _mm256_hadd_ps(acc[0], acc[1]), s23 = _mm256_hadd_ps(acc[2], acc[3]);
  const __m256 s45 = _mm256_hadd_ps(acc[4], acc[5]), s67 = _mm256_hadd_ps(acc[6], acc[7]);
  const __m256 s0123 = _mm256_hadd_ps(s01, s23), s4567 = _mm256_hadd_ps(s45, s67);
  _mm256_store_ps(r, _mm256_add_ps(_mm256_permute2f128_ps(s0123, s4567, 0x20),
                                   _mm256_permute2f128_ps(s0123, s4567, 0x31)));
}

// Eight dot products at once, q against 8 key rows `stride` elements apart, times `scale`. One
// horizontal reduction (a hadd tree) serves all eight, instead of one per key.
template <DType T>
inline void dot8(const float* q, const void* k, int64_t stride, int D, float scale, float* out) {
  __m256 acc[8];
  for (int j = 0; j < 8; ++j) acc[j] = _mm256_setzero_ps();
  int d = 0;
  for (; d + 8 <= D; d += 8) {
    const __m256 qv = _mm256_loadu_ps(q + d);
    for (int j = 0; j < 8; ++j) acc[j] = _mm256_fmadd_ps(qv, load8<T>(row_at<T>(k, j, stride), d), acc[j]);
  }
  alignas(32) float r[8];
  sum8(acc, r);
  for (int j = 0; j < 8; ++j) {
    for (int dd = d; dd < D; ++dd) r[j] += q[dd] * load1<T>(row_at<T>(k, j, stride), dd);
    out[j] = scale * r[j];
  }
}

// Two query heads (q, q + D) against 4 key rows at once: each key row is loaded and converted once
// for both heads (GQA's heads share their kv head's keys). out0/out1 get the heads' 4 scores,
// each summed as dot8 sums it (sum8), so a score does not depend on the path.
template <DType T>
inline void dot4x2(const float* q, const void* k, int64_t stride, int D, float scale, float* out0, float* out1) {
  __m256 acc[8];  // head h, key j: acc[4h + j]
  for (int j = 0; j < 8; ++j) acc[j] = _mm256_setzero_ps();
  int d = 0;
  for (; d + 8 <= D; d += 8) {
    const __m256 q0 = _mm256_loadu_ps(q + d), q1 = _mm256_loadu_ps(q + D + d);
    for (int j = 0; j < 4; ++j) {
      const __m256 kv = load8<T>(row_at<T>(k, j, stride), d);
      acc[j] = _mm256_fmadd_ps(q0, kv, acc[j]);
      acc[4 + j] = _mm256_fmadd_ps(q1, kv, acc[4 + j]);
    }
  }
  alignas(32) float r[8];
  sum8(acc, r);
  for (int j = 0; j < 4; ++j) {
    for (int dd = d; dd < D; ++dd) {
      const float kd = load1<T>(row_at<T>(k, j, stride), dd);
      r[j] += q[dd] * kd;
      r[4 + j] += q[D + dd] * kd;
    }
    out0[j] = scale * r[j];
    out1[j] = scale * r[4 + j];
  }
}

// Where keys live: key p's row of this head is at
// head + (table[p / bs] * bs + p % bs) * stride, in elements of dtype T.
template <DType T>
struct PagedRows {
  const void* head;   // cache + kv head * D (+ a column offset)
  const int32_t* table;
  int bs;
  int64_t stride;     // elements between consecutive rows (Hkv * D)
};

// Calls f(p, row) for each key position p in [lo, n) with its row, walking the pages.
template <DType T, class F>
inline void for_rows(const PagedRows<T>& v, int lo, int n, F&& f) {
  for (int p = lo; p < n;) {
    const int rows = std::min(v.bs - p % v.bs, n - p);
    const void* row = row_at<T>(v.head, static_cast<int64_t>(v.table[p / v.bs]) * v.bs + p % v.bs, v.stride);
    for (int r = 0; r < rows; ++r, row = row_at<T>(row, 1, v.stride)) f(p + r, row);
    p += rows;
  }
}

// out[0, 8*NV) = sum over keys p in [lo, n) of w[p - lo] * v_p[0, 8*NV), the accumulators held in
// registers across all keys.
template <int NV, DType T>
inline void weighted_sum(const float* w, int lo, int n, const PagedRows<T>& v, float* out) {
  __m256 acc[NV];
  for (int j = 0; j < NV; ++j) acc[j] = _mm256_setzero_ps();
  for_rows(v, lo, n, [&](int p, const void* row) {
    const __m256 wp = _mm256_set1_ps(w[p - lo]);
    for (int j = 0; j < NV; ++j) acc[j] = _mm256_fmadd_ps(wp, load8<T>(row, 8 * j), acc[j]);
  });
  for (int j = 0; j < NV; ++j) _mm256_storeu_ps(out + 8 * j, acc[j]);
}

// The same for two heads' weights (w0, w1) at once, each V row loaded and converted once for both.
template <int NV, DType T>
inline void weighted_sum2(const float* w0, const float* w1, int lo, int n, const PagedRows<T>& v, float* out0,
                          float* out1) {
  __m256 acc0[NV], acc1[NV];
  for (int j = 0; j < NV; ++j) acc0[j] = acc1[j] = _mm256_setzero_ps();
  for_rows(v, lo, n, [&](int p, const void* row) {
    const __m256 a = _mm256_set1_ps(w0[p - lo]), b = _mm256_set1_ps(w1[p - lo]);
    for (int j = 0; j < NV; ++j) {
      const __m256 x = load8<T>(row, 8 * j);
      acc0[j] = _mm256_fmadd_ps(a, x, acc0[j]);
      acc1[j] = _mm256_fmadd_ps(b, x, acc1[j]);
    }
  });
  for (int j = 0; j < NV; ++j) {
    _mm256_storeu_ps(out0 + 8 * j, acc0[j]);
    _mm256_storeu_ps(out1 + 8 * j, acc1[j]);
  }
}

// The same for any width (a head_dim that is not a multiple of 8).
template <DType T>
inline void weighted_sum_any(const float* w, int lo, int n, const PagedRows<T>& v, int width, float* out) {
  std::fill(out, out + width, 0.0f);
  for_rows(v, lo, n, [&](int p, const void* row) { axpy<T>(w[p - lo], row, out, width); });
}

// sc[0, n) = softmax(sc[0, n)), max-subtracted; the sum in double: contexts run to tens of
// thousands of terms.
inline void softmax_inplace(float* sc, int n) {
  const __m256 mx = _mm256_set1_ps(*std::max_element(sc, sc + n));
  __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
  auto exp_sum = [&](__m256 v) {
    const __m256 e = exp8(_mm256_sub_ps(v, mx));
    s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
    s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    return e;
  };
  int p = 0;
  for (; p + 8 <= n; p += 8) _mm256_storeu_ps(sc + p, exp_sum(_mm256_loadu_ps(sc + p)));
  if (p < n) store_partial(sc + p, exp_sum(load_partial(sc + p, n - p, -__builtin_inff())), n - p);  // e^-inf = 0
  alignas(32) double lanes[4];
  _mm256_store_pd(lanes, _mm256_add_pd(s0, s1));
  const double sum = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
  const float inv = static_cast<float>(1.0 / sum);
  for (int p = 0; p < n; ++p) sc[p] *= inv;
}

// One head of the projection: x scaled by `pre` (a folded norm's factor), plus bias (when given),
// RMS-normed over D with weight w (when given), then rotate-half RoPE with this position's cos/sin.
inline void norm_rope_head(const float* x, float pre, const float* bias, const float* w, const float* cs, float eps,
                           int D, float* out) {
  float y[1024];  // head_dim is at most 1024 (the contract checks the cache's shape)
  for (int d = 0; d < D; ++d) y[d] = bias ? x[d] * pre + bias[d] : x[d] * pre;
  float inv = 1.0f;
  if (w) {
    double ss = 0;
    for (int d = 0; d < D; ++d) ss += static_cast<double>(y[d]) * y[d];
    inv = static_cast<float>(1.0 / std::sqrt(ss / D + eps));
  }
  const int half = D / 2;
  for (int d = 0; d < half; ++d) {
    const float x1 = w ? y[d] * inv * w[d] : y[d], x2 = w ? y[d + half] * inv * w[d + half] : y[d + half];
    const float c = cs[d], s = cs[half + d];
    out[d] = x1 * c - x2 * s;
    out[d + half] = x2 * c + x1 * s;
  }
}

// dst[0, n) = FP8 of src[0, n) / scale (round to nearest even, saturating).
inline void store_fp8_row(DType t, const float* src, float scale, char* dst, int n) {
  uint8_t* d = reinterpret_cast<uint8_t*>(dst);
  if (t == DType::f8e4m3)
    for (int i = 0; i < n; ++i) d[i] = f32_to_fp8_e4m3(src[i] / scale);
  else
    for (int i = 0; i < n; ++i) d[i] = f32_to_fp8_e5m2(src[i] / scale);
}

}  // namespace

void qk_norm_rope_store(const RopeStore& in, const float* in_scale, const PagedKV& cache, const Tensor& q_out,
                        ThreadPool& pool) {
  const int Hq = in.num_q_heads, Hkv = in.num_kv_heads, D = cache.head_dim();
  if (D > 1024) throw std::invalid_argument("qk_norm_rope_store: head_dim " + std::to_string(D) + " > 1024");
  const int64_t T = rows_of(in.qkv);
  const float *qkv = in.qkv.ptr<float>(), *q_norm_w = in.q_norm_w.ptr<float>(), *k_norm_w = in.k_norm_w.ptr<float>();
  const float *bias = in.qkv_bias.ptr<float>(), *cos_sin = in.cos_sin.ptr<float>();
  const int32_t *positions = in.positions.ptr<int32_t>(), *slot_mapping = in.slot_mapping;
  float* q_out_p = q_out.ptr<float>();
  char *k_cache = static_cast<char*>(cache.k.data), *v_cache = static_cast<char*>(cache.v.data);
  const DType kv_dtype = cache.k.dtype;
  const int64_t kv_elem = static_cast<int64_t>(dtype_size(kv_dtype));
  const float eps = in.eps;
  const int64_t row = static_cast<int64_t>(Hq + 2 * Hkv) * D;
  const int heads = Hq + Hkv;  // v heads are a plain copy, done with their k head
  const int64_t grain = std::max<int64_t>(1, 8192 / D);
  auto bias_at = [bias](int64_t col) { return bias ? bias + col : nullptr; };
  pool.parallel_for(T * heads, grain, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t t = item / heads;
      const int h = static_cast<int>(item % heads);
      const float* src = qkv + t * row;
      const float* cs = cos_sin + static_cast<int64_t>(positions[t]) * D;
      const float pre = in_scale ? in_scale[t] : 1.0f;
      if (h < Hq) {
        const int64_t col = static_cast<int64_t>(h) * D;
        norm_rope_head(src + col, pre, bias_at(col), q_norm_w, cs, eps, D, q_out_p + (t * Hq + h) * D);
      } else {
        const int kh = h - Hq;
        const int64_t slot = slot_mapping[t];
        if (slot < 0) continue;
        const int64_t dst = (slot * Hkv + kh) * D * kv_elem;
        const int64_t kcol = static_cast<int64_t>(Hq + kh) * D, vcol = static_cast<int64_t>(Hq + Hkv + kh) * D;
        float k[1024], v[1024];  // the rows in f32, then stored in the cache's dtype
        norm_rope_head(src + kcol, pre, bias_at(kcol), k_norm_w, cs, eps, D, k);
        for (int d = 0; d < D; ++d) v[d] = bias ? src[vcol + d] * pre + bias[vcol + d] : src[vcol + d] * pre;
        if (is_fp8(kv_dtype)) {  // the contract's rule: x / scale in float32, then rounded once
          store_fp8_row(kv_dtype, k, cache.k_scale, k_cache + dst, D);
          store_fp8_row(kv_dtype, v, cache.v_scale, v_cache + dst, D);
        } else {
          with_float_dtype(kv_dtype, [&]<DType T>() {
            store_row<T>(k, k_cache + dst, D);
            store_row<T>(v, v_cache + dst, D);
          });
        }
      }
    }
  });
}

namespace {

struct AttentionShape {
  int num_q_heads, num_kv_heads, head_dim, block_size;
};

struct AttnArgs {
  const float* q;
  const void *k_cache, *v_cache;  // of the cache's dtype
  const AttentionMetadata& meta;
  const AttentionShape& s;
  AttentionOptions opts;
  float* out;
  // The cache's scales (1 but for FP8): k_scale goes into the score's scale (scale * q.(k * k_scale)
  // = (scale * k_scale) * q.k), v_scale multiplies the weighted sum of V.
  float k_scale = 1.0f, v_scale = 1.0f;
};

// The first key position a query at position `pos` sees: a sliding window's start, or 0.
inline int first_key(const AttentionOptions& o, int pos) { return o.window > 0 ? std::max(0, pos - o.window + 1) : 0; }

// Gemma's soft-capping of scores [0, n), when set.
inline void softcap_scores(const AttentionOptions& o, float* sc, int n) {
  if (o.softcap <= 0) return;
  const float inv = 1.0f / o.softcap;
  for (int p = 0; p < n; ++p) sc[p] = o.softcap * std::tanh(sc[p] * inv);
}

// One new token t against its context, for the G query heads of kv head kvh: two passes per head
// (scores, then max-subtracted softmax and P.V). Decode, and short prefill chunks, take this path.
template <DType T>
void attend_token(const AttnArgs& a, int t, int kvh) {
  const AttentionMetadata& meta = a.meta;
  const AttentionShape& s = a.s;
  const float* q = a.q;
  const void *k_cache = a.k_cache, *v_cache = a.v_cache;
  const float scale = a.opts.scale * a.k_scale;
  float* out = a.out;
  const int G = s.num_q_heads / s.num_kv_heads;
  const int D = s.head_dim, bs = s.block_size, Hkv = s.num_kv_heads;
  thread_local std::vector<float> scores;  // [G, n - lo], reused across items and calls
  const int i = static_cast<int>(std::upper_bound(meta.cu_seqlens_q, meta.cu_seqlens_q + meta.num_seqs + 1, t) -
                                 meta.cu_seqlens_q) - 1;
  const int q_len = meta.cu_seqlens_q[i + 1] - meta.cu_seqlens_q[i];
  const int j = t - meta.cu_seqlens_q[i];
  const int n = meta.seqlens_k[i] - q_len + j + 1;  // keys at positions [lo, n)
  const int lo = first_key(a.opts, n - 1), m = n - lo;
  const int32_t* table = meta.block_tables + static_cast<int64_t>(i) * meta.max_num_blocks;
  const float* qh = q + (static_cast<int64_t>(t) * s.num_q_heads + kvh * G) * D;
  float* oh = out + (static_cast<int64_t>(t) * s.num_q_heads + kvh * G) * D;
  if (m <= 0) {  // nothing to attend to (cannot happen for valid metadata): define it as zeros
    std::fill(oh, oh + static_cast<int64_t>(G) * D, 0.0f);
    return;
  }
  if (scores.size() < static_cast<size_t>(G) * m) scores.resize(static_cast<size_t>(G) * m);
  const int64_t stride = static_cast<int64_t>(Hkv) * D;  // elements between a head's rows
  for (int p0 = lo; p0 < n;) {
    const int rows = std::min(bs - p0 % bs, n - p0);
    const int64_t base = static_cast<int64_t>(table[p0 / bs]) * bs + p0 % bs;
    const void* k = row_at<T>(k_cache, base * Hkv + kvh, D);
    int g = 0;
    for (; g + 1 < G; g += 2) {  // pairs of heads: each key row read once for both
      float* sc = scores.data() + static_cast<size_t>(g) * m + (p0 - lo);
      int r = 0;
      for (; r + 4 <= rows; r += 4)
        dot4x2<T>(qh + g * D, row_at<T>(k, r, stride), stride, D, scale, sc + r, sc + m + r);
      for (; r < rows; ++r) {
        sc[r] = scale * dot<T>(qh + g * D, row_at<T>(k, r, stride), D);
        sc[m + r] = scale * dot<T>(qh + (g + 1) * D, row_at<T>(k, r, stride), D);
      }
    }
    for (; g < G; ++g) {  // an odd head left (G = 1, or odd G)
      float* sc = scores.data() + static_cast<size_t>(g) * m + (p0 - lo);
      int r = 0;
      for (; r + 8 <= rows; r += 8) dot8<T>(qh + g * D, row_at<T>(k, r, stride), stride, D, scale, sc + r);
      for (; r < rows; ++r) sc[r] = scale * dot<T>(qh + g * D, row_at<T>(k, r, stride), D);
    }
    p0 += rows;
  }
  for (int g = 0; g < G; ++g) {
    softcap_scores(a.opts, scores.data() + static_cast<size_t>(g) * m, m);
    softmax_inplace(scores.data() + static_cast<size_t>(g) * m, m);
  }
  // out = P V in chunks of up to 64 columns, each held in registers over all the keys; a pair of
  // heads in chunks of 32 columns (two heads' accumulators), each V row read once for both.
  int g = 0;
  if (D % 32 == 0)
    for (; g + 1 < G; g += 2) {
      const float *w0 = scores.data() + static_cast<size_t>(g) * m, *w1 = w0 + m;
      for (int d0 = 0; d0 < D; d0 += 32) {
        const PagedRows<T> v{row_at<T>(v_cache, static_cast<int64_t>(kvh) * D + d0, 1), table, bs, stride};
        float *o0 = oh + g * D + d0, *o1 = o0 + D;
        weighted_sum2<4, T>(w0, w1, lo, n, v, o0, o1);
        if (a.v_scale != 1.0f)
          for (int d = 0; d < 32; ++d) o0[d] *= a.v_scale, o1[d] *= a.v_scale;
      }
    }
  for (; g < G; ++g) {
    const float* w = scores.data() + static_cast<size_t>(g) * m;
    for (int d0 = 0; d0 < D; d0 += 64) {
      const int width = std::min(64, D - d0);
      const PagedRows<T> v{row_at<T>(v_cache, static_cast<int64_t>(kvh) * D + d0, 1), table, bs, stride};
      float* o = oh + g * D + d0;
      switch (width % 8 ? 0 : width / 8) {
        case 8: weighted_sum<8, T>(w, lo, n, v, o); break;
        case 7: weighted_sum<7, T>(w, lo, n, v, o); break;
        case 6: weighted_sum<6, T>(w, lo, n, v, o); break;
        case 5: weighted_sum<5, T>(w, lo, n, v, o); break;
        case 4: weighted_sum<4, T>(w, lo, n, v, o); break;
        case 3: weighted_sum<3, T>(w, lo, n, v, o); break;
        case 2: weighted_sum<2, T>(w, lo, n, v, o); break;
        case 1: weighted_sum<1, T>(w, lo, n, v, o); break;
        default: weighted_sum_any(w, lo, n, v, width, o);
      }
      if (a.v_scale != 1.0f)
        for (int d = 0; d < width; ++d) o[d] *= a.v_scale;
    }
  }
}

// Query tokens [j0, j1) of prefill sequence i against their context, for kv head kvh, as two
// GEMMs per query head: S = scale * Q K^T over the gathered keys [0, n_max), a causal mask and
// row softmax, then O = P V. The same math as attend_token, blocked so OpenBLAS does the work.
template <DType T>
void attend_tile(const AttnArgs& a, int i, int kvh, int j0, int j1) {
  const AttentionMetadata& meta = a.meta;
  const AttentionShape& s = a.s;
  const int G = s.num_q_heads / s.num_kv_heads;
  const int D = s.head_dim, bs = s.block_size, Hkv = s.num_kv_heads, Hq = s.num_q_heads;
  const int q_len = meta.cu_seqlens_q[i + 1] - meta.cu_seqlens_q[i];
  const int start = meta.seqlens_k[i] - q_len;  // cached tokens before this chunk
  const int n_max = start + j1, tq = j1 - j0;
  const int lo = first_key(a.opts, start + j0), width = n_max - lo;  // the tile's keys: [lo, n_max)
  const int32_t* table = meta.block_tables + static_cast<int64_t>(i) * meta.max_num_blocks;
  thread_local std::vector<float> kbuf, vbuf, sbuf;
  kbuf.resize(static_cast<size_t>(width) * D);
  vbuf.resize(static_cast<size_t>(width) * D);
  sbuf.resize(static_cast<size_t>(tq) * width);
  for (int p = lo; p < n_max; ++p) {  // gather this head's K/V rows out of the pages, as f32
    const int64_t src = (static_cast<int64_t>(table[p / bs]) * bs + p % bs) * Hkv + kvh;
    load_row<T>(row_at<T>(a.k_cache, src, D), kbuf.data() + static_cast<size_t>(p - lo) * D, D);
    load_row<T>(row_at<T>(a.v_cache, src, D), vbuf.data() + static_cast<size_t>(p - lo) * D, D);
  }
  const int64_t t0 = meta.cu_seqlens_q[i] + j0;
  for (int g = 0; g < G; ++g) {
    const int64_t col = static_cast<int64_t>(kvh * G + g) * D;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, tq, width, D, a.opts.scale * a.k_scale,
                a.q + t0 * Hq * D + col, Hq * D, kbuf.data(), D, 0.0f, sbuf.data(), width);
    for (int r = 0; r < tq; ++r) {
      float* sc = sbuf.data() + static_cast<size_t>(r) * width;
      const int n = start + j0 + r + 1;                       // causal: keys before n
      const int first = first_key(a.opts, n - 1) - lo;        // and within the window
      std::fill(sc, sc + first, 0.0f);
      softcap_scores(a.opts, sc + first, n - lo - first);
      softmax_inplace(sc + first, n - lo - first);
      std::fill(sc + (n - lo), sc + width, 0.0f);
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, tq, D, width, a.v_scale, sbuf.data(), width, vbuf.data(), D,
                0.0f, a.out + t0 * Hq * D + col, Hq * D);
  }
}

// A work item: one query token (seq = -1, begin = the token) or a tile of prefill sequence seq's
// query tokens [begin, end), for kv head kvh.
struct Item {
  int seq, kvh, begin, end;
};

}  // namespace

void paged_attention(const Tensor& q, const PagedKV& cache, const AttentionMetadata& meta, const AttentionOptions& opts,
                     const Tensor& out, ThreadPool& pool) {
  const int Hkv = cache.num_kv_heads();
  const AttentionShape s{static_cast<int>(q.size(1)), Hkv, cache.head_dim(), cache.block_size()};
  const AttnArgs args{q.ptr<float>(), cache.k.data, cache.v.data, meta, s, opts, out.ptr<float>(), cache.k_scale,
                      cache.v_scale};
  // Work items, longest first so the dynamic schedule ends evenly: query tiles of prefill chunks
  // of at least kMinTiledQuery tokens, then single tokens (decode and short chunks).
  thread_local std::vector<Item> scratch;
  std::vector<Item>& items = scratch;  // a reference: pool threads read the caller's list
  items.clear();
  bool tiled = false;
  for (int i = 0; i < meta.num_seqs; ++i) {
    const int q_len = meta.cu_seqlens_q[i + 1] - meta.cu_seqlens_q[i];
    if (q_len < kMinTiledQuery) continue;
    tiled = true;
    for (int j0 = 0; j0 < q_len; j0 += kQueryTile)
      for (int h = 0; h < Hkv; ++h) items.push_back({i, h, j0, std::min(q_len, j0 + kQueryTile)});
  }
  for (int i = 0; i < meta.num_seqs; ++i) {
    const int q_len = meta.cu_seqlens_q[i + 1] - meta.cu_seqlens_q[i];
    if (q_len >= kMinTiledQuery) continue;
    for (int t = meta.cu_seqlens_q[i]; t < meta.cu_seqlens_q[i + 1]; ++t)
      for (int h = 0; h < Hkv; ++h) items.push_back({-1, h, t, t + 1});
  }
  if (tiled) blas_single_thread();
  with_kv_dtype(cache.k.dtype, [&]<DType T>() {
    pool.parallel_for_dynamic(static_cast<int64_t>(items.size()), [&](int64_t k) {
      const Item& it = items[k];
      if (it.seq < 0) attend_token<T>(args, it.begin, it.kvh);
      else attend_tile<T>(args, it.seq, it.kvh, it.begin, it.end);
    });
  });
}

}  // namespace nanovllm::cpu
