// Token sampling and logprobs on the GPU, in backend/sampling.h's order, tested against the CPU
// sampler (cpu_sample.cpp). A row of the vocabulary is split into chunks of 4096 ids, one block
// each (16 ids a thread), so one row still spreads over 38 blocks of a 151,936-id vocabulary.
// Every kernel recomputes x (the processed logit: sparse adds, penalties, 1/T) from the logits
// with the same code, rather than writing a processed copy: the same bytes move, one kernel less.
//
//   sample_scan       every row. Greedy and plain rows: the chunk's best x, or best x - log(-log u)
//                     (a Gumbel-max draw; draw_chunk scores exactly only the few ids that may
//                     win, bounding the rest). Rows with min_p/top_k/top_p ("filtered"): the chunk's
//                     max, sum and sum of squares of x, and the row's histogram zeroed; on the
//                     top-k path instead the chunk's top_k largest x with their ids, ranked, with
//                     the ids tied with the k-th (up to kTopMax in all).
//   sample_histogram  filtered rows: counts and mass exp(x - M) (M the row's max) of the ids that
//                     pass min_p, in 2048 bins of M - x, each sigma/64 wide (the last takes the
//                     rest). Mass is summed in 40-bit fixed point: integer atomics add the same in
//                     any order, so the thresholds, and the token, do not depend on scheduling.
//   sample_collect    filtered rows: from the histogram, the bins whose ids surely survive top_k
//                     and top_p, and the few bins where the thresholds can fall. The chunk's best
//                     Gumbel draw among the first; the ids of the second appended to a candidate
//                     list (at most 4096).
//   sample_finish     one block a row. Plain rows reduce the chunks' picks. Filtered rows sort the
//                     candidates, place the top_k and top_p thresholds exactly, and draw among the
//                     survivors; when more than 4096 ids share the uncertain bins (ties, or an
//                     unusually dense row), the block finds the thresholds by binary search over
//                     the row instead: slow but exact, and rare. Then the token is counted for
//                     the penalties.
// The top-k path, taken by a batch whose filtered rows all have 1 <= top_k <= kTopMax (the host's
// hint, SampleBatch::max_filtered_top_k): sample_scan also lists each chunk's largest x, no
// histogram or collect kernel runs, and sample_finish takes the lists' entries above a floor as
// its candidates: a few dozen, sorted, thresholds placed, and only the survivors drawn. A row
// whose lists ties cut short at a value that can survive (top_floor decides) is resolved by
// binary search over the whole row instead: slow, exact, rare. Other batches take the histogram
// path for every filtered row.
// No pass sorts the vocabulary. The logprobs op is two kernels (logprobs_chunk, logprobs_finish):
// per chunk the max, the sum of exp, the count of ids at or above the token and the top N by
// repeated block argmax; per row the merge.
#include <cfloat>

#include "backend/cuda/common.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels.h"
#include "backend/rng.h"

namespace nanovllm::cuda {
namespace {

constexpr int kThreads = 256;            // chunk kernels
constexpr int kPerThread = 16;
constexpr int kChunk = kThreads * kPerThread;
constexpr int kFinishThreads = 512;      // sample_finish
constexpr int kBins = 2048;              // bin kBins - 1 also takes everything farther below the max
constexpr int kBinsPerSigma = 64;
constexpr int kCap = 4096;               // candidates sample_finish sorts in shared memory
constexpr float kMassScale = 1099511627776.0f;  // 2^40: exp(x - M) <= 1 as 40-bit fixed point
constexpr int kNone = 0x7fffffff;
constexpr int kTopMax = 64;                // the top-k path's largest top_k, and each chunk's list
constexpr int kTopCand = 2 * kThreads;     // ids a chunk ranks for its list (more: the histogram path)
constexpr int kTopChunks = kCap / kTopMax;  // the most chunks whose lists sample_finish gathers

struct Pick {
  float score;
  int index;
};
struct Stat {  // finite x of one chunk
  float max, sum, sumsq;
  int count;
};
struct TopHead {  // one chunk's list of its largest x, for a row on the top-k path
  int n;          // entries, largest x first, lowest id first among equals
  uint32_t kth;   // order key of the chunk's top_k-th largest x; 0 when fewer ids are finite
  uint32_t cut;   // ids whose x has this key may be missing from the list (0: none; ~0u: no list)
};

__device__ __forceinline__ bool better(float s, int i, float bs, int bi) {
  return s > bs || (s == bs && i < bi);  // NaN never wins; ties keep the lowest index
}
__device__ __forceinline__ void warp_best(float& best, int& bi) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float os = __shfl_xor_sync(0xffffffffu, best, o);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (better(os, oi, best, bi)) { best = os; bi = oi; }
  }
}
// The best (score, index) over the block; every thread gets it.
__device__ Pick block_best(float best, int bi) {
  __shared__ Pick w[32];
  __shared__ Pick all;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  warp_best(best, bi);
  if (lane == 0) w[warp] = {best, bi};
  __syncthreads();
  if (warp == 0) {
    best = lane < nw ? w[lane].score : -INFINITY;
    bi = lane < nw ? w[lane].index : kNone;
    warp_best(best, bi);
    if (lane == 0) all = {best, bi};
  }
  __syncthreads();
  const Pick p = all;
  __syncthreads();  // `all` and `w` may be written again by the next call
  return p;
}

// Block-wide sum and exclusive prefix sum of one value a thread (T: uint32_t or unsigned long
// long). Every thread gets its prefix and the total.
template <class T>
__device__ T block_exclusive_sum(T v, T& total) {
  __shared__ T warp_sums[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  T inc = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const T n = __shfl_up_sync(0xffffffffu, inc, o);
    if (lane >= o) inc += n;
  }
  if (lane == 31) warp_sums[warp] = inc;
  __syncthreads();
  if (warp == 0) {
    T w = lane < nw ? warp_sums[lane] : T(0);
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const T n = __shfl_up_sync(0xffffffffu, w, o);
      if (lane >= o) w += n;
    }
    warp_sums[lane] = w;  // inclusive over warps
  }
  __syncthreads();
  total = warp_sums[nw - 1];
  const T out = inc - v + (warp > 0 ? warp_sums[warp - 1] : T(0));
  __syncthreads();
  return out;
}
template <class T>
__device__ T block_total(T v) {
  T total;
  block_exclusive_sum(v, total);
  return total;
}
// Block-wide inclusive max-scan of unsigned long long.
__device__ unsigned long long block_inclusive_max(unsigned long long v) {
  __shared__ unsigned long long warp_max[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const unsigned long long n = __shfl_up_sync(0xffffffffu, v, o);
    if (lane >= o) v = max(v, n);
  }
  if (lane == 31) warp_max[warp] = v;
  __syncthreads();
  if (warp == 0) {
    unsigned long long w = lane < nw ? warp_max[lane] : 0ull;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const unsigned long long n = __shfl_up_sync(0xffffffffu, w, o);
      if (lane >= o) w = max(w, n);
    }
    warp_max[lane] = w;
  }
  __syncthreads();
  const unsigned long long out = warp > 0 ? max(v, warp_max[warp - 1]) : v;
  __syncthreads();
  return out;
}

// Floats as unsigned keys in the same order; -0 is +0 (they are equal: a group of tied zeros
// split in two would put a top_p or top_k threshold between equal values).
__device__ __forceinline__ uint32_t order_key(float f) {
  uint32_t u = __float_as_uint(f);
  if (u == 0x80000000u) u = 0;
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float key_float(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}
// A candidate as sample_finish sorts them: ascending is x descending, then id ascending.
__device__ __forceinline__ unsigned long long pack_candidate(float x, int id) {
  return ((unsigned long long)~order_key(x) << 32) | (unsigned)id;
}
__device__ __forceinline__ uint32_t candidate_order_key(unsigned long long c) { return ~(uint32_t)(c >> 32); }

// One value a lane, sorted across the warp, largest in lane 0 (a bitonic network; no NaN).
__device__ float warp_sort_desc(float v) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int k = 2; k <= 32; k <<= 1) {
#pragma unroll
    for (int j = k >> 1; j > 0; j >>= 1) {
      const float o = __shfl_xor_sync(0xffffffffu, v, j);
      const bool keep_max = ((lane & j) == 0) == ((lane & k) == 0);
      v = keep_max ? fmaxf(v, o) : fminf(v, o);
    }
  }
  return v;
}

