// SamplingParams: how one request is sampled and when it stops. Names, meanings and defaults are
// vLLM's; checked when the request is added (std::invalid_argument naming the field).
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace nanovllm {

// How a request's logits become a token (the sampler's order is vLLM's; see
// src/backend/sampling.h): logit_bias and the min_tokens mask, then the penalties, then the
// temperature (greedy below 1e-5), then min_p, top_k and top_p, then a seeded draw.
struct SamplingParams {
  float temperature = 1.0f;      // 0 (or below 1e-5) = greedy: the argmax after biases and penalties
  float top_p = 1.0f;            // (0, 1]: the smallest set of tokens holding this much probability; 1 = off
  int top_k = 0;                 // the k most likely tokens (ties with the k-th kept); 0 or -1 = off
  float min_p = 0.0f;            // [0, 1]: drop tokens below min_p x the most likely one's probability
  float repetition_penalty = 1.0f;  // > 0: HF's rule over prompt and output tokens; 1 = off
  float presence_penalty = 0.0f;    // [-2, 2]: OpenAI's rule over output tokens; 0 = off
  float frequency_penalty = 0.0f;   // [-2, 2]: OpenAI's rule over output tokens; 0 = off
  std::map<int32_t, float> logit_bias;  // token id -> added to its logit
  int min_tokens = 0;            // EOS and stop_token_ids are masked (and no stop applies) before this many tokens
  int max_tokens = 64;           // generated tokens at most (per sample)
  bool ignore_eos = false;       // keep going past the end-of-sequence token
  std::optional<uint64_t> seed;  // per-request seed; unset: derived from EngineConfig::seed and the request id
  int n = 1;                     // parallel samples of the prompt; they share its KV blocks (prefix cache)
  // Log-probabilities (raw: of the model's distribution before any of the above), at most
  // EngineConfig::max_logprobs each: logprobs = N gives each generated token's logprob and rank
  // and the N most likely; prompt_logprobs = N the same for every prompt token after the first
  // (such a request computes its whole prompt: no prefix-cache hits).
  std::optional<int> logprobs;
  std::optional<int> prompt_logprobs;
  // Stopping, checked by the engine after every token. A stop string ends the sample when it
  // appears in the detokenized output, which is cut before it (or after it, with
  // include_stop_str_in_output); a token in stop_token_ids ends it like EOS (its text left out
  // unless include_stop_str_in_output). Stop strings need a tokenizer.
  std::vector<std::string> stop;
  std::vector<int32_t> stop_token_ids;
  bool include_stop_str_in_output = false;
  bool skip_special_tokens = true;  // in the output text
  // Under EngineConfig::scheduling_policy "priority": lower runs earlier (ties by arrival), and
  // preemption takes the highest value first. Must be 0 under "fcfs" (vLLM passes it beside the
  // sampling parameters, add_request's priority; here it rides in them, one per prompt).
  int priority = 0;

  // Whether the temperature means greedy (vLLM's 1e-5).
  bool greedy() const { return temperature < 1e-5f; }
};

}  // namespace nanovllm
