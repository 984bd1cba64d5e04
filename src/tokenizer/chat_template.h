// Chat templates: the model's Jinja template (tokenizer_config.json's chat_template, a
// chat_template.jinja beside it, or vLLM's --chat-template override) rendered by the Jinja
// engine in tokenizer/jinja/ with the variables transformers' apply_chat_template passes:
// messages, tools, documents, add_generation_prompt, the special tokens (bos_token, eos_token,
// ...) and any extra keyword arguments (enable_thinking, ...).
#pragma once
#include <exception>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "nanovllm/chat_message.h"

namespace nanovllm {

namespace jinja {
class Template;
}

class ChatTemplate {
 public:
  // One template of a model: its name ("default", "tool_use", ...) and Jinja text.
  struct Named {
    std::string name, source;
  };

  ChatTemplate() = default;  // the model has none: render() says so
  // `templates`: the model's templates (a single one is named "default"); `where`: the file they
  // come from, for errors; `special_tokens`: {"bos_token": "<s>", "eos_token": ..., ...} as
  // transformers' special_tokens_map. A syntax error is kept and thrown by render(), unless
  // `strict` (a template the user named explicitly: fail at once).
  ChatTemplate(std::vector<Named> templates, std::string where, nlohmann::ordered_json special_tokens,
               bool strict = false);

  bool empty() const { return templates_.empty(); }
  // Throws the first template's syntax error (naming its file and line), if any did not parse: a
  // server checks this at start-up rather than fail each chat request.
  void check() const;

  // transformers' apply_chat_template(messages, tools=tools, add_generation_prompt=...,
  // **kwargs). `messages`: a list of message objects (role; content a string, null or a list of
  // parts; reasoning_content, tool_calls, name, tool_call_id, ...); `tools`: a list or null;
  // `kwargs`: an object of extra template variables (enable_thinking, documents, ...). A model
  // with named templates uses "tool_use" when tools are given and it has one, else "default".
  // Throws jinja::TemplateError (a std::runtime_error) naming the template's line when the
  // template fails or rejects the conversation (raise_exception), std::runtime_error when the
  // model has no template.
  std::string render(const nlohmann::ordered_json& messages, const nlohmann::ordered_json& tools,
                     bool add_generation_prompt, const nlohmann::ordered_json& kwargs) const;

  // The same with `messages` as ChatMessage (an empty reasoning_content is left out, so it reads
  // as undefined) and kwargs {"enable_thinking": enable_thinking}.
  std::string render(const std::vector<ChatMessage>& messages, bool add_generation_prompt, bool enable_thinking) const;

 private:
  struct Compiled {
    std::string name;
    std::shared_ptr<const jinja::Template> tmpl;  // null when it did not parse: `error` says why
    std::exception_ptr error;
  };
  const Compiled& pick(bool with_tools) const;

  std::vector<Compiled> templates_;
  std::string where_;
  nlohmann::ordered_json special_tokens_;
};

// The chat template as transformers and vLLM find it. `override_template` (vLLM's
// --chat-template) wins: a file's path, or the template itself when no such file exists and it
// holds "{", "}" or a newline (with \n, \t, \\, \' and \" escapes read as vLLM reads them).
// Else dir/chat_template.jinja, else `tokenizer_config`'s chat_template (a string, or a list of
// {"name", "template"}). `tokenizer_config` (may be null) also gives the special tokens.
// Throws std::runtime_error naming the file or field that is malformed.
ChatTemplate load_chat_template(const std::filesystem::path& dir, const nlohmann::json* tokenizer_config,
                                const std::string& override_template);

nlohmann::ordered_json to_json(const std::vector<ChatMessage>& messages);

}  // namespace nanovllm