// The sampler's scratch, per row: the chunks' picks, stats and top-k lists, the histogram, the
// candidates.
struct SampleScratch {
  Pick* part;                      // [rows, chunks]
  Stat* stat;                      // [rows, chunks]
  TopHead* top_head;               // [rows, chunks]
  unsigned long long* top_key;     // [rows, chunks, kTopMax]: pack_candidate(x, id)
  unsigned* hist_count;            // [rows, kBins]
  unsigned long long* hist_mass;   // [rows, kBins]
  unsigned long long* cand_key;    // [rows, kCap]: pack_candidate(x, id)
  int* num_cand;                   // [rows]
};

int sample_chunks(int vocab) { return (vocab + kChunk - 1) / kChunk; }

SampleScratch sample_scratch(void* base, int rows, int vocab) {
  const size_t chunks = sample_chunks(vocab), B = rows;
  char* p = static_cast<char*>(base);
  SampleScratch w;
  w.hist_mass = reinterpret_cast<unsigned long long*>(p);
  p += B * kBins * sizeof(unsigned long long);
  w.cand_key = reinterpret_cast<unsigned long long*>(p);
  p += B * kCap * sizeof(unsigned long long);
  w.top_key = reinterpret_cast<unsigned long long*>(p);
  p += B * chunks * kTopMax * sizeof(unsigned long long);
  w.part = reinterpret_cast<Pick*>(p);
  p += B * chunks * sizeof(Pick);
  w.stat = reinterpret_cast<Stat*>(p);
  p += B * chunks * sizeof(Stat);
  w.top_head = reinterpret_cast<TopHead*>(p);
  p += B * chunks * sizeof(TopHead);
  w.hist_count = reinterpret_cast<unsigned*>(p);
  p += B * kBins * sizeof(unsigned);
  w.num_cand = reinterpret_cast<int*>(p);
  return w;
}

// ---- x: one row's processed logits, as every kernel computes them -----------------------------

struct Row {
  const float* logits;            // this row's
  SamplingRow s;
  const int32_t* counts;          // this row's counts and prompt mask, or nullptr
  const uint32_t* mask;
  float inv_t;                    // 1 / temperature (0 for greedy: unused)
  bool adds, clamp;               // sparse adds present; +inf clamped (processed or filtered rows)
};

__device__ Row load_row(const float* logits, int row, int vocab, const SampleArgs& a) {
  Row r;
  r.logits = logits + (size_t)row * vocab;
  r.s = a.rows[row];
  const bool penalties = r.s.counts_row >= 0 && r.s.has_penalties();
  r.counts = penalties ? a.counts + (size_t)r.s.counts_row * vocab : nullptr;
  r.mask = penalties ? a.prompt_mask + (size_t)r.s.counts_row * ((vocab + 31) / 32) : nullptr;
  r.inv_t = r.s.temperature > 0.f ? 1.0f / r.s.temperature : 0.f;
  r.adds = r.s.adds_end > r.s.adds_begin;
  r.clamp = r.adds || penalties || r.s.has_filters();
  return r;
}

// The row's sparse adds that fall in [begin, begin + n) into sadd[0, n) (zero elsewhere). Block-
// wide; a no-op for rows without adds (sadd is then never read).
__device__ void load_adds(const Row& r, const SampleArgs& a, int begin, int n, float* sadd) {
  if (!r.adds) return;
  __syncthreads();  // the previous chunk's readers are done
  for (int i = threadIdx.x; i < n; i += blockDim.x) sadd[i] = 0.f;
  __syncthreads();
  for (int i = r.s.adds_begin + threadIdx.x; i < r.s.adds_end; i += blockDim.x) {
    const int id = a.add_ids[i] - begin;
    if (id >= 0 && id < n) atomicAdd(&sadd[id], a.add_values[i]);
  }
  __syncthreads();
}

// This thread's logits of the chunk starting at `begin` (n ids) of a row: id begin + threadIdx.x +
// k * kThreads in y[k], 0 past the end. All sixteen loads are in flight together, before any of
// the arithmetic and before the row's settings are read: loaded one at a time behind each id's
// branches, the chunk kernels kept too few bytes in flight and read the logits at a quarter of the
// bandwidth. A whole chunk (all but a row's last) takes no bounds checks.
__device__ __forceinline__ void load_logits(const float* row_logits, int begin, int n, float (&y)[kPerThread]) {
  const float* p = row_logits + begin + threadIdx.x;
  if (n == kChunk) {
#pragma unroll
    for (int k = 0; k < kPerThread; ++k) y[k] = __ldg(p + k * kThreads);
  } else {
#pragma unroll
    for (int k = 0; k < kPerThread; ++k) y[k] = threadIdx.x + k * kThreads < n ? __ldg(p + k * kThreads) : 0.f;
  }
}

// x of id v from its logit y (sadd: the adds of the chunk starting at `begin`), exactly as
// cpu::process_row computes it (and, for plain rows, as the CPU sampler's logits * (1 / T)).
__device__ __forceinline__ float x_of(const Row& r, float y, int v, int begin, const float* sadd) {
  if (r.adds) y += sadd[v - begin];
  if (r.counts) {
    const int c = r.counts[v];
    const float rep = r.s.repetition_penalty;
    if (rep != 1.0f && (c > 0 || ((r.mask[v >> 5] >> (v & 31)) & 1u))) y = y > 0.0f ? y / rep : y * rep;
    y -= r.s.frequency_penalty * (float)c;
    if (c > 0) y -= r.s.presence_penalty;
  }
  if (r.clamp && y == INFINITY) y = FLT_MAX;
  if (r.s.temperature > 0.f) y *= r.inv_t;
  return y;
}
__device__ __forceinline__ float x_at(const Row& r, int v, int begin, const float* sadd) {
  return x_of(r, r.logits[v], v, begin, sadd);
}

__device__ __forceinline__ float gumbel_score(float x, uint64_t stream, int v) {
  const float u = uniform01(stream, static_cast<uint32_t>(v));
  return x - logf(-logf(u));
}

