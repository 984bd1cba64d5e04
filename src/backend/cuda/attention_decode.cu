// Paged decode attention (one query token per sequence), split-KV ("flash-decoding"):
// block (split, kv head, sequence) reads its slice of that kv head's K and V rows once and serves
// all G = Hq/Hkv query heads that share them (GQA). Pass 1 computes the slice's scores into shared
// memory, pass 2 turns them into exp weights, pass 3 accumulates V; with more than one split the
// last block to finish for a (sequence, kv head) merges the splits by their (max, sum).
// Graph-safe: lengths come from device arrays, the grid from host upper bounds (blocks past a
// sequence's end exit at once). Small batches (PV) lay the grid heads first, blockIdx (kv head,
// split, sequence): the splits holding keys, every head's first ones, are dispatched before the
// empty ones (batch 1 2.6-4.2% faster on an H100); large batches keep (split, kv head, sequence).
// Options (AttentionOptions), template arguments so that the plain instantiation is the kernel as
// it was: WINDOW, the query (position seqlen - 1) sees keys [lo, seqlen), lo = max(0, seqlen -
// window), and the splits are laid from lo, not from 0: no block reads a key before the window and
// the host sizes the grid for min(max_seqlen_k, window) tokens; SOFTCAP, each score becomes
// softcap * tanh(score / softcap) (q is pre-scaled by scale / softcap, the tanh times softcap
// log2(e) puts it in the log2 domain).
// An FP8 cache (C = e4m3 or e5m2) takes decode_mma_kernel: the same passes on tensor cores
// (mma.sync m16n8k16 in f16, every FP8 value widened exactly), because at one byte an element the
// scalar kernel's per-token instructions, not the bytes, bound it. Its K scale goes into the
// scores' multiplier, its V scale into the output (PagedKV's scales).
// Fused RoPE (rope.qkv set): the step's q/k norm + RoPE + KV store (qk_norm_rope_store) done by
// the attention blocks, one kernel a layer fewer: each block rotates its own G query heads from the
// qkv projection into shared memory, and the block whose split holds the newest token (the last,
// the only one that reads it) also stores that token's K and V rows into the cache for later
// steps and keeps them in shared memory, where it reads them from (a row written in a kernel is
// not read back through the cache's read-only path). Every value is computed as
// qk_norm_rope_store computes it (rope.cuh), q rounded to bf16, so the output and the cache are
// the same bits either way.
#include <stdexcept>
#include <string>

#include "backend/cuda/common.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels.h"
#include "backend/cuda/mma.cuh"
#include "backend/cuda/rope.cuh"

namespace nanovllm::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kUnroll = 4;  // tokens per lane group in flight: 4 independent 16-byte loads
constexpr float kLog2e = 1.4426950408889634f;
constexpr long long kPrefetchVPairs = 64;  // (sequence, kv head) pairs up to which PV kernels run
constexpr int kMergeLoads = 8;  // float4 loads in flight a thread in the merge of splits

// A decode block's shared memory (and combine_kernel's, with partition 0): the scores [G][partition],
// which in the block that merges hold the splits' maxima [G][num_splits]; the warps' partials red
// [kWarps][G][D] (16-byte aligned: the merge reads it as float4; the fused RoPE's q [G][D] bf16
// before pass 1); the stats [G][2] (max, sum; in the merge 1 / the sums and the maxima's maximum);
// the fused RoPE's newest K and V rows (D cache elements each, 16-byte aligned).
__host__ __device__ constexpr int scores_floats(int G, int partition, int num_splits) {
  return G * (partition > num_splits ? partition : (num_splits + 3) / 4 * 4);
}
__host__ __device__ constexpr size_t decode_smem_floats(int G, int D, int partition, int num_splits) {
  return (size_t)scores_floats(G, partition, num_splits) + (size_t)kWarps * G * D + (2 * G + 3) / 4 * 4 + D;
}
struct DecodeSmem {
  float *scores, *red, *stats, *newest;
};
template <int D>
__device__ __forceinline__ DecodeSmem decode_smem(float* smem, int G, int partition, int num_splits) {
  float* red = smem + scores_floats(G, partition, num_splits);
  float* stats = red + kWarps * G * D;
  return {smem, red, stats, stats + (2 * G + 3) / 4 * 4};
}

// The fused RoPE's inputs (kernels.h's RopeStoreArgs of a decode batch: token b is sequence b's
// newest; bf16 norm weights and bias). qkv == nullptr: q comes rotated, the K/V rows stored.
struct RopeIn {
  const bf16* qkv;
  const bf16* rms_rows;  // a folded decoder norm's rows (nullptr: none)
  int hidden;
  float rms_eps;
  const bf16 *bias, *q_norm_w, *k_norm_w;  // nullptr: none
  const int32_t* positions;
  const float* cos_sin;
  float eps;
  const int32_t* slot_mapping;
  void *k_cache, *v_cache;  // where the newest rows are stored (the kernel reads the cache elsewhere)
  float k_scale;            // an FP8 cache's K scale (the V scale is the kernel's v_scale)
};

// Where the fused RoPE of sequence b reads its angles and stores its newest K/V (slot -1:
// nowhere), and whether this block holds the newest token. Host inputs and a constant table, so
// read before pdl_wait().
struct RopeAt {
  const float* cs;
  int slot;
  bool newest;
};
template <int D>
__device__ __forceinline__ RopeAt rope_at(const RopeIn& r, int b, bool newest) {
  if (!r.qkv) return {nullptr, -1, false};
  return {r.cos_sin + (size_t)r.positions[b] * D, newest ? r.slot_mapping[b] : -1, newest};
}

