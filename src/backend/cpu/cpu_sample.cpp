// CPU sampler and logprobs: the reference the CUDA ops are tested against. Each row is processed
// in backend/sampling.h's order; the survivors of min_p/top_k/top_p are found exactly (a partial
// sort here, where the CUDA sampler uses histograms), then the Gumbel-max draw argmax(x - log(-log
// u)) with u from rng.h's counter-based uniform01 picks among them, so CPU and CUDA pick the same
// token for the same seed.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "backend/cpu/cpu_math.h"
#include "backend/cpu/cpu_ops.h"
#include "backend/rng.h"

namespace nanovllm::cpu {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

struct Best {
  float value = kNegInf;
  int64_t index = -1;
};

// The best of x[begin, end) for one row: the largest x (greedy); ties keep the lowest index, NaN
// never wins.
Best scan_greedy(const float* x, int64_t begin, int64_t end) {
  Best b;
  for (int64_t v = begin; v < end; ++v)
    if (x[v] > b.value || (b.index < 0 && !std::isnan(x[v]))) b = {x[v], v};
  return b;
}

// ---- the Gumbel draw, 8 entries at a time (AVX2) ----
// a * c mod 2^64 in 4 lanes: AVX2 multiplies 32 x 32 -> 64 bits only.
inline __m256i mul64(__m256i a, uint64_t c) {
  const __m256i cl = _mm256_set1_epi64x(static_cast<int64_t>(c & 0xffffffffu));
  const __m256i ch = _mm256_set1_epi64x(static_cast<int64_t>(c >> 32));
  const __m256i cross = _mm256_add_epi64(_mm256_mul_epu32(_mm256_srli_epi64(a, 32), cl), _mm256_mul_epu32(a, ch));
  return _mm256_add_epi64(_mm256_mul_epu32(a, cl), _mm256_slli_epi64(cross, 32));
}
inline __m256i mix64x4(__m256i z) {  // rng.h's mix64
  z = mul64(_mm256_xor_si256(z, _mm256_srli_epi64(z, 30)), kMixMul1);
  z = mul64(_mm256_xor_si256(z, _mm256_srli_epi64(z, 27)), kMixMul2);
  return _mm256_xor_si256(z, _mm256_srli_epi64(z, 31));
}
// rng.h's uniform01_from_bits(mix64(z)) for entries 0-3 (z0) and 4-7 (z1): the same values, (i + 0.5) / 2^23
// exactly (rng.h builds them from the float's bits, this from an exact conversion).
inline __m256 uniform01x8(__m256i z0, __m256i z1) {
  const __m256i evens = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);  // the low halves of 4 lanes, in order
  const __m256i a = _mm256_permutevar8x32_epi32(_mm256_srli_epi64(mix64x4(z0), 64 - kUniformBits), evens);
  const __m256i b = _mm256_permutevar8x32_epi32(_mm256_srli_epi64(mix64x4(z1), 64 - kUniformBits), evens);
  const __m256 i = _mm256_cvtepi32_ps(_mm256_permute2x128_si256(a, b, 0x20));
  return _mm256_mul_ps(_mm256_add_ps(i, _mm256_set1_ps(0.5f)),
                       _mm256_set1_ps(1.0f / static_cast<float>(1u << kUniformBits)));
}