// The hardware's approximate log2, flushing subnormals (it is only given numbers >= 2^-24).
__device__ __forceinline__ float lg2_approx(float x) {
  float y;
  asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// An upper bound on the noise -log(-log u) from the approximate log2: a handful of instructions
// where logf takes dozens. The noise is -ln w, w = -ln u. Below u = 1/2, w from lg2_approx (w >=
// ln 2, its error under 1e-6 of w). From 1/2 up, with t = 1 - u (exact), w = t + t^2/2 + t^3/3 +
// ...: the series cut after t^4/4 is below w, so -ln of it is above the noise (by at most 0.016,
// at t = 1/2). Within 3e-6 of an upper bound; the caller's margin takes that and logf's rounding.
__device__ __forceinline__ float noise_bound(float u) {
  constexpr float kLn2 = 0.693147181f;
  const float t = 1.0f - u;
  const float w = u < 0.5f ? -kLn2 * lg2_approx(u) : t * fmaf(t, fmaf(t, fmaf(t, 0.25f, 1.0f / 3.0f), 0.5f), 1.0f);
  return -kLn2 * lg2_approx(w);
}
// The noise's range over every u uniform01 returns: -log(-log u) for u = 2^-24 and 1 - 2^-24 is
// -2.8115 and 16.6355. An id more than their difference (19.447) below another cannot outscore it.
constexpr float kNoiseSpan = 19.5f;

// ---- a filtered row's frame: its max, bin width and min_p threshold, from the chunks' stats ----

struct Frame {
  float max, inv_w, min_x;  // min_x: the min_p threshold (-inf when off)
  bool any;                 // any finite x
};

__device__ Frame row_frame(const Stat* st, int chunks, const SamplingRow& s) {
  float m = -INFINITY;
  double sum = 0, sumsq = 0;
  long long n = 0;
  for (int c = 0; c < chunks; ++c) {  // every thread, in the same order: the same numbers everywhere
    const Stat t = st[c];
    m = fmaxf(m, t.max);
    sum += t.sum;
    sumsq += t.sumsq;
    n += t.count;
  }
  Frame f;
  f.any = n > 0;
  f.max = m;
  const double mean = n > 0 ? sum / (double)n : 0.0;
  const double var = n > 0 ? sumsq / (double)n - mean * mean : 0.0;
  const float sigma = (float)sqrt(var > 0 ? var : 0.0);
  const float w = isfinite(sigma) && sigma > 1e-30f ? sigma / kBinsPerSigma : 1.0f;
  f.inv_w = 1.0f / w;
  f.min_x = s.min_p > 0.f ? m + logf(s.min_p) : -INFINITY;
  return f;
}

__device__ __forceinline__ bool passes(const Frame& f, float x) { return x >= f.min_x && x > -INFINITY; }
__device__ __forceinline__ int bin_of(const Frame& f, float x) {
  const float d = (f.max - x) * f.inv_w;
  return d < (float)(kBins - 1) ? (int)d : kBins - 1;
}
__device__ __forceinline__ unsigned long long mass_of(const Frame& f, float x) {
  return (unsigned long long)(expf(x - f.max) * kMassScale);
}

// Where a filtered row's thresholds can fall, from its histogram: bins < first surely survive,
// bins in [first, last] are uncertain, bins > last are dropped.
struct Selection {
  int first, last;            // first = kBins: nothing uncertain (every id passing min_p survives)
  bool k_binds;               // top_k < the ids passing min_p
  unsigned count_above;       // ids in bins < first
  unsigned uncertain;         // ids in [first, last]
  unsigned long long mass_above, mass_total;
};

__device__ Selection select_bins(const unsigned* cnt, const unsigned long long* mass, const SamplingRow& s) {
  __shared__ Selection sel;
  __shared__ int b_k, b_p;
  __shared__ unsigned long long mass_k_above;
  const int per = kBins / blockDim.x, base = threadIdx.x * per;
  unsigned c_loc = 0;
  unsigned long long m_loc = 0;
  for (int i = 0; i < per; ++i) {
    c_loc += cnt[base + i];
    m_loc += mass[base + i];
  }
  unsigned c_total;
  unsigned long long m_total;
  const unsigned c_pre = block_exclusive_sum(c_loc, c_total);
  const unsigned long long m_pre = block_exclusive_sum(m_loc, m_total);
  if (threadIdx.x == 0) {
    b_k = -1;
    b_p = 0;  // when the limit is 0 no bin crosses it: the first bin
  }
  __syncthreads();
  const bool k_binds = s.top_k > 0 && (unsigned)s.top_k < c_total;
  if (k_binds) {  // the bin holding the k-th largest
    unsigned run = c_pre;
    unsigned long long mrun = m_pre;
    for (int i = 0; i < per; ++i) {
      const unsigned c = cnt[base + i];
      if (run < (unsigned)s.top_k && run + c >= (unsigned)s.top_k) {
        b_k = base + i;
        mass_k_above = mrun;
      }
      run += c;
      mrun += mass[base + i];
    }
  }
  __syncthreads();
  const bool p_on = s.top_p < 1.f;
  if (p_on) {  // the first bin whose inclusive mass reaches top_p of the least mass top_k can leave
    const double limit = (double)s.top_p * (double)(k_binds ? mass_k_above : m_total);
    unsigned long long mrun = m_pre;
    for (int i = 0; i < per; ++i) {
      const unsigned long long m = mass[base + i];
      if ((double)mrun < limit && (double)(mrun + m) >= limit) b_p = base + i;
      mrun += m;
    }
  }
  __syncthreads();
  int first = kBins, last = -1;
  if (k_binds && p_on) first = b_p, last = b_k;
  else if (k_binds) first = last = b_k;
  else if (p_on) first = last = b_p;
  if (threadIdx.x == 0) {
    sel.first = first;
    sel.last = last;
    sel.k_binds = k_binds;
    sel.mass_total = m_total;
    if (first == kBins) {
      sel.count_above = c_total;
      sel.mass_above = m_total;
      sel.uncertain = 0;
    }
  }
  // The thread that holds `first` (and `last`) knows the sums before it.
  unsigned run = c_pre;
  unsigned long long mrun = m_pre;
  for (int i = 0; i < per; ++i) {
    if (base + i == first) {
      sel.count_above = run;
      sel.mass_above = mrun;
    }
    run += cnt[base + i];
    mrun += mass[base + i];
    if (base + i == last) sel.uncertain = run;  // inclusive count through `last`; minus count_above below
  }
  __syncthreads();
  Selection out = sel;
  if (first != kBins) out.uncertain -= out.count_above;
  __syncthreads();
  return out;
}

// ---- the top-k path: rows with 1 <= top_k <= kTopMax skip the histogram ---------------------------

// Whether top_k over `chunks` chunks fits the top-k path (each chunk's list, sample_finish's gather).
__host__ __device__ __forceinline__ bool top_k_fits(int top_k, int chunks) {
  return top_k >= 1 && top_k <= kTopMax && chunks <= kTopChunks;
}
__device__ __forceinline__ bool on_top_path(const SamplingRow& s, int chunks) {
  return s.has_filters() && top_k_fits(s.top_k, chunks);
}

// The chunk's top_k largest x (x: this thread's, of ids begin + threadIdx.x + i * kThreads; -inf
// past the end), ranked into list with every id tied with the k-th value as long as kTopMax hold
// them, and described by head. Block-wide. Which ids can be among them is found without a sort:
// in each warp j = ceil(k / 8) lanes have a maximum at or above the warp's j-th largest, so at
// least k ids reach the least of those over the 8 warps, and the k-th largest is not below it;
// usually a few dozen ids reach it, and each is ranked by counting the others.
__device__ void chunk_top(const float (&x)[kPerThread], int begin, int k, unsigned long long* list, TopHead* head) {
  constexpr int kWarps = kThreads / 32, per = kTopCand / kThreads;
  __shared__ float warp_floor[kWarps];
  __shared__ unsigned long long cand[kTopCand];
  __shared__ uint32_t kth;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float m = -INFINITY;
#pragma unroll
  for (int i = 0; i < kPerThread; ++i)
    if (x[i] > m) m = x[i];
  const float wf = __shfl_sync(0xffffffffu, warp_sort_desc(m), (k + kWarps - 1) / kWarps - 1);
  if (lane == 0) warp_floor[warp] = wf;
  if (threadIdx.x == 0) kth = 0;
  __syncthreads();
  float lo = warp_floor[0];
  for (int i = 1; i < kWarps; ++i) lo = fminf(lo, warp_floor[i]);
  auto reaches = [lo](float y) { return y >= lo && y > -INFINITY; };
  unsigned mine = 0;
#pragma unroll
  for (int i = 0; i < kPerThread; ++i) mine += reaches(x[i]);
  unsigned total;
  unsigned at = block_exclusive_sum(mine, total);
  if (total > (unsigned)kTopCand) {  // many ties near the top: no list
    if (threadIdx.x == 0) *head = {0, 0, ~0u};
    return;
  }
#pragma unroll
  for (int i = 0; i < kPerThread; ++i)
    if (reaches(x[i])) cand[at++] = pack_candidate(x[i], begin + threadIdx.x + i * kThreads);
  __syncthreads();
  // A candidate's place in the list is the number of candidates before it (the keys are distinct).
  unsigned long long c[per];
  int rank[per];
#pragma unroll
  for (int j = 0; j < per; ++j) {
    const unsigned i = threadIdx.x + j * kThreads;
    c[j] = i < total ? cand[i] : ~0ull;
    rank[j] = 0;
  }
  for (unsigned i = 0; i < total; ++i) {
    const unsigned long long o = cand[i];
#pragma unroll
    for (int j = 0; j < per; ++j) rank[j] += o < c[j];
  }
#pragma unroll
  for (int j = 0; j < per; ++j)
    if (threadIdx.x + j * kThreads < total && rank[j] == k - 1) kth = candidate_order_key(c[j]);
  __syncthreads();
  unsigned ge = 0;  // every id at or above the k-th value is a candidate
#pragma unroll
  for (int j = 0; j < per; ++j) {
    if (threadIdx.x + j * kThreads < total && candidate_order_key(c[j]) >= kth) {
      ++ge;
      if (rank[j] < kTopMax) list[rank[j]] = c[j];
    }
  }
  ge = block_total(ge);
  if (threadIdx.x == 0) *head = {(int)min(ge, (unsigned)kTopMax), kth, ge > (unsigned)kTopMax ? kth : 0u};
}

struct TopFloor {
  uint32_t key;  // an order key no survivor is below
  bool holds;    // the chunks' lists hold every id at or above it
};
// A row on the top-k path: a floor under its threshold (the larger of min_p's and the k-th largest
// x), from the chunks' heads and lists alone. Block-wide.
__device__ TopFloor top_floor(const SampleScratch& w, int row, int chunks, int k, const Frame& f) {
  __shared__ uint32_t dth[kTopChunks];
  __shared__ uint32_t b;
  const TopHead* head = w.top_head + (size_t)row * chunks;
  const unsigned long long* list = w.top_key + (size_t)row * chunks * kTopMax;
  // j chunks whose d-th largest are >= b hold j * d >= k ids >= b: b, the j-th largest of the
  // chunks' d-th entries, is a floor, and with d = ceil(k / chunks) a close one.
  const int d = (k + chunks - 1) / chunks, j = (k + d - 1) / d;
  if (threadIdx.x < chunks) {
    const TopHead h = head[threadIdx.x];
    dth[threadIdx.x] = h.n >= d ? candidate_order_key(list[threadIdx.x * kTopMax + d - 1]) : 0;
  }
  if (threadIdx.x == 0) b = 0;
  __syncthreads();
  if (threadIdx.x < chunks) {
    const uint32_t mine = dth[threadIdx.x];
    int rank = 0;
    for (int c = 0; c < chunks; ++c) rank += dth[c] > mine || (dth[c] == mine && c < (int)threadIdx.x);
    if (rank == j - 1) b = mine;
  }
  __syncthreads();
  TopFloor t{max(b, order_key(f.min_x)), true};
  __syncthreads();  // b may be written again by the next call
  for (int c = 0; c < chunks; ++c) t.key = max(t.key, head[c].kth);  // a chunk's k-th largest is one too
  // A list lacks ids only at its cut, at most the chunk's k-th largest: below the floor, they cannot survive.
  for (int c = 0; c < chunks; ++c) t.holds = t.holds && head[c].cut < t.key;
  return t;
}

// ---- kernels ----

// A plain row's draw over this thread's ids of the chunk (y: their logits): its best x - log(-log u)
// into (best, bi), the pick scoring every id exactly would make, for a fraction of the arithmetic.
// kBare: no sparse adds or penalties, x = logit * (1 / T). In three steps, each warp on its own:
// 1. Ids more than kNoiseSpan below the warp's largest x cannot win: they are not drawn at all
//    (most of a real model's vocabulary; none of a flat random one's).
// 2. The others' u, and an upper bound on their score from noise_bound. The id with the warp's
//    largest bound is scored exactly: no id whose bound is below that score can win.
// 3. The ids whose bound reaches it (a few a warp) are scored exactly (gumbel_score: two logf).
template <bool kBare>
__device__ __forceinline__ void draw_chunk(const Row& r, const float (&y)[kPerThread], int begin, int n,
                                           const float* sadd, float& best, int& bi) {
  const int lane = threadIdx.x & 31;
  float x[kPerThread];
  float xmax = -INFINITY;
#pragma unroll
  for (int k = 0; k < kPerThread; ++k) {
    const int v = begin + threadIdx.x + k * kThreads;
    x[k] = NAN;  // past the vocabulary: never drawn
    if (threadIdx.x + k * kThreads < n) x[k] = kBare ? y[k] * r.inv_t : x_of(r, y[k], v, begin, sadd);
    xmax = fmaxf(xmax, x[k]);
  }
  xmax = warp_max(xmax);
  const float cut = xmax - (kNoiseSpan + 1e-6f * fminf(fabsf(xmax), FLT_MAX));
  const uint64_t stream = draw_stream(static_cast<uint64_t>(r.s.key), static_cast<uint64_t>(r.s.counter));
  uint64_t word = stream_word(stream, static_cast<uint64_t>(begin + threadIdx.x));  // id v's; v += kThreads
  float bound[kPerThread];
  float top = -INFINITY;  // this thread's largest bound, id k's
  int top_k = -1;
  auto draw = [&](int k, uint64_t w) {  // id k's bound
    bound[k] = x[k] + noise_bound(uniform01_from_bits(mix64(w)));
    if (bound[k] > top) {
      top = bound[k];
      top_k = k;
    }
  };
  bool all_drawn = true;
#pragma unroll
  for (int k = 0; k < kPerThread; ++k) all_drawn = all_drawn && x[k] >= cut;
  if (__all_sync(0xffffffffu, all_drawn)) {  // a flat row's warps: no per-id branch
#pragma unroll
    for (int k = 0; k < kPerThread; ++k, word += kThreads * kGoldenStep) draw(k, word);
  } else {
#pragma unroll
    for (int k = 0; k < kPerThread; ++k, word += kThreads * kGoldenStep) {
      bound[k] = NAN;
      if (x[k] >= cut) draw(k, word);
    }
  }
  // The warp's largest bound, scored exactly by its lane: the score to reach.
  const float warp_top = warp_max(top);
  const unsigned holders = __ballot_sync(0xffffffffu, top_k >= 0 && top == warp_top);
  float to_beat = -INFINITY;
  if (holders) {
    const int src = __ffs(holders) - 1, v = begin + threadIdx.x + top_k * kThreads;
    float sc = 0.f;
    if (lane == src) sc = gumbel_score(x_at(r, v, begin, sadd), stream, v);
    to_beat = __shfl_sync(0xffffffffu, sc, src);
  }
  // The margin covers the bound's error and logf's rounding in the exact score (~1e-5 in all).
  const float reach = to_beat - (1e-3f + 1e-6f * (fminf(fabsf(to_beat), FLT_MAX) + kNoiseSpan));
  unsigned candidates = 0;
#pragma unroll
  for (int k = 0; k < kPerThread; ++k) candidates |= (bound[k] >= reach ? 1u : 0u) << k;
  while (candidates) {  // in id order
    const int k = __ffs(candidates) - 1, v = begin + threadIdx.x + k * kThreads;
    candidates &= candidates - 1;
    const float sc = gumbel_score(x_at(r, v, begin, sadd), stream, v);
    if (better(sc, v, best, bi)) {
      best = sc;
      bi = v;
    }
  }
}

// Block (chunk, row): see the file comment. kTop: the batch is on the top-k path (no histogram).
// Without it, 6 blocks an SM (40 registers): more of the chunk's loads in flight than at 5.
template <bool kTop>
__global__ void __launch_bounds__(kThreads, kTop ? 4 : 6)
    sample_scan_kernel(const float* __restrict__ logits, SampleArgs a, SampleScratch w, int vocab) {
  pdl_launch_dependents();
  pdl_wait();
  __shared__ float sadd[kChunk];
  const int row = blockIdx.y, chunk = blockIdx.x, chunks = gridDim.x;
  const int begin = chunk * kChunk, n = min(kChunk, vocab - begin);
  float y[kPerThread];
  load_logits(logits + (size_t)row * vocab, begin, n, y);
  const Row r = load_row(logits, row, vocab, a);
  load_adds(r, a, begin, n, sadd);
  const bool filtered = r.s.has_filters();
  if (!filtered) {
    float best = -INFINITY;
    int bi = kNone;
    if (!(r.s.temperature > 0.f)) {  // greedy
#pragma unroll
      for (int k = 0; k < kPerThread; ++k) {
        const int v = begin + threadIdx.x + k * kThreads;
        if (v < begin + n) {
          const float x = x_of(r, y[k], v, begin, sadd);
          if (better(x, v, best, bi)) { best = x; bi = v; }
        }
      }
    } else if (!r.adds && !r.counts) {
      draw_chunk<true>(r, y, begin, n, sadd, best, bi);
    } else {
      draw_chunk<false>(r, y, begin, n, sadd, best, bi);
    }
    const Pick p = block_best(best, bi);
    if (threadIdx.x == 0) w.part[(size_t)row * chunks + chunk] = p;
    return;
  }
  float x[kPerThread];
  float m = -INFINITY, sum = 0.f, sumsq = 0.f;
  int count = 0;
#pragma unroll
  for (int k = 0; k < kPerThread; ++k) {
    const int v = begin + threadIdx.x + k * kThreads;
    x[k] = v < begin + n ? x_of(r, y[k], v, begin, sadd) : -INFINITY;
    if (x[k] > -INFINITY && x[k] < INFINITY) {
      m = fmaxf(m, x[k]);
      sum += x[k];
      sumsq += x[k] * x[k];
      ++count;
    }
  }
  m = warp_max(m);
  sum = warp_sum(sum);
  sumsq = warp_sum(sumsq);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) count += __shfl_xor_sync(0xffffffffu, count, o);
  __shared__ Stat ws[kThreads / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) ws[warp] = {m, sum, sumsq, count};
  __syncthreads();
  if (threadIdx.x == 0) {
    Stat t = ws[0];
    for (int i = 1; i < kThreads / 32; ++i) {
      t.max = fmaxf(t.max, ws[i].max);
      t.sum += ws[i].sum;
      t.sumsq += ws[i].sumsq;
      t.count += ws[i].count;
    }
    w.stat[(size_t)row * chunks + chunk] = t;
    if (!kTop && chunk == 0) w.num_cand[row] = 0;
  }
  if constexpr (kTop) {
    if (on_top_path(r.s, chunks)) {
      const size_t at = (size_t)row * chunks + chunk;
      chunk_top(x, begin, r.s.top_k, w.top_key + at * kTopMax, w.top_head + at);
    }
  } else {
    for (int i = chunk * kThreads + threadIdx.x; i < kBins; i += chunks * kThreads) {
      w.hist_count[(size_t)row * kBins + i] = 0;
      w.hist_mass[(size_t)row * kBins + i] = 0;
    }
  }
}

