// SamplingParams: how one request is sampled and when it stops.
#pragma once
#include <cstdint>
#include <optional>

namespace nanovllm {

struct SamplingParams {
  float temperature = 1.0f;      // 0 = greedy
  int max_tokens = 64;           // generated tokens at most
  bool ignore_eos = false;       // keep going past the end-of-sequence token
  std::optional<uint64_t> seed;  // per-request seed; unset: derived from EngineConfig::seed and the request id
};

}  // namespace nanovllm
