// CPU sampler: greedy argmax, or the Gumbel-max draw argmax(logit/T - log(-log u)) with u from
// rng.h's counter-based uniform01, so CPU and CUDA pick the same token for the same seed.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "backend/cpu/cpu_ops.h"
#include "backend/rng.h"

namespace nanovllm::cpu {
namespace {

struct Best {
  float value = -std::numeric_limits<float>::infinity();
  int64_t index = -1;
};

// The best of logits[begin, end) for one row; ties keep the lowest index.
Best scan(const float* row, int64_t begin, int64_t end, float temperature, uint64_t key, uint64_t counter) {
  Best b;
  if (temperature == 0.0f) {
    for (int64_t v = begin; v < end; ++v)
      if (row[v] > b.value || b.index < 0) b = {row[v], v};
  } else {
    const float inv_t = 1.0f / temperature;
    const uint64_t stream = draw_stream(key, counter);
    for (int64_t v = begin; v < end; ++v) {
      const float u = uniform01(stream, static_cast<uint32_t>(v));
      const float score = row[v] * inv_t - std::log(-std::log(u));
      if (score > b.value || b.index < 0) b = {score, v};
    }
  }
  return b;
}

}  // namespace

void sample(const float* logits, int64_t B, int64_t V, const float* temperatures, const int64_t* keys,
            const int64_t* counters, int32_t* out, ThreadPool& pool) {
  // Split each row into chunks so that one row (batch 1) still uses every thread.
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(pool.size(), V / 4096));
  const int64_t chunk = (V + chunks - 1) / chunks;
  thread_local std::vector<Best> scratch;  // the caller's; grows to the largest batch once
  std::vector<Best>& partial = scratch;     // a reference, so pool threads write the caller's copy
  partial.assign(static_cast<size_t>(B * chunks), Best{});
  pool.parallel_for(B * chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / chunks, c = item % chunks;
      partial[item] = scan(logits + b * V, c * chunk, std::min(V, (c + 1) * chunk), temperatures[b],
                           static_cast<uint64_t>(keys[b]), static_cast<uint64_t>(counters[b]));
    }
  });
  for (int64_t b = 0; b < B; ++b) {
    Best best;
    for (int64_t c = 0; c < chunks; ++c) {  // chunks ascend in index, so '>' keeps the lowest on ties
      const Best& p = partial[b * chunks + c];
      if (p.index >= 0 && (best.index < 0 || p.value > best.value)) best = p;
    }
    out[b] = static_cast<int32_t>(best.index < 0 ? 0 : best.index);
  }
}

}  // namespace nanovllm::cpu