// Block (chunk, j): filtered row a.filtered_rows[j].
__global__ void sample_histogram_kernel(const float* __restrict__ logits, SampleArgs a, SampleScratch w, int vocab) {
  pdl_launch_dependents();
  pdl_wait();
  __shared__ float sadd[kChunk];
  __shared__ unsigned scnt[kBins];
  __shared__ unsigned long long smass[kBins];
  const int row = a.filtered_rows[blockIdx.y], chunk = blockIdx.x, chunks = gridDim.x;
  const Row r = load_row(logits, row, vocab, a);
  const Frame f = row_frame(w.stat + (size_t)row * chunks, chunks, r.s);
  if (!f.any) return;
  const int begin = chunk * kChunk, n = min(kChunk, vocab - begin);
  float y[kPerThread];
  load_logits(r.logits, begin, n, y);
  for (int i = threadIdx.x; i < kBins; i += kThreads) {
    scnt[i] = 0;
    smass[i] = 0;
  }
  load_adds(r, a, begin, n, sadd);
  __syncthreads();
#pragma unroll
  for (int k = 0; k < kPerThread; ++k) {
    const int v = begin + threadIdx.x + k * kThreads;
    if (v < begin + n) {
      const float x = x_of(r, y[k], v, begin, sadd);
      if (passes(f, x)) {
        const int b = bin_of(f, x);
        atomicAdd(&scnt[b], 1u);
        atomicAdd(&smass[b], mass_of(f, x));
      }
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < kBins; i += kThreads) {
    if (scnt[i]) {
      atomicAdd(&w.hist_count[(size_t)row * kBins + i], scnt[i]);
      atomicAdd(&w.hist_mass[(size_t)row * kBins + i], smass[i]);
    }
  }
}

// Block (chunk, j): filtered row a.filtered_rows[j].
__global__ void sample_collect_kernel(const float* __restrict__ logits, SampleArgs a, SampleScratch w, int vocab) {
  pdl_launch_dependents();
  pdl_wait();
  __shared__ float sadd[kChunk];
  const int row = a.filtered_rows[blockIdx.y], chunk = blockIdx.x, chunks = gridDim.x;
  const Row r = load_row(logits, row, vocab, a);
  const Frame f = row_frame(w.stat + (size_t)row * chunks, chunks, r.s);
  Pick* part = w.part + (size_t)row * chunks + chunk;
  if (!f.any) {
    if (threadIdx.x == 0) *part = {-INFINITY, kNone};
    return;
  }
  const Selection sel = select_bins(w.hist_count + (size_t)row * kBins, w.hist_mass + (size_t)row * kBins, r.s);
  const bool collect = sel.uncertain <= (unsigned)kCap;
  const int begin = chunk * kChunk, n = min(kChunk, vocab - begin);
  float y[kPerThread];
  load_logits(r.logits, begin, n, y);
  load_adds(r, a, begin, n, sadd);
  const uint64_t stream = draw_stream(static_cast<uint64_t>(r.s.key), static_cast<uint64_t>(r.s.counter));
  float best = -INFINITY;
  int bi = kNone;
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int k = 0; k < kPerThread; ++k) {  // the whole warp in every round: the appends are warp-wide
    const int v = begin + threadIdx.x + k * kThreads;
    float x = -INFINITY;
    int b = kBins;
    if (v < begin + n) {
      x = x_of(r, y[k], v, begin, sadd);
      if (passes(f, x)) b = bin_of(f, x);
    }
    if (b < sel.first) {
      const float s = gumbel_score(x, stream, v);
      if (better(s, v, best, bi)) { best = s; bi = v; }
    }
    const bool append = collect && b >= sel.first && b <= sel.last;
    const unsigned ballot = __ballot_sync(0xffffffffu, append);
    if (ballot) {
      int base = 0;
      if (lane == __ffs(ballot) - 1) base = atomicAdd(&w.num_cand[row], __popc(ballot));
      base = __shfl_sync(0xffffffffu, base, __ffs(ballot) - 1);
      if (append) {
        const int at = base + __popc(ballot & ((1u << lane) - 1));
        w.cand_key[(size_t)row * kCap + at] = pack_candidate(x, v);
      }
    }
  }
  const Pick p = block_best(best, bi);
  if (threadIdx.x == 0) *part = p;
}

