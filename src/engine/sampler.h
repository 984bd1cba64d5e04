// Sampler glue: the per-request random key the backend's sample op draws with. The draws for a
// request depend only on (key, number of tokens generated so far), so they do not change with
// batch composition, backend, or preemption and recompute.
#pragma once
#include <cstdint>

#include "backend/rng.h"
#include "nanovllm/sampling_params.h"

namespace nanovllm {

// Sample `index` of a request: the request's own seed when it has one, otherwise mixed from the
// engine seed and request id; the first sample keeps that key, the others mix in their index so
// that n seeded samples differ (and are reproducible).
inline uint64_t sampling_key(const SamplingParams& params, uint64_t engine_seed, int64_t request_id, int index = 0) {
  const uint64_t key = params.seed ? *params.seed : mix64(engine_seed ^ mix64(static_cast<uint64_t>(request_id)));
  return index == 0 ? key : mix64(key ^ mix64(0x9e3779b97f4a7c15ULL * static_cast<uint64_t>(index)));
}

}  // namespace nanovllm
