// CompletionRequest: the body of POST /v1/completions or /v1/chat/completions, type-checked and
// range-checked against OpenAI's and vLLM's rules, before any tokenizing.
#pragma once
#include <cstdint>
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
  float temperature = 1.0f;
  bool ignore_eos = false;
  std::optional<int64_t> seed;
  int n = 1;
  std::vector<std::string> stop;
  std::vector<int32_t> stop_token_ids;
  bool include_stop_str_in_output = false;
  bool skip_special_tokens = true;
  bool stream = false;
  bool include_usage = false;          // stream_options.include_usage
};

// Parses and checks `body`. Throws ApiError (400) naming the parameter on malformed JSON, invalid
// UTF-8, a wrong type, an out-of-range value, or a sampling feature the engine does not have.
CompletionRequest parse_request(std::string_view body, Endpoint endpoint);

}  // namespace nanovllm::server