// One pass of resolve_by_search over the uncertain ids with key >= lo: their count, the mass of
// those with key > gt, their key range, and (draw) the best Gumbel score among them.
struct Pass {
  unsigned count;
  unsigned long long mass;
  uint32_t kmin, kmax;
  Pick best;
};
__device__ Pass search_pass(const Row& r, const SampleArgs& a, const Frame& f, const Selection& sel, int vocab,
                            float* sadd, uint32_t lo, uint32_t gt, bool draw) {
  const uint64_t stream = draw_stream(static_cast<uint64_t>(r.s.key), static_cast<uint64_t>(r.s.counter));
  unsigned count = 0;
  unsigned long long mass = 0;
  uint32_t kmin = 0xffffffffu, kmax = 0;
  float best = -INFINITY;
  int bi = kNone;
  for (int begin = 0; begin < vocab; begin += kChunk) {
    const int n = min(kChunk, vocab - begin);
    load_adds(r, a, begin, n, sadd);
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      const int v = begin + i;
      const float x = x_at(r, v, begin, sadd);
      if (!passes(f, x)) continue;
      const int b = bin_of(f, x);
      if (b < sel.first || b > sel.last) continue;
      const uint32_t key = order_key(x);
      if (key < lo) continue;
      ++count;
      kmin = min(kmin, key);
      kmax = max(kmax, key);
      if (key > gt) mass += mass_of(f, x);
      if (draw) {
        const float s = gumbel_score(x, stream, v);
        if (better(s, v, best, bi)) { best = s; bi = v; }
      }
    }
  }
  Pass p;
  p.count = block_total(count);
  p.mass = block_total(mass);
  __shared__ uint32_t smin, smax;
  if (threadIdx.x == 0) {
    smin = 0xffffffffu;
    smax = 0;
  }
  __syncthreads();
  atomicMin(&smin, kmin);
  atomicMax(&smax, kmax);
  __syncthreads();
  p.kmin = smin;
  p.kmax = smax;
  __syncthreads();
  p.best = draw ? block_best(best, bi) : Pick{-INFINITY, kNone};
  return p;
}

