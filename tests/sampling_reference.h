// A double-precision reference of one row of the sampler (backend/sampling.h's order), written the
// way vLLM's PyTorch sampler reads, with sorts: the samplers under test (CPU, CUDA) find the same
// survivors without them. Shared by the sampler tests, plus helpers to place a SampleBatch in a
// backend's memory.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <vector>

#include "backend/backend.h"
#include "backend/rng.h"

namespace nanovllm::testing_ref {

constexpr double kInf = std::numeric_limits<double>::infinity();

struct RefRow {
  std::vector<double> x;     // processed logits, divided by the temperature (unless greedy)
  std::vector<char> keep;    // survivors of min_p, top_k, top_p (all ids for greedy or no filters)
};

// One row: logits, its settings, the adds that apply to it (id, value), and its counts and prompt
// ids (for the penalties). top_p_shift / min_p_shift nudge the thresholds (for near-boundary checks).
inline RefRow reference_row(const std::vector<float>& logits, const SamplingRow& r,
                            const std::vector<std::pair<int, float>>& adds, const std::vector<int32_t>& counts,
                            const std::vector<char>& in_prompt, double top_p_shift = 0, double min_p_shift = 0) {
  const size_t V = logits.size();
  RefRow out;
  out.x.assign(V, 0);
  std::vector<double> y(logits.begin(), logits.end());
  for (auto [id, v] : adds) y[id] += v;
  if (r.counts_row >= 0) {
    for (size_t v = 0; v < V; ++v) {
      const int c = counts[v];
      if (r.repetition_penalty != 1.0f && (c > 0 || in_prompt[v]))
        y[v] = y[v] > 0 ? y[v] / r.repetition_penalty : y[v] * r.repetition_penalty;
      y[v] -= r.frequency_penalty * c;
      if (c > 0) y[v] -= r.presence_penalty;
    }
  }
  for (size_t v = 0; v < V; ++v) out.x[v] = r.temperature > 0 ? y[v] / r.temperature : y[v];
  out.keep.assign(V, 1);
  for (size_t v = 0; v < V; ++v)
    if (out.x[v] == -kInf) out.keep[v] = 0;
  if (!(r.temperature > 0)) return out;
  double m = -kInf;
  for (double v : out.x) m = std::max(m, v);
  const double min_p = r.min_p + min_p_shift;
  if (r.min_p > 0)  // vLLM: drop p < min_p * p_max
    for (size_t v = 0; v < V; ++v)
      if (std::exp(out.x[v] - m) < min_p) out.keep[v] = 0;
  std::vector<int> order(V);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return out.x[a] > out.x[b]; });
  if (r.top_k > 0) {
    int seen = 0;
    double kth = kInf;
    for (int v : order)
      if (out.keep[v] && ++seen == r.top_k) kth = out.x[v];
    if (seen >= r.top_k)
      for (size_t v = 0; v < V; ++v)
        if (out.x[v] < kth) out.keep[v] = 0;
  }
  if (r.top_p < 1.0f) {
    const double p = r.top_p + top_p_shift;
    double z = 0;
    for (size_t v = 0; v < V; ++v)
      if (out.keep[v]) z += std::exp(out.x[v] - m);
    double above = 0;
    bool first = true;
    for (size_t i = 0; i < V;) {
      size_t j = i;
      double group = 0;
      for (; j < V && out.x[order[j]] == out.x[order[i]]; ++j)
        if (out.keep[order[j]]) group += std::exp(out.x[order[j]] - m);
      const bool any = group > 0 || std::any_of(order.begin() + i, order.begin() + j, [&](int v) { return out.keep[v]; });
      if (any) {
        const bool stays = first || above < p * z;
        for (size_t k = i; k < j; ++k)
          if (!stays) out.keep[order[k]] = 0;
        above += group;
        first = false;
      }
      i = j;
    }
  }
  return out;
}

