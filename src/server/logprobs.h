// The engine's PositionLogprobs in OpenAI's response shapes: the legacy completions object
// {"tokens", "token_logprobs", "top_logprobs", "text_offset"}, chat's {"token", "logprob",
// "bytes", "top_logprobs"} entries, and vLLM's prompt_logprobs list.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nanovllm/output.h"
#include "tokenizer/tokenizer.h"

namespace nanovllm::server {

// How a token shows in a logprobs object. `bytes`: what it decodes to (a special token's text
// included; empty for an id the tokenizer does not know, such as a padded row of the lm-head).
// `text`: those bytes when they are valid UTF-8, else OpenAI's "bytes:\xe4\xbd" form (a token
// that holds part of a character).
struct TokenText {
  std::string text, bytes;
};
TokenText token_text(const Tokenizer& tok, int32_t id);

// A logprob as responses carry it: vLLM's floor of -9999 stands for -inf (and NaN), which JSON
// cannot hold.
double response_logprob(float logprob);

// The characters that begin in `bytes` (its UTF-8 lead bytes): how far a token moves
// completions' text_offset.
int64_t char_count(const std::string& bytes);

// Completions' object with empty lists, to append positions to.
nlohmann::json empty_completion_logprobs();
// Appends a token without a logprob (echo's first prompt token): null logprob and top_logprobs.
void append_unscored_token(const Tokenizer& tok, int32_t id, nlohmann::json& out, int64_t& text_offset);
// Appends one position: the token, its logprob, and a {token: logprob} object of the `num_top`
// most likely tokens plus the chosen one when it is not among them (OpenAI's "up to logprobs + 1").
void append_completion_position(const Tokenizer& tok, const PositionLogprobs& p, int num_top, nlohmann::json& out,
                                int64_t& text_offset);

// Chat's entry for one position, with the `num_top` most likely tokens.
nlohmann::json chat_logprob_entry(const Tokenizer& tok, const PositionLogprobs& p, int num_top);

// vLLM's prompt_logprobs of one prompt: null for the first token, then per position
// {"<id>": {"logprob", "rank", "decoded_token"}} for the prompt's token and the `num_top` most likely.
nlohmann::json vllm_prompt_logprobs(const Tokenizer& tok, const std::vector<PositionLogprobs>& positions, int num_top);

}  // namespace nanovllm::server