// The fused RoPE of a block of (sequence b, kv head h), after pdl_wait(): its G query heads,
// rotated and rounded to bf16, into qs [G][D] (over sm.red, unused until pass 3 ends); in the
// block holding the newest token, that token's K and V rows into the cache (at.slot; none for a
// padding row, -1) and into sm.newest (kn, vn [D]). A warp a head; every thread calls it (a folded
// norm sums the row over the block).
template <int D, class C>
__device__ __forceinline__ void rope_heads(const RopeIn& r, RopeAt at, int b, int h, int hq, int hkv, int G,
                                           float v_scale, DecodeSmem sm) {
  constexpr int P = D / 64;
  bf16* qs = reinterpret_cast<bf16*>(sm.red);
  C* kn = reinterpret_cast<C*>(sm.newest);
  C* vn = kn + D;
  const int warp = threadIdx.x >> 5;
  const bf16* row = r.qkv + (size_t)b * (hq + 2 * hkv) * D;
  const float pre = r.rms_rows ? block_row_inv_rms(r.rms_rows + (size_t)b * r.hidden, r.hidden, r.rms_eps) : 1.f;
  const float* cs = at.cs;
  for (int i = warp; i < G + at.newest; i += kWarps) {  // the G q heads, then kv head h
    const int col = i < G ? h * G + i : hq + h;       // the head's place in the qkv row
    float x[P], y[P];
    load_head<P>(row + (size_t)col * D, x, y);
    norm_rope<P>(x, y, pre, r.bias ? r.bias + (size_t)col * D : nullptr, i < G ? r.q_norm_w : r.k_norm_w, r.eps, cs);
    if (i < G) {
      store_q_head<P>(x, y, qs + i * D);
      continue;
    }
    const size_t vcol = (size_t)(hq + hkv + h) * D;
    const bf16* vbias = r.bias ? r.bias + vcol : nullptr;
    store_k_head<P>(x, y, r.k_scale, kn);
    store_v_head<P>(row + vcol, pre, vbias, v_scale, vn);
    if (at.slot >= 0) {
      const size_t dst = ((size_t)at.slot * hkv + h) * D;
      store_k_head<P>(x, y, r.k_scale, static_cast<C*>(r.k_cache) + dst);
      store_v_head<P>(row + vcol, pre, vbias, v_scale, static_cast<C*>(r.v_cache) + dst);
    }
  }
  __syncthreads();  // qs, kn and vn are the block's to read
}

// A split's partial for query row qrow: its unnormalised output (D floats at o + (qrow num_splits +
// split) D) and its (max, sum) (a float2 at st + qrow num_splits + split), st after all rows' o.
struct Partials {
  float* o;
  float2* st;
};
template <int D>
__device__ __forceinline__ Partials partials(float* workspace, int num_seqs, int hq, int num_splits) {
  return {workspace, reinterpret_cast<float2*>(workspace + (size_t)num_seqs * hq * num_splits * D)};
}

// out for the G query rows from qrow0 (one kv head's), from the `used` splits' partials:
// sum_s 2^(m_s - M) o_s / sum_s 2^(m_s - M) l_s, by the whole block. A warp a head reads the
// splits' (max, sum) once, keeping the maxima in w (G x used floats of shared memory) and M and 1 /
// the sum in mi (2 G floats: 1 / sum at g, M at G + g); then each thread sums float4 columns of o
// over a share of the splits, kMergeLoads loads in flight, and red (kWarps G D floats) adds the
// shares. Partials were written by other blocks (or the launch before), so they are read past L1
// (__ldcg). Not inlined: only one block of a (sequence, kv head) runs it, and inlined it cost the
// split kernels registers.
template <int D>
__device__ __noinline__ void merge_splits(Partials pt, size_t qrow0, int G, int num_splits, int used, float* w,
                                          float* mi, float* red, bf16* out) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  for (int g = warp; g < G; g += nwarps) {
    const float2* st = pt.st + (qrow0 + g) * num_splits;
    float m = -INFINITY, l = 0.f;  // this lane's splits, online
    for (int s = lane; s < used; s += 32) {
      const float2 ml = __ldcg(st + s);
      w[g * used + s] = ml.x;
      if (ml.x > m) l = l * exp2f(m - ml.x) + ml.y, m = ml.x;
      else l += exp2f(ml.x - m) * ml.y;
    }
    const float M = warp_max(m);
    l = warp_sum(l * exp2f(m - M));
    if (lane == 0) mi[g] = 1.f / l, mi[G + g] = M;
  }
  __syncthreads();
  constexpr int C = D / 4;  // float4 columns a head
  const int cols = G * C, P = max(1, min(kWarps, (int)blockDim.x / cols));  // P threads share a column's splits
  float4* r4 = reinterpret_cast<float4*>(red);
  for (int i = threadIdx.x; i < P * cols; i += blockDim.x) {
    const int p = i / cols, col = i % cols, g = col / C;
    const float4* src = reinterpret_cast<const float4*>(pt.o + (qrow0 + g) * num_splits * D) + col % C;
    const float* wg = w + g * used;
    const float M = mi[G + g];
    float4 a = make_float4(0.f, 0.f, 0.f, 0.f);
    auto add = [&](float x, float4 v) { a.x += x * v.x, a.y += x * v.y, a.z += x * v.z, a.w += x * v.w; };
    int s = p;
    for (; s + (kMergeLoads - 1) * P < used; s += kMergeLoads * P) {
      float4 v[kMergeLoads];
#pragma unroll
      for (int u = 0; u < kMergeLoads; ++u) v[u] = __ldcg(src + (size_t)(s + u * P) * C);
#pragma unroll
      for (int u = 0; u < kMergeLoads; ++u) add(exp2f(wg[s + u * P] - M), v[u]);
    }
    for (; s < used; s += P) add(exp2f(wg[s] - M), __ldcg(src + (size_t)s * C));
    r4[i] = a;
  }
  __syncthreads();
  for (int col = threadIdx.x; col < cols; col += blockDim.x) {
    float4 a = r4[col];
    for (int p = 1; p < P; ++p) {
      const float4 v = r4[p * cols + col];
      a.x += v.x, a.y += v.y, a.z += v.z, a.w += v.w;
    }
    const int g = col / C;
    const float k = mi[g];
    __nv_bfloat162* o = reinterpret_cast<__nv_bfloat162*>(out + (qrow0 + g) * D + (col % C) * 4);
    o[0] = __floats2bfloat162_rn(a.x * k, a.y * k);
    o[1] = __floats2bfloat162_rn(a.z * k, a.w * k);
  }
}

