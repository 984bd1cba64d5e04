// Turning a checked CompletionRequest into engine work: prompts rendered (chat template) and
// tokenized, lengths checked against max_model_len, one SubRequest per prompt.
#pragma once
#include <cstdint>
#include <vector>

#include "server/engine_loop.h"
#include "server/request.h"
#include "tokenizer/tokenizer.h"

namespace nanovllm::server {

struct ModelLimits {
  int max_model_len = 0;  // prompt + completion tokens, at most
  int vocab_size = 0;     // the model's (token ids must be below it)
};

struct PreparedRequest {
  std::vector<int> prompt_tokens;  // per prompt
  std::vector<SubRequest> subs;    // one per prompt, each of n samples: choice i*n + j is prompt i, sample j
};

// Throws ApiError (400) for an empty or too-long prompt, a token id outside the vocabulary, or
// prompt + max_tokens above max_model_len (vLLM's message).
PreparedRequest prepare(const CompletionRequest& req, const Tokenizer& tok, const ModelLimits& limits);

}  // namespace nanovllm::server
