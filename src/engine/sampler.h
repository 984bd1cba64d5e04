// Sampler glue: the per-request random key the backend's sample op draws with. The draws for a
// request depend only on (key, number of tokens generated so far), so they do not change with
// batch composition, backend, or preemption and recompute.
#pragma once
#include <cstdint>

#include "backend/rng.h"
#include "nanovllm/sampling_params.h"

namespace nanovllm {

// The request's own seed when it has one; otherwise mixed from the engine seed and request id.
inline uint64_t sampling_key(const SamplingParams& params, uint64_t engine_seed, int64_t request_id) {
  if (params.seed) return *params.seed;
  return mix64(engine_seed ^ mix64(static_cast<uint64_t>(request_id)));
}

}  // namespace nanovllm