// The last block of a (sequence, kv head) to finish merges the `used` splits (those holding
// tokens) of its G query heads, so no second launch is needed; it resets the counter for the next
// call (or graph replay), in shared memory this block no longer needs (decode_smem).
template <int D>
__device__ void finish_splits(Partials pt, int* counters, int b, int h, int hq, int hkv, int G, int num_splits,
                              int used, DecodeSmem sm, bf16* out) {
  __shared__ bool last;
  __threadfence();  // this thread's partials are visible device-wide before the count says so
  __syncthreads();
  if (threadIdx.x == 0) {
    const int done = atomicAdd(&counters[b * hkv + h], 1);
    last = done == used - 1;
    if (last) counters[b * hkv + h] = 0;
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  merge_splits<D>(pt, (size_t)b * hq + h * G, G, num_splits, used, sm.scores, sm.stats, sm.red, out);
}

// The first key a decode query of a sequence with `seqlen` tokens sees: its window's start, or 0.
template <bool WINDOW>
__device__ __forceinline__ int first_key(int seqlen, int window) {
  if constexpr (WINDOW) return max(0, seqlen - window);
  else return 0;
}

// A block's split: tokens [start, end) of its sequence, `used` the splits that hold any (those
// from lo = first_key, the window's start); direct: a sequence of one used split writes its output
// itself (when the merge is in-launch).
struct SplitRange {
  int used, start, end;
  bool direct;
};
template <bool WINDOW>
__device__ __forceinline__ SplitRange split_range(int seqlen, int window, int split, int num_splits, int partition,
                                                  const int* counters) {
  const int lo = first_key<WINDOW>(seqlen, window);
  const int used = min(num_splits, (seqlen - lo + partition - 1) / partition);
  const int start = lo + split * partition;
  return {used, start, min(start + partition, seqlen), num_splits == 1 || (used == 1 && counters)};
}

// Splits past the sequence's end (the grid is sized for the longest one, under a graph for
// max_model_len) leave at once and take no part in the merge count; split 0 of an empty sequence
// writes zeros rather than leave garbage. True when this block has nothing more to do.
template <int D>
__device__ __forceinline__ bool past_end(int split, int used, int G, int b, int h, int hq, bf16* out) {
  if (split < used) return false;
  if (split == 0) {
    pdl_wait();
    for (int i = threadIdx.x; i < G * D; i += blockDim.x) out[((size_t)b * hq + h * G) * D + i] = from_f<bf16>(0.f);
  }
  return true;
}

// Pass 2: per head (a warp each), the max and the sum of exp2 over the split's n scores, which
// become the weights; stats[2g], stats[2g + 1] = max, sum.
__device__ __forceinline__ void scores_to_weights(float* scores, float* stats, int G, int n, int partition, int warp,
                                                  int lane) {
  for (int g = warp; g < G; g += kWarps) {
    float m = -INFINITY;
    for (int i = lane; i < n; i += 32) m = fmaxf(m, scores[g * partition + i]);
    m = warp_max(m);
    float s = 0.f;
    for (int i = lane; i < n; i += 32) {
      const float p = exp2f(scores[g * partition + i] - m);
      scores[g * partition + i] = p;
      s += p;
    }
    s = warp_sum(s);
    if (lane == 0) { stats[2 * g] = m; stats[2 * g + 1] = s; }
  }
}

// The end: the warps' partial outputs red [kWarps][G][D] summed and times the V scale, written to
// out (a sequence of one split) or as the split's partial, the last block of the (sequence, kv
// head) merging them.
template <int D>
__device__ __forceinline__ void write_split(DecodeSmem sm, float v_scale, int G, int b, int h, int hq, int hkv,
                                            int split, int num_splits, int used, bool direct, float* workspace,
                                            int* counters, bf16* out) {
  const float *red = sm.red, *stats = sm.stats;
  const Partials pt = partials<D>(workspace, gridDim.z, hq, num_splits);
  for (int i = threadIdx.x; i < G * D; i += blockDim.x) {
    const int g = i / D, d = i % D;
    float o = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) o += red[(w * G + g) * D + d];
    o *= v_scale;
    const size_t qrow = (size_t)b * hq + h * G + g;
    if (direct) {
      out[qrow * D + d] = from_f<bf16>(o / stats[2 * g + 1]);
    } else {
      const size_t row = qrow * num_splits + split;
      pt.o[row * D + d] = o;
      if (d == 0) pt.st[row] = make_float2(stats[2 * g], stats[2 * g + 1]);
    }
  }
  if (!direct && counters)
    finish_splits<D>(pt, counters, b, h, hq, hkv, G, num_splits, used, sm, out);
}