// The best x * scale - log(-log u) of [begin, end) among entries with x * scale >= threshold (NaN
// never passes); ties keep the lowest index. x * scale is the float product process_row computes,
// and u is rng.h's uniform01(stream, v) bit for bit; the logs are cpu_math.h's log8.
Best scan_gumbel(const float* x, float scale, int64_t begin, int64_t end, float threshold, uint64_t stream) {
  auto z_at = [&](int64_t v) { return static_cast<int64_t>(stream_word(stream, static_cast<uint64_t>(v))); };
  __m256i z0 = _mm256_setr_epi64x(z_at(begin), z_at(begin + 1), z_at(begin + 2), z_at(begin + 3));
  __m256i z1 = _mm256_setr_epi64x(z_at(begin + 4), z_at(begin + 5), z_at(begin + 6), z_at(begin + 7));
  const __m256i step = _mm256_set1_epi64x(static_cast<int64_t>(8 * kGoldenStep));
  __m256i index =
      _mm256_add_epi32(_mm256_set1_epi32(static_cast<int32_t>(begin)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  __m256i best_i = _mm256_set1_epi32(-1);
  __m256 best = _mm256_set1_ps(kNegInf);
  const __m256 s = _mm256_set1_ps(scale), thr = _mm256_set1_ps(threshold);
  for (int64_t v = begin; v < end; v += 8) {
    const int n = static_cast<int>(std::min<int64_t>(8, end - v));
    const __m256 xv = _mm256_mul_ps(n == 8 ? _mm256_loadu_ps(x + v) : load_partial(x + v, n, NAN), s);
    const __m256 noise = log8(_mm256_sub_ps(_mm256_setzero_ps(), log8(uniform01x8(z0, z1))));
    const __m256 score = _mm256_sub_ps(xv, noise);
    const __m256 none_yet = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_setzero_si256(), best_i));
    const __m256 take = _mm256_and_ps(_mm256_cmp_ps(xv, thr, _CMP_GE_OQ),
                                      _mm256_or_ps(_mm256_cmp_ps(score, best, _CMP_GT_OQ), none_yet));
    best = _mm256_blendv_ps(best, score, take);
    best_i = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(best_i), _mm256_castsi256_ps(index), take));
    z0 = _mm256_add_epi64(z0, step);
    z1 = _mm256_add_epi64(z1, step);
    index = _mm256_add_epi32(index, _mm256_set1_epi32(8));
  }
  alignas(32) float bv[8];
  alignas(32) int32_t bi[8];
  _mm256_store_ps(bv, best);
  _mm256_store_si256(reinterpret_cast<__m256i*>(bi), best_i);
  Best b;
  for (int l = 0; l < 8; ++l)
    if (bi[l] >= 0 && (b.index < 0 || bv[l] > b.value || (bv[l] == b.value && bi[l] < b.index))) b = {bv[l], bi[l]};
  return b;
}

bool in_prompt(const int32_t* mask, int64_t v) { return (static_cast<uint32_t>(mask[v >> 5]) >> (v & 31)) & 1u; }

}  // namespace

void process_row(const float* logits, int64_t V, const SamplingRow& r, const SampleBatch& batch, float* x) {
  std::copy(logits, logits + V, x);
  for (int32_t i = r.adds_begin; i < r.adds_end; ++i) x[batch.add_ids[i]] += batch.add_values[i];
  if (r.counts_row >= 0 && r.has_penalties()) {
    const int32_t* counts = batch.counts.counts.ptr<int32_t>() + static_cast<int64_t>(r.counts_row) * V;
    const int32_t* mask = batch.counts.prompt_mask.ptr<int32_t>() + static_cast<int64_t>(r.counts_row) * ((V + 31) / 32);
    const float rep = r.repetition_penalty, freq = r.frequency_penalty, pres = r.presence_penalty;
    for (int64_t v = 0; v < V; ++v) {
      const int32_t c = counts[v];
      float y = x[v];
      if (rep != 1.0f && (c > 0 || in_prompt(mask, v))) y = y > 0.0f ? y / rep : y * rep;
      y -= freq * static_cast<float>(c);
      if (c > 0) y -= pres;
      x[v] = y;
    }
  }
  if (r.temperature > 0.0f) {
    const float inv_t = 1.0f / r.temperature;
    for (int64_t v = 0; v < V; ++v) x[v] *= inv_t;
  }
}

