// SamplingParams: how one request is sampled and when it stops. Names, meanings and defaults are
// vLLM's; checked when the request is added (std::invalid_argument naming the field).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace nanovllm {

struct SamplingParams {
  float temperature = 1.0f;      // 0 = greedy
  int max_tokens = 64;           // generated tokens at most (per sample)
  bool ignore_eos = false;       // keep going past the end-of-sequence token
  std::optional<uint64_t> seed;  // per-request seed; unset: derived from EngineConfig::seed and the request id
  int n = 1;                     // parallel samples of the prompt; they share its KV blocks (prefix cache)
  // Stopping, checked by the engine after every token. A stop string ends the sample when it
  // appears in the detokenized output, which is cut before it (or after it, with
  // include_stop_str_in_output); a token in stop_token_ids ends it like EOS (its text left out
  // unless include_stop_str_in_output). Stop strings need a tokenizer.
  std::vector<std::string> stop;
  std::vector<int32_t> stop_token_ids;
  bool include_stop_str_in_output = false;
  bool skip_special_tokens = true;  // in the output text
};

}  // namespace nanovllm