// A token's head row of D elements is read by LPT = D/8 lanes, 8 elements each; a warp covers
// TPW = 32/LPT tokens at a time. MAXG bounds G (kept in registers).
// PV: also load the first round of V rows before pdl_wait() (small batches, where latency and not
// occupancy decides; the extra registers would cost occupancy at large ones).
// q_scale: what q is multiplied by (scale log2(e); with SOFTCAP scale / softcap; times the K
// scale of an FP8 cache); v_scale: the V scale of an FP8 cache (1 else); cap_log2: softcap
// log2(e) (SOFTCAP only); window: the window (WINDOW only); rope: the fused RoPE (rope.qkv set),
// q then unused.
template <class C, int D, int MAXG, bool PV, bool WINDOW, bool SOFTCAP>
__global__ void __launch_bounds__(kWarps * 32, MAXG <= 2 && !PV ? 9 : 1)
decode_kernel(const bf16* __restrict__ q, const C* __restrict__ k_cache, const C* __restrict__ v_cache,
              const int32_t* __restrict__ seqlens_k, const int32_t* __restrict__ block_tables, int max_num_blocks,
              int hq, int hkv, int log2_bs, float q_scale, float v_scale, float cap_log2, int window, int num_splits,
              int partition, float* __restrict__ workspace, int* __restrict__ counters, bf16* __restrict__ out,
              RopeIn rope, bool heads_first) {
  using V8 = Vec8<C>;
  constexpr int LPT = D / 8, TPW = 32 / LPT, TPI = TPW * kWarps;
  extern __shared__ float smem[];
  pdl_launch_dependents();
  // Before pdl_wait() (while the kernels before this one finish) only what no kernel of this
  // forward writes is read: the lengths, block tables, positions and slots (the host's copy before
  // the forward), the RoPE table, and K rows other than the newest, which earlier steps stored.
  const int split = heads_first ? blockIdx.y : blockIdx.x, h = heads_first ? blockIdx.x : blockIdx.y, b = blockIdx.z;
  const int G = hq / hkv;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, li = lane % LPT, tg = lane / LPT;
  const int seqlen = seqlens_k[b];
  const SplitRange sr = split_range<WINDOW>(seqlen, window, split, num_splits, partition, counters);
  if (past_end<D>(split, sr.used, G, b, h, hq, out)) return;
  const int used = sr.used, start = sr.start, end = sr.end, n = end - start;
  const bool direct = sr.direct;
  const DecodeSmem sm = decode_smem<D>(smem, G, partition, num_splits);
  float *scores = sm.scores, *red = sm.red, *stats = sm.stats;

  const int32_t* bt = block_tables + (size_t)b * max_num_blocks;
  const int bmask = (1 << log2_bs) - 1;
  const size_t head_off = (size_t)h * D + li * 8;
  auto row_of = [&](int t) -> size_t {
    return ((size_t)bt[t >> log2_bs] * (bmask + 1) + (t & bmask)) * hkv * D + head_off;
  };
  const int base0 = start + warp * TPW + tg, newest = seqlen - 1;
  // Rows [start, cend) come from the cache; with the fused RoPE the block holding the newest token
  // (end == seqlen) takes it from shared memory (kn, vn).
  const bool fused = rope.qkv != nullptr;
  const int cend = fused && end == seqlen ? newest : end;
  const C* kn = reinterpret_cast<const C*>(sm.newest) + li * 8;
  const C* vn = kn + D;
  auto key = [&](int t) {
    return t < cend ? *reinterpret_cast<const V8*>(k_cache + row_of(t))
                    : t < end ? *reinterpret_cast<const V8*>(kn) : V8{};
  };
  auto val = [&](int t) {
    return t < cend ? *reinterpret_cast<const V8*>(v_cache + row_of(t))
                    : t < end ? *reinterpret_cast<const V8*>(vn) : V8{};
  };
  V8 kv[kUnroll];
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
    const int t = base0 + u * TPI;
    kv[u] = t < cend && t != newest ? *reinterpret_cast<const V8*>(k_cache + row_of(t)) : V8{};
  }
  V8 vpre[PV ? kUnroll : 1];
  if constexpr (PV) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int t = base0 + u * TPI;
      vpre[u] = t < cend && t != newest ? *reinterpret_cast<const V8*>(v_cache + row_of(t)) : V8{};
    }
  }
  const RopeAt at = rope_at<D>(rope, b, cend < end);
  pdl_wait();
  const bf16* qs = reinterpret_cast<const bf16*>(red);  // the fused RoPE's q (rope_heads)
  if (fused) rope_heads<D, C>(rope, at, b, h, hq, hkv, G, v_scale, sm);
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
    if (base0 + u * TPI == newest) {
      kv[u] = key(newest);
      if constexpr (PV) vpre[u] = val(newest);
    }
  }

  float qf[MAXG][8];
  const bf16* qh = fused ? qs : q + ((size_t)b * hq + h * G) * D;
#pragma unroll
  for (int g = 0; g < MAXG; ++g) {
    if (g < G) {
      load8(qh + g * D + li * 8, qf[g]);
#pragma unroll
      for (int j = 0; j < 8; ++j) qf[g][j] *= q_scale;
    }
  }

  // Rows stream through kv[] without a gap between rounds: as soon as row u of a round is used,
  // row u of the next round is requested into its register, so kUnroll loads stay in flight
  // through the whole pass instead of draining at every round's end.

  // Pass 1: scores (log2 domain) of this slice's tokens (the first round's rows already loaded).
  for (int base = base0; base - tg < end; base += TPI * kUnroll) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      float kf[8];
      unpack8<C>(kv[u], kf);
      const int t = base + u * TPI;
      kv[u] = key(t + TPI * kUnroll);
#pragma unroll
      for (int g = 0; g < MAXG; ++g) {
        if (g < G) {
          float d = 0.f;
#pragma unroll
          for (int j = 0; j < 8; ++j) d += qf[g][j] * kf[j];
#pragma unroll
          for (int o = LPT / 2; o > 0; o >>= 1) d += __shfl_xor_sync(0xffffffffu, d, o);
          if constexpr (SOFTCAP) d = cap_log2 * tanhf(d);
          if (li == 0 && t < end) scores[g * partition + (t - start)] = d;
        }
      }
    }
  }
  // V's first round: in flight while the scores turn into weights (PV: loaded before the wait).
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
    if constexpr (PV) kv[u] = vpre[u];
    else kv[u] = val(base0 + u * TPI);
  }
  __syncthreads();

  scores_to_weights(scores, stats, G, n, partition, warp, lane);  // pass 2
  __syncthreads();

  // Pass 3: weighted sum of V rows.
  float acc[MAXG][8];