// The uncertain bins of a filtered row when they hold more than kCap ids (ties, or a dense row):
// the thresholds by binary search over keys, each probe a pass over the row by this block. Slow
// (up to ~70 passes) and exact. Returns the best draw among the survivors there.
__device__ Pick resolve_by_search(const Row& r, const SampleArgs& a, const Frame& f, const Selection& sel, int vocab,
                                  float* sadd) {
  constexpr uint32_t kAll = 0;  // gt = 0: every key counts (no finite float has key 0)
  const Pass all = search_pass(r, a, f, sel, vocab, sadd, 0, kAll, false);
  uint32_t lo = all.kmin;
  unsigned long long z = sel.mass_total;
  if (sel.k_binds) {  // the largest key with top_k - count_above uncertain ids at or above it
    const unsigned want = (unsigned)r.s.top_k - sel.count_above;
    uint32_t hi = all.kmax;
    while (lo < hi) {
      const uint32_t mid = lo + (hi - lo + 1) / 2;
      if (search_pass(r, a, f, sel, vocab, sadd, mid, kAll, false).count >= want) lo = mid;
      else hi = mid - 1;
    }
    z = sel.mass_above + search_pass(r, a, f, sel, vocab, sadd, lo, kAll, false).mass;
  }
  if (r.s.top_p < 1.f) {  // the smallest key whose strictly larger survivors hold < top_p of z
    const double limit = (double)r.s.top_p * (double)z;
    uint32_t t = lo, hi = all.kmax;
    while (t < hi) {
      const uint32_t mid = t + (hi - t) / 2;
      if ((double)(sel.mass_above + search_pass(r, a, f, sel, vocab, sadd, lo, mid, false).mass) < limit) hi = mid;
      else t = mid + 1;
    }
    lo = t;
  }
  return search_pass(r, a, f, sel, vocab, sadd, lo, kAll, true).best;
}

// A filtered row of a batch on the top-k path whose lists do not hold its survivors (ties cut a
// list at a value that can survive; or a row the path cannot take, when the batch's hint was
// wrong): resolve_by_search with the whole row uncertain. Slow, exact, rare.
__device__ Pick resolve_whole_row(const Row& r, const SampleArgs& a, const Frame& f, int vocab, float* sadd) {
  Selection all{0, kBins - 1, false, 0, 0, 0, 0};
  const Pass p = search_pass(r, a, f, all, vocab, sadd, 0, 0, false);
  all.k_binds = r.s.top_k > 0 && (unsigned)r.s.top_k < p.count;
  all.uncertain = p.count;
  all.mass_total = p.mass;
  return resolve_by_search(r, a, f, all, vocab, sadd);
}

// The candidates (at most kCap, in w.cand_key) of a filtered row: sorted, thresholds placed,
// the best draw among the survivors.
__device__ Pick resolve_candidates(const Row& r, const Frame& f, const Selection& sel, unsigned long long* keys,
                                   int n) {
  int P = 1;
  while (P < n) P <<= 1;
  for (int i = threadIdx.x + n; i < P; i += blockDim.x) keys[i] = ~0ull;
  __syncthreads();
  for (int k = 2; k <= P; k <<= 1) {  // bitonic sort, ascending key = x descending, then id ascending
    for (int j = k >> 1; j > 0; j >>= 1) {
      for (int i = threadIdx.x; i < P; i += blockDim.x) {
        const int ixj = i ^ j;
        if (ixj > i) {
          const unsigned long long x = keys[i], y = keys[ixj];
          if ((x > y) == ((i & k) == 0)) {
            keys[i] = y;
            keys[ixj] = x;
          }
        }
      }
      __syncthreads();
    }
  }
  // Thread t holds positions [t * per, t * per + per) of the sorted candidates.
  constexpr int per = kCap / kFinishThreads;
  float x[per];
  int id[per];
  unsigned long long m[per];
  const int base = threadIdx.x * per;
#pragma unroll
  for (int i = 0; i < per; ++i) {
    const int j = base + i;
    x[i] = -INFINITY;
    id[i] = kNone;
    m[i] = 0;
    if (j < n) {
      x[i] = key_float(~(uint32_t)(keys[j] >> 32));
      id[i] = (int)(keys[j] & 0xffffffffu);
      m[i] = mass_of(f, x[i]);
    }
  }
  // top_k: the value of the (top_k - count_above)-th candidate; ids tied with it stay.
  __shared__ float theta_k;
  if (threadIdx.x == 0) theta_k = -INFINITY;
  __syncthreads();
  if (sel.k_binds) {
    const int kpos = r.s.top_k - (int)sel.count_above - 1;
    if (kpos >= base && kpos < base + per) theta_k = x[kpos - base];
  }
  __syncthreads();
  const float tk = theta_k;
  unsigned long long z = sel.mass_total;
  if (sel.k_binds) {
    unsigned long long mk = 0;
#pragma unroll
    for (int i = 0; i < per; ++i)
      if (base + i < n && x[i] >= tk) mk += m[i];
    z = sel.mass_above + block_total(mk);
  }
  // top_p: the mass strictly above a candidate's group of ties is the exclusive prefix at the
  // group's first position (a max-scan carries it over the group).
  unsigned long long loc = 0;
#pragma unroll
  for (int i = 0; i < per; ++i) loc += m[i];
  unsigned long long total;
  unsigned long long pre = block_exclusive_sum(loc, total);
  __shared__ float last_x[kFinishThreads];
  last_x[threadIdx.x] = x[per - 1];
  __syncthreads();
  unsigned long long group_above[per];
  unsigned long long run = pre, carry = 0;
#pragma unroll
  for (int i = 0; i < per; ++i) {
    const int j = base + i;
    const float prev = i > 0 ? x[i - 1] : (threadIdx.x > 0 ? last_x[threadIdx.x - 1] : NAN);
    const bool starts = j < n && !(x[i] == prev);
    if (starts) carry = run + 1;  // + 1: 0 means "no start seen" in the max-scan
    group_above[i] = carry;
    run += m[i];
  }
  // The latest group start before this thread's positions: the max over the threads before it
  // (starts only grow with the position).
  __shared__ unsigned long long thread_carry[kFinishThreads];
  thread_carry[threadIdx.x] = block_inclusive_max(carry);
  __syncthreads();
  const unsigned long long incoming = threadIdx.x > 0 ? thread_carry[threadIdx.x - 1] : 0ull;
  const double limit = (double)r.s.top_p * (double)z;
  const uint64_t stream = draw_stream(static_cast<uint64_t>(r.s.key), static_cast<uint64_t>(r.s.counter));
  float best = -INFINITY;
  int bi = kNone;
#pragma unroll
  for (int i = 0; i < per; ++i) {
    const int j = base + i;
    if (j >= n) continue;
    const unsigned long long g = group_above[i] ? group_above[i] : incoming;  // the group's start, + 1
    const unsigned long long above = sel.mass_above + (g - 1);
    bool keep = !sel.k_binds || x[i] >= tk;
    if (r.s.top_p < 1.f) keep = keep && ((double)above < limit || above == 0);
    if (keep) {
      const float s = gumbel_score(x[i], stream, id[i]);
      if (better(s, id[i], best, bi)) { best = s; bi = id[i]; }
    }
  }
  return block_best(best, bi);
}

