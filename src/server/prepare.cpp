// prepare(): tokenizing and sizing a request's prompts, with vLLM's defaults and length errors,
// and the request's SamplingParams over the server's defaults.
#include "server/prepare.h"

#include <algorithm>
#include <exception>
#include <string>

#include "server/api_error.h"

namespace nanovllm::server {
namespace {

// vLLM's defaults: a completions prompt with the tokenizer's special tokens (Llama's BOS), a
// rendered chat without (the template wrote them).
std::vector<int32_t> tokenize(const Tokenizer& tok, const std::string& text, const std::string& param) {
  try {
    return tok.encode(text, /*add_special_tokens=*/param != "messages");
  } catch (const std::exception& e) {
    throw bad_request(param, std::string("cannot tokenize '") + param + "': " + e.what());
  }
}

// Refuses, before the tokenizer sees it, a text whose bytes alone show it cannot fit.
void check_prompt_bytes(size_t bytes, const ModelLimits& limits, const std::string& param) {
  if (limits.max_prompt_bytes > 0 && bytes > limits.max_prompt_bytes)
    throw bad_request(param, "This model's maximum context length is " + std::to_string(limits.max_model_len) +
                                 " tokens, and the " + param + " of " + std::to_string(bytes) +
                                 " bytes is certainly longer (no " + std::to_string(limits.max_prompt_bytes) +
                                 " bytes of text fit in fewer). Please reduce the length of the " + param + ".");
}

// The chat rendered and tokenized, or each completions prompt tokenized (or its ids checked).
std::vector<std::vector<int32_t>> prompt_ids(const CompletionRequest& req, const Tokenizer& tok,
                                             const ModelLimits& limits) {
  std::vector<std::vector<int32_t>> prompts;
  if (req.endpoint == Endpoint::chat) {
    size_t bytes = 0;
    for (const ChatMessage& m : req.messages) bytes += m.content.size() + m.reasoning_content.size();
    check_prompt_bytes(bytes, limits, "messages");
    std::string text;
    try {
      text = tok.apply_chat_template(req.messages, req.add_generation_prompt, req.enable_thinking);
    } catch (const std::exception& e) {
      throw bad_request("messages", std::string("cannot apply the chat template: ") + e.what());
    }
    prompts.push_back(tokenize(tok, text, "messages"));
    return prompts;
  }
  for (const PromptInput& p : req.prompts) {
    if (p.is_text) {
      check_prompt_bytes(p.text.size(), limits, "prompt");
      prompts.push_back(tokenize(tok, p.text, "prompt"));
      continue;
    }
    for (int32_t id : p.ids)
      if (id >= limits.vocab_size)
        throw bad_request("prompt", "token id " + std::to_string(id) + " in 'prompt' is out of vocabulary (size " +
                                        std::to_string(limits.vocab_size) + ")");
    prompts.push_back(p.ids);
  }
  return prompts;
}

// The parameters whose bounds are the model's or the server's, not the request's own.
void check_against_limits(const CompletionRequest& req, const ModelLimits& limits) {
  for (int32_t id : req.stop_token_ids)
    if (id >= limits.vocab_size)
      throw bad_request("stop_token_ids", "stop token id " + std::to_string(id) + " is out of vocabulary");
  for (const auto& [id, bias] : req.logit_bias)
    if (id >= limits.vocab_size)
      throw bad_request("logit_bias", "'logit_bias' token id " + std::to_string(id) + " is out of vocabulary (size " +
                                          std::to_string(limits.vocab_size) + ")");
  auto check_count = [&](const std::optional<int>& count, const std::string& param) {
    if (count && *count > limits.max_logprobs)
      throw bad_request(param, "'" + param + "' must be in [0, " + std::to_string(limits.max_logprobs) +
                                   "] (the server's max_logprobs), got " + std::to_string(*count));
  };
  check_count(req.logprobs, req.endpoint == Endpoint::chat ? "top_logprobs" : "logprobs");
  check_count(req.prompt_logprobs, "prompt_logprobs");
}

// The request's max_tokens (a 400 beyond the context), or vLLM's default: the rest of the
// context, capped by generation_config.json's max_new_tokens and, for completions, by OpenAI's 16.
int resolve_max_tokens(const CompletionRequest& req, int prompt_len, const ModelLimits& limits,
                       const SamplingDefaults& defaults) {
  const bool chat = req.endpoint == Endpoint::chat;
  const int room = limits.max_model_len - prompt_len;
  if (!req.max_tokens) {
    int max_tokens = room;
    if (defaults.max_new_tokens) max_tokens = std::min(max_tokens, *defaults.max_new_tokens);
    return chat ? max_tokens : std::min(max_tokens, 16);
  }
  const int max_tokens = *req.max_tokens;
  if (max_tokens > room)
    throw bad_request("max_tokens",
                      "This model's maximum context length is " + std::to_string(limits.max_model_len) +
                          " tokens. However, you requested " + std::to_string(int64_t{prompt_len} + max_tokens) +
                          " tokens (" + std::to_string(prompt_len) + " in the " + (chat ? "messages" : "prompt") +
                          ", " + std::to_string(max_tokens) +
                          " in the completion). Please reduce the length of the prompt or completion.");
  return max_tokens;
}

// The server's defaults with every field the request set in their place.
SamplingParams sampling_params(const CompletionRequest& req, const SamplingDefaults& defaults, int max_tokens) {
  SamplingParams sp = defaults.params;
  if (req.temperature) sp.temperature = *req.temperature;
  if (req.top_p) sp.top_p = *req.top_p;
  if (req.top_k) sp.top_k = *req.top_k;
  if (req.min_p) sp.min_p = *req.min_p;
  if (req.repetition_penalty) sp.repetition_penalty = *req.repetition_penalty;
  if (req.presence_penalty) sp.presence_penalty = *req.presence_penalty;
  if (req.frequency_penalty) sp.frequency_penalty = *req.frequency_penalty;
  sp.logit_bias = req.logit_bias;
  sp.min_tokens = req.min_tokens;
  sp.max_tokens = max_tokens;
  sp.ignore_eos = req.ignore_eos;
  sp.n = req.n;  // the engine runs the n samples, sharing the prompt's KV blocks
  if (req.seed) sp.seed = static_cast<uint64_t>(*req.seed);
  sp.priority = req.priority;
  sp.stop = req.stop;
  sp.stop_token_ids = req.stop_token_ids;
  sp.include_stop_str_in_output = req.include_stop_str_in_output;
  sp.skip_special_tokens = req.skip_special_tokens;
  sp.logprobs = req.logprobs;
  // Echo with logprobs shows the prompt's logprobs too (vLLM's rule); with prompt_logprobs as
  // well, the engine computes the larger count and each view keeps its own.
  sp.prompt_logprobs = req.prompt_logprobs;
  if (req.echo && req.logprobs) sp.prompt_logprobs = std::max(req.prompt_logprobs.value_or(0), *req.logprobs);
  return sp;
}

// vLLM echoes a text prompt as given and a token-id prompt decoded.
PromptEcho echo_of(const PromptInput& input, const std::vector<int32_t>& ids, const Tokenizer& tok) {
  PromptEcho e;
  e.first_token_id = ids.front();
  if (input.is_text) {
    e.text = input.text;
    return e;
  }
  try {
    e.text = tok.decode(ids);
  } catch (const std::exception& ex) {
    throw bad_request("prompt", std::string("cannot decode 'prompt' to echo it: ") + ex.what());
  }
  return e;
}

}  // namespace

PreparedRequest prepare(const CompletionRequest& req, const Tokenizer& tok, const ModelLimits& limits,
                        const SamplingDefaults& defaults) {
  const bool chat = req.endpoint == Endpoint::chat;
  std::vector<std::vector<int32_t>> prompts = prompt_ids(req, tok, limits);
  check_against_limits(req, limits);
  const std::string param = chat ? "messages" : "prompt";

  PreparedRequest out;
  for (size_t i = 0; i < prompts.size(); ++i) {
    std::vector<int32_t>& ids = prompts[i];
    const int len = static_cast<int>(ids.size());
    if (len == 0) throw bad_request(param, "the prompt is empty: it must hold at least one token");
    if (len >= limits.max_model_len)
      throw bad_request(param, "This model's maximum context length is " + std::to_string(limits.max_model_len) +
                                   " tokens. However, your prompt has " + std::to_string(len) +
                                   " tokens, which leaves no room for a completion. Please reduce the length of the " +
                                   (chat ? "messages." : "prompt."));
    const int max_tokens = resolve_max_tokens(req, len, limits, defaults);
    if (req.min_tokens > max_tokens)
      throw bad_request("min_tokens", "'min_tokens' must be at most max_tokens (" + std::to_string(max_tokens) +
                                          "), got " + std::to_string(req.min_tokens));
    if (req.echo) out.echoes.push_back(echo_of(req.prompts[i], ids, tok));
    out.prompt_tokens.push_back(len);
    out.subs.push_back(SubRequest{std::move(ids), sampling_params(req, defaults, max_tokens)});
  }
  return out;
}

}  // namespace nanovllm::server