#pragma unroll
  for (int g = 0; g < MAXG; ++g)
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[g][j] = 0.f;
  for (int base = base0; base - tg < end; base += TPI * kUnroll) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int t = base + u * TPI;
      float vf[8];
      unpack8<C>(kv[u], vf);
      kv[u] = val(t + TPI * kUnroll);
      if (t < end) {
#pragma unroll
        for (int g = 0; g < MAXG; ++g) {
          if (g < G) {
            const float p = scores[g * partition + (t - start)];
#pragma unroll
            for (int j = 0; j < 8; ++j) acc[g][j] += p * vf[j];
          }
        }
      }
    }
  }
  // Reduce over the lane groups of the warp, then over warps through shared memory.
#pragma unroll
  for (int g = 0; g < MAXG; ++g) {
    if (g < G) {
#pragma unroll
      for (int j = 0; j < 8; ++j) {
#pragma unroll
        for (int o = LPT; o < 32; o <<= 1) acc[g][j] += __shfl_xor_sync(0xffffffffu, acc[g][j], o);
      }
      if (tg == 0) {
#pragma unroll
        for (int j = 0; j < 8; ++j) red[(warp * G + g) * D + li * 8 + j] = acc[g][j];
      }
    }
  }
  __syncthreads();
  write_split<D>(sm, v_scale, G, b, h, hq, hkv, split, num_splits, used, direct, workspace, counters, out);
}

// FP8 caches on tensor cores. Per 16-token tile a warp computes S^T = K Q^T (A = 16 K rows, B = the
// G <= 8 query heads as n = 8 columns) and, in pass 3, O^T += V^T P^T (A = 16 of V's D rows over 16
// tokens, B = the tile's weights of the G heads). Lane (r = lane / 4, c = lane % 4) supplies
// fragment rows r and r + 8 and k pairs 2c, 2c + 1, 2c + 8, 2c + 9; a dot product does not depend
// on the order of its terms, so the head dimension is permuted to make each lane's loads
// contiguous:
// - QK: k-step j, k = 2c + {0, 1, 8, 9} is d = c D/4 + 4j + {0, 1, 2, 3}: a lane reads D/4 bytes
//   of K rows r and r + 8 (one 32-bit word a k-step, its low pair a0a1 / a2a3, its high pair
//   a4a5 / a6a7), and q's same columns as the B fragment. Scores come out as C's rows (tokens).
// - PV: m-block i, fragment row r is d = r D/8 + 2i and row r + 8 is d + 1: a lane reads D/8 bytes
//   of the 4 token rows 2c, 2c + 1, 2c + 8, 2c + 9 and pairs tokens with byte permutes; its
//   accumulators are O[g = 2c, 2c + 1][d = r D/8 .. r D/8 + D/8).
// q stays exact in f16 (a bf16 value is one in f16's range); the scale is applied to the f32
// scores. The weights P go to f16 (relative 2^-11), accumulation is f32. Scores, softmax, the
// reduction over warps, the merge of splits and the fused RoPE are decode_kernel's.
template <int W>
__device__ __forceinline__ void load_words(const void* p, uint32_t (&w)[W]) {
  static_assert(W == 2 || W % 4 == 0, "8 or a multiple of 16 bytes");
  if constexpr (W == 2) {
    const uint2 u = *reinterpret_cast<const uint2*>(p);
    w[0] = u.x, w[1] = u.y;
  } else {
#pragma unroll
    for (int i = 0; i < W / 4; ++i) {
      const uint4 u = reinterpret_cast<const uint4*>(p)[i];
      w[4 * i] = u.x, w[4 * i + 1] = u.y, w[4 * i + 2] = u.z, w[4 * i + 3] = u.w;
    }
  }
}

// In flight a warp: the next KD K tiles (a ring of KD + 1 register tiles) and the next V tile (a
// ring of two).
// At D = 128, KD = 2 and 6 blocks an SM (80 registers instead of 90, which gave 5): on the H100,
// 256 sequences of `bench_cuda_ops decode` 226 against 237 us and the workload 2.4% faster (the
// occupancy is what counts: deeper rings at 4-5 blocks an SM measured slower). D = 64 keeps KD =
// 1 at 9 blocks an SM (56 registers; its occupancy before the ring), D = 256 KD = 1 at 3.
template <class C, int D, bool WINDOW, bool SOFTCAP, int KD = (D == 128 ? 2 : 1),
          int MINB = (D == 128 ? 6 : D == 64 ? 9 : 1)>