// resolve_candidates for a top-k row's n <= 64 candidates (nothing above them), by warp 0 alone:
// the same thresholds and draw without the block's barriers. Only thread 0's pick is right (the
// only one sample_finish reads). Position p of the sorted candidates is lane p % 32's x[p / 32].
__device__ Pick resolve_few(const Row& r, const Frame& f, unsigned long long* keys, int n) {
  if (threadIdx.x >= 32) return {-INFINITY, kNone};
  constexpr unsigned kAll = 0xffffffffu;
  const int lane = threadIdx.x;
  unsigned long long key[2], *sorted = keys + 64;  // keys[64, 128) is free: n <= 64
  int pos[2] = {0, 0};
#pragma unroll
  for (int j = 0; j < 2; ++j) key[j] = lane + 32 * j < n ? keys[lane + 32 * j] : ~0ull;
  for (int i = 0; i < n; ++i) {  // a candidate's place: the number of keys before it (distinct keys)
    const unsigned long long o = keys[i];
    pos[0] += o < key[0];
    pos[1] += o < key[1];
  }
#pragma unroll
  for (int j = 0; j < 2; ++j)
    if (lane + 32 * j < n) sorted[pos[j]] = key[j];
  __syncwarp();
  float x[2];
  int id[2];
  unsigned long long m[2];
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    const bool in = lane + 32 * j < n;
    x[j] = in ? key_float(~(uint32_t)(sorted[lane + 32 * j] >> 32)) : -INFINITY;
    id[j] = in ? (int)(sorted[lane + 32 * j] & 0xffffffffu) : kNone;
    m[j] = in ? mass_of(f, x[j]) : 0;
  }
  // top_k: the k-th candidate's x (ids tied with it stay); z, the mass of those at or above it.
  const int kpos = r.s.top_k - 1;
  const float tk = kpos < n ? __shfl_sync(kAll, kpos < 32 ? x[0] : x[1], kpos & 31) : -INFINITY;
  unsigned long long z = (x[0] >= tk ? m[0] : 0) + (x[1] >= tk ? m[1] : 0);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) z += __shfl_xor_sync(kAll, z, o);
  // top_p: the mass strictly above a position's group of ties is the exclusive prefix at the
  // group's first position, carried over the group by a max-scan (+ 1: 0 means no start yet).
  unsigned long long incl[2], carry[2];
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    incl[j] = m[j];
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const unsigned long long v = __shfl_up_sync(kAll, incl[j], o);
      if (lane >= o) incl[j] += v;
    }
  }
  incl[1] += __shfl_sync(kAll, incl[0], 31);
  const float prev0 = __shfl_up_sync(kAll, x[0], 1), last0 = __shfl_sync(kAll, x[0], 31);
  const float prev1 = __shfl_up_sync(kAll, x[1], 1);
  const float prev[2] = {lane > 0 ? prev0 : NAN, lane > 0 ? prev1 : last0};
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    const bool starts = lane + 32 * j < n && !(x[j] == prev[j]);
    carry[j] = starts ? incl[j] - m[j] + 1 : 0;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const unsigned long long v = __shfl_up_sync(kAll, carry[j], o);
      if (lane >= o) carry[j] = max(carry[j], v);
    }
  }
  carry[1] = max(carry[1], __shfl_sync(kAll, carry[0], 31));
  const double limit = (double)r.s.top_p * (double)z;
  const uint64_t stream = draw_stream(static_cast<uint64_t>(r.s.key), static_cast<uint64_t>(r.s.counter));
  float best = -INFINITY;
  int bi = kNone;
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    if (lane + 32 * j >= n) continue;
    const unsigned long long above = carry[j] - 1;
    bool keep = x[j] >= tk;
    if (r.s.top_p < 1.f) keep = keep && ((double)above < limit || above == 0);
    if (keep) {
      const float sc = gumbel_score(x[j], stream, id[j]);
      if (better(sc, id[j], best, bi)) { best = sc; bi = id[j]; }
    }
  }
  warp_best(best, bi);
  return {best, bi};
}

// A row on the top-k path whose lists hold every survivor: the entries at or above the floor are
// the candidates of resolve_candidates, with nothing above them; the top_k-th of them is the
// threshold (-inf when there are fewer: all stay).
__device__ Pick resolve_top(const Row& r, const Frame& f, const SampleScratch& w, int row, int chunks,
                            uint32_t floor, unsigned long long* keys) {
  constexpr int per = kCap / kFinishThreads;  // covers kTopChunks lists
  const TopHead* head = w.top_head + (size_t)row * chunks;
  const unsigned long long* list = w.top_key + (size_t)row * chunks * kTopMax;
  unsigned long long e[per];
  bool take[per];
  unsigned mine = 0;
#pragma unroll
  for (int i = 0; i < per; ++i) {
    const int j = threadIdx.x + i * kFinishThreads, c = j / kTopMax;
    take[i] = c < chunks && j % kTopMax < head[c].n;
    e[i] = take[i] ? list[j] : 0;
    take[i] = take[i] && candidate_order_key(e[i]) >= floor;
    mine += take[i];
  }
  unsigned n;
  unsigned at = block_exclusive_sum(mine, n);
#pragma unroll
  for (int i = 0; i < per; ++i)
    if (take[i]) keys[at++] = e[i];
  __syncthreads();
  if (n <= 64) return resolve_few(r, f, keys, (int)n);
  Selection all{};
  all.k_binds = true;
  return resolve_candidates(r, f, all, keys, (int)n);
}

// The best of the chunks' picks (for filtered rows, of the ids that surely survive).
__device__ Pick chunk_picks(const SampleScratch& w, int row, int chunks) {
  float best = -INFINITY;
  int bi = kNone;
  for (int c = threadIdx.x; c < chunks; c += blockDim.x) {
    const Pick p = w.part[(size_t)row * chunks + c];
    if (better(p.score, p.index, best, bi)) { best = p.score; bi = p.index; }
  }
  return block_best(best, bi);
}

// A filtered row's token: by its chunks' lists on the top-k path, else by its histogram.
__device__ Pick filtered_pick(const float* logits, const SampleArgs& a, const SampleScratch& w, int row, int vocab,
                              int chunks, unsigned long long* keys) {
  const Row r = load_row(logits, row, vocab, a);
  const Frame f = row_frame(w.stat + (size_t)row * chunks, chunks, r.s);
  if (!f.any) return {-INFINITY, kNone};
  if (a.top_path) {  // no histogram: the lists, or a search over the whole row
    if (on_top_path(r.s, chunks)) {
      const TopFloor t = top_floor(w, row, chunks, r.s.top_k, f);
      if (t.holds) return resolve_top(r, f, w, row, chunks, t.key, keys);
    }
    return resolve_whole_row(r, a, f, vocab, reinterpret_cast<float*>(keys));
  }
  Pick pick = chunk_picks(w, row, chunks);
  const Selection sel = select_bins(w.hist_count + (size_t)row * kBins, w.hist_mass + (size_t)row * kBins, r.s);
  Pick q{-INFINITY, kNone};
  if (sel.first < kBins && sel.uncertain <= (unsigned)kCap) {
    const int n = (int)sel.uncertain;
    for (int i = threadIdx.x; i < n; i += blockDim.x) keys[i] = w.cand_key[(size_t)row * kCap + i];
    __syncthreads();
    q = resolve_candidates(r, f, sel, keys, n);
  } else if (sel.first < kBins) {
    q = resolve_by_search(r, a, f, sel, vocab, reinterpret_cast<float*>(keys));
  }
  if (better(q.score, q.index, pick.score, pick.index)) pick = q;
  return pick;
}

// Block per row (kFinishThreads): see the file comment.
__global__ void sample_finish_kernel(const float* __restrict__ logits, SampleArgs a, SampleScratch w, int vocab,
                                     int chunks, int32_t* __restrict__ out) {
  pdl_launch_dependents();
  pdl_wait();
  __shared__ unsigned long long keys[kCap];
  const int row = blockIdx.x;
  const SamplingRow s = a.rows[row];
  const Pick pick = s.has_filters() ? filtered_pick(logits, a, w, row, vocab, chunks, keys) : chunk_picks(w, row, chunks);
  if (threadIdx.x == 0) {
    const int token = pick.index == kNone ? 0 : pick.index;  // nothing finite: token 0, not an out-of-range id
    out[row] = token;
    if (s.counts_row >= 0) a.counts_rw[(size_t)s.counts_row * vocab + token] += 1;
  }
}

// ---- logprobs ----

constexpr int kMaxTop = 64;

struct LpPart {
  float max, sum;  // sum of exp(x - max)
  int ge;          // ids with x >= the token's x
};