float survivor_threshold(const float* x, int64_t V, const SamplingRow& r, std::vector<int32_t>& ids) {
  float m = kNegInf;
  for (int64_t v = 0; v < V; ++v)
    if (x[v] > m) m = x[v];
  if (m == kNegInf) return kNegInf;  // nothing finite: the plain draw decides (token 0 when all -inf)
  float threshold = kNegInf;
  if (r.min_p > 0.0f) threshold = m + std::log(r.min_p);
  ids.clear();
  for (int64_t v = 0; v < V; ++v)
    if (x[v] >= threshold && x[v] > kNegInf) ids.push_back(static_cast<int32_t>(v));
  if (r.top_k > 0 && static_cast<size_t>(r.top_k) < ids.size()) {
    std::nth_element(ids.begin(), ids.begin() + (r.top_k - 1), ids.end(), [x](int32_t a, int32_t b) { return x[a] > x[b]; });
    threshold = std::max(threshold, x[ids[r.top_k - 1]]);
    std::erase_if(ids, [x, threshold](int32_t v) { return !(x[v] >= threshold); });
  }
  if (r.top_p < 1.0f) {
    // A group of equal values stays when the mass strictly above it is below top_p of the total.
    // Quickselect on that: partition by a pivot value into larger, equal and smaller ids, and go
    // where the cut is; O(V) expected, where a flat row's cut lies deep (a sort is O(V log V)).
    auto mass = [&](auto begin, auto end) {
      double sum = 0;
      for (auto it = begin; it != end; ++it) sum += std::exp(static_cast<double>(x[*it]) - m);
      return sum;
    };
    const double limit = static_cast<double>(r.top_p) * mass(ids.begin(), ids.end());
    auto lo = ids.begin(), hi = ids.end();
    double above = 0;  // mass of the survivors larger than everything in [lo, hi)
    while (lo != hi) {
      const float pivot = x[*(lo + (hi - lo) / 2)];
      const auto equal = std::partition(lo, hi, [x, pivot](int32_t v) { return x[v] > pivot; });
      const auto smaller = std::partition(equal, hi, [x, pivot](int32_t v) { return x[v] == pivot; });
      const double larger_mass = mass(lo, equal);
      if (equal != lo && !(above + larger_mass < limit)) {  // the cut is among the larger ones
        hi = equal;
        continue;
      }
      threshold = pivot;  // the pivot's group stays (the largest group always does)
      above += larger_mass + mass(equal, smaller);
      if (!(above < limit)) break;  // and is the last to stay
      lo = smaller;
    }
  }
  return threshold;
}

void sample(const float* logits, int64_t B, int64_t V, const SampleBatch& batch, int32_t* out, ThreadPool& pool) {
  // Rows that are plain logits / T (or greedy): split into chunks so that one row (batch 1)
  // still uses every thread. Rows with adds, penalties or filters: one thread each, with its
  // own processed copy.
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(pool.size(), V / 4096));
  const int64_t chunk = (V + chunks - 1) / chunks;
  std::vector<int64_t> plain, full;
  for (int64_t b = 0; b < B; ++b) {
    const SamplingRow& r = batch.rows[b];
    const bool processed = r.adds_end > r.adds_begin || (r.counts_row >= 0 && r.has_penalties());
    (processed || r.has_filters() ? full : plain).push_back(b);
  }
  std::vector<Best> partial(plain.size() * chunks);
  pool.parallel_for(static_cast<int64_t>(plain.size()) * chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = plain[item / chunks], c = item % chunks;
      const SamplingRow& r = batch.rows[b];
      const int64_t lo = c * chunk, hi = std::min(V, (c + 1) * chunk);
      const float* row = logits + b * V;
      // x = logits * (1 / T), exactly as process_row computes it
      partial[item] = r.temperature > 0.0f
                          ? scan_gumbel(row, 1.0f / r.temperature, lo, hi, kNegInf, draw_stream(r.key, r.counter))
                          : scan_greedy(row, lo, hi);
    }
  });
  for (size_t i = 0; i < plain.size(); ++i) {
    Best best;
    for (int64_t c = 0; c < chunks; ++c) {  // chunks ascend in index, so '>' keeps the lowest on ties
      const Best& p = partial[i * chunks + c];
      if (p.index >= 0 && (best.index < 0 || p.value > best.value)) best = p;
    }
    out[plain[i]] = static_cast<int32_t>(best.index < 0 ? 0 : best.index);
  }
  pool.parallel_for(static_cast<int64_t>(full.size()), 1, [&](int64_t begin, int64_t end) {
    std::vector<float> x(static_cast<size_t>(V));
    std::vector<int32_t> ids;
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = full[i];
      const SamplingRow& r = batch.rows[b];
      process_row(logits + b * V, V, r, batch, x.data());
      const Best best = r.temperature > 0.0f ? scan_gumbel(x.data(), 1.0f, 0, V, survivor_threshold(x.data(), V, r, ids),
                                                           draw_stream(r.key, r.counter))
                                             : scan_greedy(x.data(), 0, V);
      out[b] = static_cast<int32_t>(best.index < 0 ? 0 : best.index);
    }
  });
  for (int64_t b = 0; b < B; ++b) {  // count the tokens for the penalties of the next step
    const SamplingRow& r = batch.rows[b];
    if (r.counts_row >= 0) ++batch.counts.counts.ptr<int32_t>()[static_cast<int64_t>(r.counts_row) * V + out[b]];
  }
}