// The Gumbel-max pick among the kept ids with the draws of (key, counter); greedy: the argmax.
inline int reference_pick(const RefRow& row, const SamplingRow& r, double* score = nullptr) {
  int best = -1;
  double bs = -kInf;
  for (size_t v = 0; v < row.x.size(); ++v) {
    if (!row.keep[v] || std::isnan(row.x[v])) continue;
    double s = row.x[v];
    if (r.temperature > 0) s -= std::log(-std::log(static_cast<double>(uniform01(r.key, r.counter, static_cast<uint32_t>(v)))));
    if (best < 0 || s > bs) best = static_cast<int>(v), bs = s;
  }
  if (score) *score = bs;
  return best < 0 ? 0 : best;
}

// A sample batch held on the host, and its copy in a backend's memory.
struct HostBatch {
  int vocab = 0;
  std::vector<SamplingRow> rows;
  std::vector<int32_t> add_ids;
  std::vector<float> add_values;
  std::vector<int32_t> counts;  // [counts_rows, vocab]
  std::vector<int32_t> mask;    // [counts_rows, ceil(vocab / 32)]
  int counts_rows = 0;

  std::vector<std::pair<int, float>> adds_of(int b) const {
    std::vector<std::pair<int, float>> a;
    for (int i = rows[b].adds_begin; i < rows[b].adds_end; ++i) a.push_back({add_ids[i], add_values[i]});
    return a;
  }
  std::vector<int32_t> counts_of(int b) const {
    if (rows[b].counts_row < 0) return std::vector<int32_t>(vocab, 0);
    return {counts.begin() + size_t(rows[b].counts_row) * vocab, counts.begin() + size_t(rows[b].counts_row + 1) * vocab};
  }
  std::vector<char> prompt_of(int b) const {
    std::vector<char> p(vocab, 0);
    if (rows[b].counts_row < 0) return p;
    const size_t words = (vocab + 31) / 32;
    for (int v = 0; v < vocab; ++v)
      p[v] = (static_cast<uint32_t>(mask[rows[b].counts_row * words + v / 32]) >> (v % 32)) & 1u;
    return p;
  }
};

// Copies `h` into `be`'s memory (buffers appended to `bufs`) and returns the batch over it.
inline SampleBatch place(Backend& be, const HostBatch& h, std::vector<DeviceBuffer>& bufs) {
  auto put = [&](const void* src, size_t bytes) -> void* {
    bufs.push_back(be.alloc(std::max<size_t>(bytes, 16)));
    if (bytes) be.copy_to_device(bufs.back().get(), src, bytes);
    return bufs.back().get();
  };
  SampleBatch b;
  b.rows = static_cast<const SamplingRow*>(put(h.rows.data(), h.rows.size() * sizeof(SamplingRow)));
  b.add_ids = static_cast<const int32_t*>(put(h.add_ids.data(), h.add_ids.size() * 4));
  b.add_values = static_cast<const float*>(put(h.add_values.data(), h.add_values.size() * 4));
  b.num_adds = static_cast<int>(h.add_ids.size());
  std::vector<int32_t> filtered;
  for (size_t r = 0; r < h.rows.size(); ++r)
    if (h.rows[r].has_filters()) filtered.push_back(static_cast<int32_t>(r));
  b.filtered_rows = static_cast<const int32_t*>(put(filtered.data(), filtered.size() * 4));
  b.num_filtered = static_cast<int>(filtered.size());
  b.max_filtered_top_k = max_filtered_top_k(h.rows.data(), static_cast<int64_t>(h.rows.size()));
  if (h.counts_rows > 0) {
    const int64_t words = (h.vocab + 31) / 32;
    b.counts.counts = Tensor(put(h.counts.data(), h.counts.size() * 4), DType::i32, {h.counts_rows, h.vocab}, be.device());
    b.counts.prompt_mask = Tensor(put(h.mask.data(), h.mask.size() * 4), DType::i32, {h.counts_rows, words}, be.device());
  }
  return b;
}

}  // namespace nanovllm::testing_ref
