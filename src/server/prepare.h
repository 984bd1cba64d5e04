// Turning a checked CompletionRequest into engine work: prompts rendered (chat template) and
// tokenized, lengths checked against max_model_len, one SubRequest per prompt.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "server/engine_loop.h"
#include "server/request.h"
#include "tokenizer/tokenizer.h"

namespace nanovllm::server {

struct ModelLimits {
  int max_model_len = 0;  // prompt + completion tokens, at most
  int vocab_size = 0;     // the model's (token ids must be below it)
  int max_logprobs = 20;  // EngineConfig::max_logprobs (vLLM's --max-logprobs)
  // A text prompt (or a chat's messages, all together) of more bytes than this cannot fit in
  // max_model_len tokens, and is refused before tokenizing; 0: no such bound.
  size_t max_prompt_bytes = 0;
};

// What a request gets for a field it leaves out: LLM::default_sampling_params() (the model's
// generation_config.json over vLLM's defaults), and the file's max_new_tokens, which caps the
// default max_tokens (vLLM's rule) when the file has one.
struct SamplingDefaults {
  SamplingParams params;
  std::optional<int> max_new_tokens;
};

// What echo needs of one prompt: its text, and its first token (the one without a logprob).
struct PromptEcho {
  std::string text;
  int32_t first_token_id = -1;
};

struct PreparedRequest {
  std::vector<int> prompt_tokens;  // per prompt
  std::vector<SubRequest> subs;    // one per prompt, each of n samples: choice i*n + j is prompt i, sample j
  std::vector<PromptEcho> echoes;  // per prompt, when the request echoes
};

// Throws ApiError (400) for an empty or too-long prompt, a token id outside the vocabulary (in
// the prompt, stop_token_ids or logit_bias), prompt + max_tokens above max_model_len (vLLM's
// message), min_tokens above max_tokens, or more logprobs than limits.max_logprobs.
PreparedRequest prepare(const CompletionRequest& req, const Tokenizer& tok, const ModelLimits& limits,
                        const SamplingDefaults& defaults);

}  // namespace nanovllm::server