void logprobs(const float* logits, int64_t V, const int32_t* rows, int64_t R, const int32_t* ids, int num_top,
              LogprobsOut& out, ThreadPool& pool) {
  float* token_lp = out.token_logprobs.ptr<float>();
  int32_t* ranks = out.ranks.ptr<int32_t>();
  int32_t* top_ids = out.top_ids.ptr<int32_t>();
  float* top_lp = out.top_logprobs.ptr<float>();
  pool.parallel_for(R, 1, [&](int64_t begin, int64_t end) {
    std::vector<int32_t> order(static_cast<size_t>(V));
    for (int64_t r = begin; r < end; ++r) {
      const float* x = logits + static_cast<int64_t>(rows[r]) * V;
      float m = kNegInf;
      for (int64_t v = 0; v < V; ++v)
        if (x[v] > m) m = x[v];
      double z = 0;
      for (int64_t v = 0; v < V; ++v) z += std::exp(static_cast<double>(x[v]) - m);
      const double lse = m + std::log(z);
      const int32_t id = ids[rows[r]];
      token_lp[r] = static_cast<float>(x[id] - lse);
      int32_t rank = 0;
      for (int64_t v = 0; v < V; ++v) rank += x[v] >= x[id];
      ranks[r] = rank;
      if (num_top == 0) continue;
      std::iota(order.begin(), order.end(), 0);
      auto larger = [x](int32_t a, int32_t b) {
        const bool an = std::isnan(x[a]), bn = std::isnan(x[b]);
        if (an != bn) return bn;  // NaN last
        return x[a] > x[b] || (!(x[a] < x[b]) && a < b);
      };
      std::partial_sort(order.begin(), order.begin() + num_top, order.end(), larger);
      for (int k = 0; k < num_top; ++k) {
        top_ids[r * num_top + k] = order[k];
        top_lp[r * num_top + k] = static_cast<float>(x[order[k]] - lse);
      }
    }
  });
}

void reset_token_counts(const TokenCounts& counts, int row, const int32_t* prompt_ids, int64_t num_prompt,
                        const int32_t* output_ids, int64_t num_output) {
  const int64_t V = counts.counts.size(1), words = (V + 31) / 32;
  int32_t* c = counts.counts.ptr<int32_t>() + static_cast<int64_t>(row) * V;
  int32_t* mask = counts.prompt_mask.ptr<int32_t>() + static_cast<int64_t>(row) * words;
  std::fill(c, c + V, 0);
  std::fill(mask, mask + words, 0);
  for (int64_t i = 0; i < num_prompt; ++i)
    mask[prompt_ids[i] >> 5] = static_cast<int32_t>(static_cast<uint32_t>(mask[prompt_ids[i] >> 5]) | (1u << (prompt_ids[i] & 31)));
  for (int64_t i = 0; i < num_output; ++i) ++c[output_ids[i]];
}

}  // namespace nanovllm::cpu