__global__ void __launch_bounds__(kWarps * 32, MINB)
decode_mma_kernel(const bf16* __restrict__ q, const C* __restrict__ k_cache, const C* __restrict__ v_cache,
                  const int32_t* __restrict__ seqlens_k, const int32_t* __restrict__ block_tables, int max_num_blocks,
                  int hq, int hkv, int log2_bs, float q_scale, float v_scale, float cap_log2, int window, int num_splits,
                  int partition, float* __restrict__ workspace, int* __restrict__ counters, bf16* __restrict__ out,
                  RopeIn rope, bool heads_first) {
  static_assert(is_fp8_kv<C>, "FP8 caches");
  constexpr int KW = D / 16;  // K: words a row a lane = k-steps; also V's m-blocks
  constexpr int VW = D / 32;  // V: words a token row a lane
  constexpr int kTile = 16;
  extern __shared__ float smem[];
  pdl_launch_dependents();
  const int split = heads_first ? blockIdx.y : blockIdx.x, h = heads_first ? blockIdx.x : blockIdx.y, b = blockIdx.z;
  const int G = hq / hkv;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, r = lane >> 2, c = lane & 3;
  const int seqlen = seqlens_k[b];
  const SplitRange sr = split_range<WINDOW>(seqlen, window, split, num_splits, partition, counters);
  if (past_end<D>(split, sr.used, G, b, h, hq, out)) return;
  const int used = sr.used, start = sr.start, end = sr.end, n = end - start;
  const bool direct = sr.direct;
  const DecodeSmem sm = decode_smem<D>(smem, G, partition, num_splits);
  float *scores = sm.scores, *red = sm.red, *stats = sm.stats;

  const int32_t* bt = block_tables + (size_t)b * max_num_blocks;
  const int bmask = (1 << log2_bs) - 1;
  auto row_of = [&](int t) -> size_t {
    return (((size_t)bt[t >> log2_bs] * (bmask + 1) + (t & bmask)) * hkv + h) * D;
  };
  const uint8_t* kb = reinterpret_cast<const uint8_t*>(k_cache);
  const uint8_t* vb = reinterpret_cast<const uint8_t*>(v_cache);
  const int newest = seqlen - 1;
  // Rows [start, cend) come from the cache, the fused RoPE's newest from shared memory (decode_kernel).
  const bool fused = rope.qkv != nullptr;
  const int cend = fused && end == seqlen ? newest : end;
  const uint8_t* kn = reinterpret_cast<const uint8_t*>(sm.newest);
  const uint8_t* vn = kn + D;
  // K rows tb + r and tb + r + 8, this lane's D/4 bytes; rows outside [start, end) are zeros.
  auto load_k = [&](int tb, uint32_t (&k)[2][KW], bool skip_newest) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int t = tb + r + 8 * i;
      if (t < cend && !(skip_newest && t == newest)) {
        load_words<KW>(kb + row_of(t) + c * (D / 4), k[i]);
      } else if (t < end && !skip_newest) {
        load_words<KW>(kn + c * (D / 4), k[i]);
      } else {
#pragma unroll
        for (int j = 0; j < KW; ++j) k[i][j] = 0;
      }
    }
  };
  // V rows tb + 2c + {0, 1, 8, 9}, this lane's D/8 bytes.
  auto load_v = [&](int tb, uint32_t (&v)[4][VW]) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int t = tb + 2 * c + (i & 1) + 8 * (i >> 1);
      if (t < cend) {
        load_words<VW>(vb + row_of(t) + r * (D / 8), v[i]);
      } else if (t < end) {
        load_words<VW>(vn + r * (D / 8), v[i]);
      } else {
#pragma unroll
        for (int j = 0; j < VW; ++j) v[i][j] = 0;
      }
    }
  };
  auto cvt = [](uint32_t two) { return fp8x2_to_half2_bits<C>(static_cast<uint16_t>(two)); };

  constexpr int kStep = kTile * kWarps, NK = KD + 1;
  int tb = start + warp * kTile;
  uint32_t kbuf[NK][2][KW] = {};
  load_k(tb, kbuf[0], true);
  const RopeAt at = rope_at<D>(rope, b, cend < end);
  pdl_wait();
  const bf16* qs = reinterpret_cast<const bf16*>(red);  // the fused RoPE's q (rope_heads)
  if (fused) rope_heads<D, C>(rope, at, b, h, hq, hkv, G, v_scale, sm);
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    if (tb + r + 8 * i == newest && newest < end)
      load_words<KW>((newest < cend ? kb + row_of(newest) : kn) + c * (D / 4), kbuf[0][i]);
  }
#pragma unroll
  for (int i = 1; i < KD; ++i)
    if (tb + i * kStep < end) load_k(tb + i * kStep, kbuf[i], false);

  // q's B fragment: head g = r, columns c D/4 + 4j + {0, 1} (b0) and {2, 3} (b1).
  uint32_t qb[KW][2];
  if (r < G) {
    const bf16* qr = (fused ? qs + r * D : q + ((size_t)b * hq + h * G + r) * D) + c * (D / 4);
#pragma unroll
    for (int j8 = 0; j8 < D / 32; ++j8) {
      float f[8];
      load8(qr + 8 * j8, f);
      qb[2 * j8][0] = pack_f16(f[0], f[1]), qb[2 * j8][1] = pack_f16(f[2], f[3]);
      qb[2 * j8 + 1][0] = pack_f16(f[4], f[5]), qb[2 * j8 + 1][1] = pack_f16(f[6], f[7]);
    }
  } else {
#pragma unroll
    for (int j = 0; j < KW; ++j) qb[j][0] = qb[j][1] = 0;
  }

  // Pass 1: scores (log2 domain), KD tiles' rows in flight while this one multiplies (a ring of
  // KD + 1 register tiles, the slot a compile-time index).
  for (; tb < end;) {
#pragma unroll
    for (int slot = 0; slot < NK; ++slot, tb += kStep) {
      if (tb >= end) continue;
      if (tb + KD * kStep < end) load_k(tb + KD * kStep, kbuf[(slot + KD) % NK], false);
      const uint32_t(&kc)[2][KW] = kbuf[slot];
      float s[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
      for (int j = 0; j < KW; ++j) {
        const uint32_t a[4] = {cvt(kc[0][j]), cvt(kc[1][j]), cvt(kc[0][j] >> 16), cvt(kc[1][j] >> 16)};
        mma_f16(s, a, qb[j][0], qb[j][1]);
      }
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int t = tb + r + 8 * (e >> 1), g = 2 * c + (e & 1);
        float d = s[e] * q_scale;
        if constexpr (SOFTCAP) d = cap_log2 * tanhf(d);
        if (g < G && t < end) scores[g * partition + (t - start)] = d;
      }
    }
  }
  // V's first tile in flight while the scores turn into weights.
  uint32_t vbuf[2][4][VW] = {};
  tb = start + warp * kTile;
  load_v(tb, vbuf[0]);
  __syncthreads();

  scores_to_weights(scores, stats, G, n, partition, warp, lane);  // pass 2
  __syncthreads();

  // Pass 3: O^T += V^T P^T over this warp's tiles.
  float o[KW][4];