// Block (chunk, r): logits row rows[r].
__global__ void logprobs_chunk_kernel(const float* __restrict__ logits, const int32_t* __restrict__ rows,
                                      const int32_t* __restrict__ ids, int vocab, int num_top, LpPart* part,
                                      Pick* top_part) {
  pdl_launch_dependents();
  pdl_wait();
  const int r = blockIdx.y, chunk = blockIdx.x, chunks = gridDim.x;
  const int row = rows[r];
  const float* l = logits + (size_t)row * vocab;
  const float xt = l[ids[row]];
  const int begin = chunk * kChunk, end = min(vocab, begin + kChunk);
  float x[kPerThread];
  float m = -INFINITY;
  int ge = 0;
#pragma unroll
  for (int k = 0; k < kPerThread; ++k) {
    const int v = begin + threadIdx.x + k * kThreads;
    x[k] = v < end ? l[v] : NAN;
    if (x[k] > m) m = x[k];
    ge += x[k] >= xt;
  }
  __shared__ float smax;
  m = warp_max(m);
  __shared__ float wm[kThreads / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) wm[warp] = m;
  __syncthreads();
  if (threadIdx.x == 0) {
    float t = wm[0];
    for (int i = 1; i < kThreads / 32; ++i) t = fmaxf(t, wm[i]);
    smax = t;
  }
  __syncthreads();
  m = smax;
  float sum = 0.f;
#pragma unroll
  for (int k = 0; k < kPerThread; ++k)
    if (x[k] > -INFINITY) sum += expf(x[k] - m);
  sum = block_sum(sum);
  const unsigned total_ge = block_total((unsigned)ge);
  if (threadIdx.x == 0) part[(size_t)r * chunks + chunk] = {m, sum, (int)total_ge};
  // The chunk's top num_top: repeated block argmax, each winner marked taken by its owner.
  unsigned taken = 0;
  for (int t = 0; t < num_top; ++t) {
    float best = -INFINITY;
    int bi = kNone;
#pragma unroll
    for (int k = 0; k < kPerThread; ++k) {
      const int v = begin + threadIdx.x + k * kThreads;
      const float y = x[k] != x[k] ? -INFINITY : x[k];  // NaN as -inf
      if (v < end && !((taken >> k) & 1u) && (bi == kNone || y > best || (y == best && v < bi))) { best = y; bi = v; }
    }
    const Pick p = block_best(best, bi);
#pragma unroll
    for (int k = 0; k < kPerThread; ++k)
      if (begin + threadIdx.x + k * kThreads == p.index) taken |= 1u << k;
    if (threadIdx.x == 0) top_part[((size_t)r * chunks + chunk) * num_top + t] = p;
  }
}

// Block per r: merges the chunks.
__global__ void logprobs_finish_kernel(const LpPart* __restrict__ part, Pick* __restrict__ top_part,
                                       int chunks, int num_top, const float* __restrict__ logits,
                                       const int32_t* __restrict__ rows, const int32_t* __restrict__ ids, int vocab,
                                       float* token_lp, int32_t* ranks, int32_t* top_ids, float* top_lp) {
  pdl_launch_dependents();
  pdl_wait();
  const int r = blockIdx.x;
  __shared__ float lse;
  if (threadIdx.x == 0) {
    float m = -INFINITY;
    for (int c = 0; c < chunks; ++c) m = fmaxf(m, part[(size_t)r * chunks + c].max);
    float s = 0.f;
    int ge = 0;
    for (int c = 0; c < chunks; ++c) {
      const LpPart p = part[(size_t)r * chunks + c];
      if (p.max > -INFINITY) s += p.sum * expf(p.max - m);
      ge += p.ge;
    }
    lse = m + logf(s);
    const int row = rows[r];
    token_lp[r] = logits[(size_t)row * vocab + ids[row]] - lse;
    ranks[r] = ge;
  }
  __syncthreads();
  // The best of the chunks' tops, num_top times, each winner removed.
  const int n = chunks * num_top;
  Pick* tops = top_part + (size_t)r * n;
  for (int t = 0; t < num_top; ++t) {
    float best = -INFINITY;
    int bi = kNone;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      const Pick p = tops[i];
      if (p.index != kNone && (bi == kNone || p.score > best || (p.score == best && p.index < bi))) {
        best = p.score;
        bi = p.index;
      }
    }
    const Pick w = block_best(best, bi);
    if (threadIdx.x == 0) {
      top_ids[(size_t)r * num_top + t] = w.index == kNone ? 0 : w.index;
      top_lp[(size_t)r * num_top + t] = (w.index == kNone ? -INFINITY : logits[(size_t)rows[r] * vocab + w.index]) - lse;
    }
    for (int i = threadIdx.x; i < n; i += blockDim.x)
      if (tops[i].index == w.index) tops[i].index = kNone;
    __syncthreads();
  }
}

// ---- token counts ----

__global__ void counts_clear_kernel(int32_t* counts, int32_t* mask, int vocab, int words) {
  pdl_launch_dependents();
  pdl_wait();
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < vocab; i += gridDim.x * blockDim.x) {
    counts[i] = 0;
    if (i < words) mask[i] = 0;
  }
}
__global__ void counts_fill_kernel(int32_t* counts, int32_t* mask, const int32_t* prompt, int num_prompt,
                                   const int32_t* output, int num_output) {
  pdl_launch_dependents();
  pdl_wait();
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < num_prompt + num_output; i += gridDim.x * blockDim.x) {
    if (i < num_prompt) atomicOr(reinterpret_cast<unsigned*>(mask) + (prompt[i] >> 5), 1u << (prompt[i] & 31));
    else atomicAdd(&counts[output[i - num_prompt]], 1);
  }
}

}  // namespace

size_t sample_scratch_bytes(int rows, int vocab) {
  const size_t chunks = sample_chunks(vocab), B = rows;
  return B * chunks * (sizeof(Pick) + sizeof(Stat) + sizeof(TopHead) + kTopMax * sizeof(unsigned long long)) +
         B * kBins * (sizeof(unsigned) + sizeof(unsigned long long)) + B * kCap * sizeof(unsigned long long) +
         B * sizeof(int) + 256;
}

void launch_sample(const float* logits, const SampleArgs& a, int rows, int vocab, void* scratch, int32_t* out,
                   cudaStream_t s) {
  if (rows == 0) return;
  const int chunks = sample_chunks(vocab);
  const SampleScratch w = sample_scratch(scratch, rows, vocab);
  SampleArgs b = a;
  b.top_path = a.num_filtered > 0 && top_k_fits(a.max_filtered_top_k, chunks);
  if (b.top_path) {
    launch("sample (scan)", sample_scan_kernel<true>, dim3(chunks, rows), kThreads, 0, s, logits, b, w, vocab);
  } else {
    launch("sample (scan)", sample_scan_kernel<false>, dim3(chunks, rows), kThreads, 0, s, logits, b, w, vocab);
    if (b.num_filtered > 0) {
      launch("sample (histogram)", sample_histogram_kernel, dim3(chunks, b.num_filtered), kThreads, 0, s, logits, b, w,
             vocab);
      launch("sample (collect)", sample_collect_kernel, dim3(chunks, b.num_filtered), kThreads, 0, s, logits, b, w,
             vocab);
    }
  }
  launch("sample (finish)", sample_finish_kernel, rows, kFinishThreads, 0, s, logits, b, w, vocab, chunks, out);
}

int logprobs_max_top() { return kMaxTop; }

size_t logprobs_scratch_bytes(int rows, int vocab, int num_top) {
  const size_t chunks = sample_chunks(vocab);
  return rows * chunks * (sizeof(LpPart) + sizeof(Pick) * (size_t)num_top) + 256;
}

void launch_logprobs(const float* logits, const int32_t* rows, const int32_t* ids, int num_rows, int vocab,
                     int num_top, void* scratch, float* token_lp, int32_t* ranks, int32_t* top_ids, float* top_lp,
                     cudaStream_t s) {
  if (num_rows == 0) return;
  const int chunks = sample_chunks(vocab);
  auto* part = static_cast<LpPart*>(scratch);
  auto* top_part = reinterpret_cast<Pick*>(part + (size_t)num_rows * chunks);
  launch("logprobs (chunks)", logprobs_chunk_kernel, dim3(chunks, num_rows), kThreads, 0, s, logits, rows, ids, vocab,
         num_top, part, top_part);
  launch("logprobs (finish)", logprobs_finish_kernel, num_rows, kThreads, 0, s, static_cast<const LpPart*>(part),
         top_part, chunks, num_top, logits, rows, ids, vocab, token_lp, ranks, top_ids,
         top_lp);
}

void launch_reset_token_counts(int32_t* counts, int32_t* mask, int vocab, const int32_t* prompt, int num_prompt,
                               const int32_t* output, int num_output, cudaStream_t s) {
  const int words = (vocab + 31) / 32;
  launch("reset_token_counts (clear)", counts_clear_kernel, (vocab + 1023) / 1024, 1024, 0, s, counts, mask, vocab,
         words);
  if (num_prompt + num_output > 0)
    launch("reset_token_counts (fill)", counts_fill_kernel, (num_prompt + num_output + 255) / 256, 256, 0, s, counts,
           mask, prompt, num_prompt, output, num_output);
}

}  // namespace nanovllm::cuda
