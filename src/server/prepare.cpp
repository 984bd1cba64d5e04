// prepare(): tokenizing and sizing a request's prompts, with vLLM's defaults and length errors.
#include "server/prepare.h"

#include <algorithm>
#include <exception>
#include <string>

#include "server/api_error.h"

namespace nanovllm::server {
namespace {

std::vector<int32_t> tokenize(const Tokenizer& tok, const std::string& text, const std::string& param) {
  try {
    return tok.encode(text);
  } catch (const std::exception& e) {
    throw bad_request(param, std::string("cannot tokenize '") + param + "': " + e.what());
  }
}

}  // namespace

PreparedRequest prepare(const CompletionRequest& req, const Tokenizer& tok, const ModelLimits& limits) {
  std::vector<std::vector<int32_t>> prompts;
  const bool chat = req.endpoint == Endpoint::chat;
  if (chat) {
    std::string text;
    try {
      text = tok.apply_chat_template(req.messages, req.add_generation_prompt, req.enable_thinking);
    } catch (const std::exception& e) {
      throw bad_request("messages", std::string("cannot apply the chat template: ") + e.what());
    }
    prompts.push_back(tokenize(tok, text, "messages"));
  } else {
    for (size_t i = 0; i < req.prompts.size(); ++i) {
      const PromptInput& p = req.prompts[i];
      if (!p.is_text) {
        for (int32_t id : p.ids)
          if (id >= limits.vocab_size)
            throw bad_request("prompt", "token id " + std::to_string(id) + " in 'prompt' is out of vocabulary (size " +
                                            std::to_string(limits.vocab_size) + ")");
        prompts.push_back(p.ids);
      } else {
        prompts.push_back(tokenize(tok, p.text, "prompt"));
      }
    }
  }
  const std::string param = chat ? "messages" : "prompt";
  for (int32_t id : req.stop_token_ids)
    if (id >= limits.vocab_size)
      throw bad_request("stop_token_ids", "stop token id " + std::to_string(id) + " is out of vocabulary");

  PreparedRequest out;
  for (auto& ids : prompts) {
    const int len = static_cast<int>(ids.size());
    if (len == 0) throw bad_request(param, "the prompt is empty: it must hold at least one token");
    if (len >= limits.max_model_len)
      throw bad_request(param, "This model's maximum context length is " + std::to_string(limits.max_model_len) +
                                   " tokens. However, your prompt has " + std::to_string(len) +
                                   " tokens, which leaves no room for a completion. Please reduce the length of the " +
                                   (chat ? "messages." : "prompt."));
    const int room = limits.max_model_len - len;
    int max_tokens;
    if (req.max_tokens) {
      max_tokens = *req.max_tokens;
      if (max_tokens > room)
        throw bad_request("max_tokens",
                          "This model's maximum context length is " + std::to_string(limits.max_model_len) +
                              " tokens. However, you requested " + std::to_string(int64_t{len} + max_tokens) +
                              " tokens (" + std::to_string(len) + " in the " + (chat ? "messages" : "prompt") + ", " +
                              std::to_string(max_tokens) +
                              " in the completion). Please reduce the length of the prompt or completion.");
    } else {
      // vLLM's defaults: 16 for completions (OpenAI's), the rest of the context for chat.
      max_tokens = chat ? room : std::min(16, room);
    }
    out.prompt_tokens.push_back(len);
    SubRequest sub;
    sub.prompt_token_ids = std::move(ids);
    SamplingParams& sp = sub.params;
    sp.temperature = req.temperature;
    sp.max_tokens = max_tokens;
    sp.ignore_eos = req.ignore_eos;
    sp.n = req.n;  // the engine runs the n samples, sharing the prompt's KV blocks
    if (req.seed) sp.seed = static_cast<uint64_t>(*req.seed);
    sp.stop = req.stop;
    sp.stop_token_ids = req.stop_token_ids;
    sp.include_stop_str_in_output = req.include_stop_str_in_output;
    sp.skip_special_tokens = req.skip_special_tokens;
    out.subs.push_back(std::move(sub));
  }
  return out;
}

}  // namespace nanovllm::server