#pragma unroll
  for (int i = 0; i < KW; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
  for (; tb < end;) {
#pragma unroll
    for (int slot = 0; slot < 2; ++slot, tb += kStep) {
      if (tb >= end) continue;
      if (tb + kStep < end) load_v(tb + kStep, vbuf[1 - slot]);
      const uint32_t(&vc)[4][VW] = vbuf[slot];
      uint32_t pb0 = 0, pb1 = 0;
      if (r < G) {
        const float* sp = scores + r * partition + (tb - start);
        const int t0 = tb + 2 * c;
        auto p = [&](int i) { return t0 + i < end ? sp[2 * c + i] : 0.f; };
        pb0 = pack_f16(p(0), p(1));
        pb1 = pack_f16(p(8), p(9));
      }
#pragma unroll
      for (int w = 0; w < VW; ++w) {
        const uint32_t x = __byte_perm(vc[0][w], vc[1][w], 0x5140), y = __byte_perm(vc[0][w], vc[1][w], 0x7362);
        const uint32_t x8 = __byte_perm(vc[2][w], vc[3][w], 0x5140), y8 = __byte_perm(vc[2][w], vc[3][w], 0x7362);
        const uint32_t a0[4] = {cvt(x), cvt(x >> 16), cvt(x8), cvt(x8 >> 16)};
        const uint32_t a1[4] = {cvt(y), cvt(y >> 16), cvt(y8), cvt(y8 >> 16)};
        mma_f16(o[2 * w], a0, pb0, pb1);
        mma_f16(o[2 * w + 1], a1, pb0, pb1);
      }
    }
  }
  // o[i]: O[g = 2c + (e & 1)][d = r D/8 + 2i + (e >> 1)].
#pragma unroll
  for (int i = 0; i < KW; ++i) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int g = 2 * c + (e & 1), d = r * (D / 8) + 2 * i + (e >> 1);
      if (g < G) red[(warp * G + g) * D + d] = o[i][e];
    }
  }
  __syncthreads();
  write_split<D>(sm, v_scale, G, b, h, hq, hkv, split, num_splits, used, direct, workspace, counters, out);
}

// Merges the splits of one (sequence, kv head)'s G query heads (with more (sequence, kv head) pairs
// than counters): merge_splits in decode_smem's layout with no scores.
// window > 0: the splits were laid from the window's start (decode_kernel's WINDOW).
template <int D>
__global__ void combine_kernel(float* __restrict__ workspace, const int32_t* __restrict__ seqlens_k, int hq, int hkv,
                               int num_splits, int partition, int window, bf16* __restrict__ out) {
  extern __shared__ float smem[];
  pdl_launch_dependents();
  pdl_wait();
  const int h = blockIdx.x, b = blockIdx.y, G = hq / hkv;
  const int seqlen = seqlens_k[b];
  const int lo = window > 0 ? max(0, seqlen - window) : 0;
  const int used = min(num_splits, (seqlen - lo + partition - 1) / partition);
  if (used <= 0) return;  // written as zeros by the split kernel
  const DecodeSmem sm = decode_smem<D>(smem, G, 0, num_splits);
  merge_splits<D>(partials<D>(workspace, gridDim.y, hq, num_splits), (size_t)b * hq + h * G, G, num_splits, used,
                  sm.scores, sm.stats, sm.red, out);
}

// Dynamic shared memory beyond 48 KiB is asked for once per kernel, when a launch first needs it.
template <class K>
void allow_smem(K kern, size_t smem, size_t& allowed) {
  if (smem <= allowed) return;
  check(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem), "attention",
        "cudaFuncSetAttribute");
  allowed = smem;
}

// A launch's arguments, handed down the template dispatch below.
struct DecodeLaunch {
  const void* q;
  const PagedKVArgs& kv;
  const DecodeSplits& sp;
  int log2_bs;
  void* out;
  RopeIn rope;
};

template <class C, int D, int MAXG, bool PV, bool WINDOW, bool SOFTCAP>
void launch_dgc(const DecodeLaunch& a, cudaStream_t s) {
  const AttnShape& sh = a.kv.sh;
  const int G = sh.num_q_heads / sh.num_kv_heads;
  const size_t smem = sizeof(float) * decode_smem_floats(G, D, a.sp.partition, a.sp.num_splits);
  auto kern = [] {
    if constexpr (is_fp8_kv<C>) return decode_mma_kernel<C, D, WINDOW, SOFTCAP>;
    else return decode_kernel<C, D, MAXG, PV, WINDOW, SOFTCAP>;
  }();
  static size_t smem_allowed = 48 * 1024;  // per instantiation
  allow_smem(kern, smem, smem_allowed);
  // Small batches (PV) lay the grid heads first: a graph's grid is sized for its length bound, and
  // the blocks holding keys (every kv head's low splits) are dispatched before the empty ones.
  const dim3 grid = PV ? dim3(sh.num_kv_heads, a.sp.num_splits, a.kv.num_seqs)
                       : dim3(a.sp.num_splits, sh.num_kv_heads, a.kv.num_seqs);
  const float k_scale = is_fp8_kv<C> ? a.kv.k_scale : 1.f, v_scale = is_fp8_kv<C> ? a.kv.v_scale : 1.f;
  launch("attention (decode)", kern, grid, kWarps * 32, smem, s, static_cast<const bf16*>(a.q),
         static_cast<const C*>(a.kv.k), static_cast<const C*>(a.kv.v), a.kv.seqlens_k, a.kv.block_tables,
         a.kv.max_num_blocks, sh.num_q_heads, sh.num_kv_heads, a.log2_bs,
         (SOFTCAP ? sh.scale / sh.softcap : sh.scale * kLog2e) * k_scale, v_scale, sh.softcap * kLog2e, sh.window,
         a.sp.num_splits, a.sp.partition, a.sp.workspace, a.sp.counters, static_cast<bf16*>(a.out), a.rope, PV);
  if (a.sp.num_splits > 1 && !a.sp.counters) {
    const size_t csmem = sizeof(float) * decode_smem_floats(G, D, 0, a.sp.num_splits);
    static size_t csmem_allowed = 48 * 1024;
    allow_smem(combine_kernel<D>, csmem, csmem_allowed);
    launch("attention (decode combine)", combine_kernel<D>, dim3(sh.num_kv_heads, a.kv.num_seqs), kWarps * 32, csmem,
           s, a.sp.workspace, a.kv.seqlens_k, sh.num_q_heads, sh.num_kv_heads, a.sp.num_splits, a.sp.partition,
           WINDOW ? sh.window : 0, static_cast<bf16*>(a.out));
  }
}

