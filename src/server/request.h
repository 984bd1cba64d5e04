// CompletionRequest: the body of POST /v1/completions or /v1/chat/completions, type-checked and
// range-checked against OpenAI's and vLLM's rules, before any tokenizing.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "nanovllm/llm.h"

namespace nanovllm::server {

enum class Endpoint { completions, chat };

// One prompt of /v1/completions: text, or token ids given by the client.
struct PromptInput {
  bool is_text = true;
  std::string text;
  std::vector<int32_t> ids;
};

struct CompletionRequest {
  Endpoint endpoint = Endpoint::completions;
  std::string model;                   // "" when the client left it out (the served model is meant)
  std::vector<PromptInput> prompts;    // completions: one or more prompts
  std::vector<ChatMessage> messages;   // chat
  bool add_generation_prompt = true;   // chat
  bool enable_thinking = true;         // chat: chat_template_kwargs.enable_thinking
  std::optional<int> max_tokens;       // unset: the endpoint's default (see prepare)
  // Sampling, as vLLM's fields. Unset: the server's default (LLM::default_sampling_params(), the
  // model's generation_config.json over vLLM's defaults).
  std::optional<float> temperature;    // [0, 2]
  std::optional<float> top_p;          // (0, 1]
  std::optional<int> top_k;            // -1 or 0 (off), or >= 1
  std::optional<float> min_p;          // [0, 1]
  std::optional<float> repetition_penalty;                   // > 0
  std::optional<float> presence_penalty, frequency_penalty;  // [-2, 2]
  std::map<int32_t, float> logit_bias; // clamped to [-100, 100] as vLLM; ids checked against the vocabulary in prepare
  int min_tokens = 0;                  // <= max_tokens, checked in prepare
  bool ignore_eos = false;
  std::optional<int64_t> seed;
  int priority = 0;                    // vLLM's: lower is served earlier (only under --scheduling-policy priority)
  int n = 1;
  // Log-probabilities (their bound, --max-logprobs, is checked in prepare): completions'
  // `logprobs` N, or chat's `top_logprobs` N once `logprobs` is true; unset = none.
  std::optional<int> logprobs;
  std::optional<int> prompt_logprobs;  // completions, vLLM's extension: a "prompt_logprobs" list per choice
  bool echo = false;                   // completions: the prompt (and, with logprobs, its logprobs) leads each choice
  std::vector<std::string> stop;
  std::vector<int32_t> stop_token_ids;
  bool include_stop_str_in_output = false;
  bool skip_special_tokens = true;
  bool stream = false;
  bool include_usage = false;          // stream_options.include_usage
};

// Bounds checked while the body is scanned, before its tree is built (a list of small numbers
// costs 16 bytes an item in the tree, 2 in the body).
struct ParseLimits {
  size_t max_list_items = 0;  // any list in the body, at most (0: unbounded)
};

// Parses and checks `body`. Throws ApiError (400) naming the parameter on malformed JSON, invalid
// UTF-8, a wrong type, an out-of-range value (a number beyond double's, 1e400, too), a list
// longer than limits.max_list_items, or a feature the server does not have.
CompletionRequest parse_request(std::string_view body, Endpoint endpoint, const ParseLimits& limits = {});

}  // namespace nanovllm::server