template <int D, int MAXG, bool PV, bool WINDOW, bool SOFTCAP>
void launch_dg(const DecodeLaunch& a, cudaStream_t s) {
  switch (a.kv.cache_t) {
    case DType::bf16: launch_dgc<bf16, D, MAXG, PV, WINDOW, SOFTCAP>(a, s); break;
    case DType::f8e4m3: launch_dgc<e4m3, D, MAXG, PV, WINDOW, SOFTCAP>(a, s); break;
    case DType::f8e5m2: launch_dgc<e5m2, D, MAXG, PV, WINDOW, SOFTCAP>(a, s); break;
    default:
      throw std::invalid_argument(std::string("attention (decode): the KV cache must be BF16, F8_E4M3 or F8_E5M2, got ") +
                                  dtype_name(a.kv.cache_t));
  }
}

template <int D, int MAXG, bool PV>
void launch_dgo(const DecodeLaunch& a, cudaStream_t s) {
  const bool window = a.kv.sh.window > 0, softcap = a.kv.sh.softcap > 0;
  if (!window && !softcap) launch_dg<D, MAXG, PV, false, false>(a, s);
  else if (window && !softcap) launch_dg<D, MAXG, PV, true, false>(a, s);
  else if (!window) launch_dg<D, MAXG, PV, false, true>(a, s);
  else launch_dg<D, MAXG, PV, true, true>(a, s);
}

template <int D, bool PV>
void launch_d(const DecodeLaunch& a, cudaStream_t s) {
  const int G = a.kv.sh.num_q_heads / a.kv.sh.num_kv_heads;
  if (G <= 1) launch_dgo<D, 1, PV>(a, s);
  else if (G <= 2) launch_dgo<D, 2, PV>(a, s);
  else if (G <= 4) launch_dgo<D, 4, PV>(a, s);
  else if (G <= 8) launch_dgo<D, 8, PV>(a, s);
  else throw std::invalid_argument("attention: " + std::to_string(G) + " query heads per kv head (CUDA takes up to 8)");
}

}  // namespace

bool decode_rope_fusable(const RopeStoreArgs& r, const PagedKVArgs& kv) {
  return r.tokens == kv.num_seqs && r.head_dim == kv.sh.head_dim && r.num_q_heads == kv.sh.num_q_heads &&
         r.num_kv_heads == kv.sh.num_kv_heads && r.cache_t == kv.cache_t && r.k_cache == kv.k && r.v_cache == kv.v &&
         (!r.q_norm_w || r.wt == DType::bf16) && (!r.qkv_bias || r.bias_t == DType::bf16) && r.slot_mapping;
}

void launch_attention_decode(const void* q, const PagedKVArgs& kv, const DecodeSplits& splits, void* out,
                             cudaStream_t s, const RopeStoreArgs* rope) {
  if (kv.num_seqs == 0) return;
  const AttnShape& sh = kv.sh;
  int log2_bs = 0;
  while ((1 << log2_bs) < sh.block_size) ++log2_bs;
  RopeIn ri{};
  if (rope) {
    if (!decode_rope_fusable(*rope, kv))
      throw std::invalid_argument("attention (decode): the RoPE cannot be fused: it needs one token a sequence, the "
                                  "attention's heads, head_dim and cache, and bf16 (or no) norm weights and bias");
    ri = {static_cast<const bf16*>(rope->qkv), static_cast<const bf16*>(rope->rms.rows), rope->rms.hidden,
          rope->rms.eps, static_cast<const bf16*>(rope->qkv_bias), static_cast<const bf16*>(rope->q_norm_w),
          static_cast<const bf16*>(rope->k_norm_w), rope->positions, rope->cos_sin, rope->eps, rope->slot_mapping,
          rope->k_cache, rope->v_cache, rope->k_scale};
  }
  const DecodeLaunch a{q, kv, splits, log2_bs, out, ri};
  // Few (sequence, kv head) pairs: a small grid, latency-bound, so V's first rows load early too.
  const bool pv = (long long)kv.num_seqs * sh.num_kv_heads <= kPrefetchVPairs;
  if (sh.head_dim == 64) pv ? launch_d<64, true>(a, s) : launch_d<64, false>(a, s);
  else if (sh.head_dim == 128) pv ? launch_d<128, true>(a, s) : launch_d<128, false>(a, s);
  else if (sh.head_dim == 256) pv ? launch_d<256, true>(a, s) : launch_d<256, false>(a, s);
  else throw std::invalid_argument("attention: head_dim " + std::to_string(sh.head_dim) + " not supported (64, 128 or 256)");
}

}  // namespace nanovllm::cuda
