// Chat templates rendered natively in C++: Qwen3's template (as shipped in Qwen3's
// tokenizer_config.json) is recognised by its exact text; any other template is refused with a
// clear error rather than rendered approximately.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "nanovllm/chat_message.h"

namespace nanovllm {

class ChatTemplate {
 public:
  enum class Kind { none, qwen3, unsupported };
  ChatTemplate() = default;
  // `source` is the Jinja text from tokenizer_config.json (empty: the model has none); `where`
  // names the file in errors.
  ChatTemplate(std::string source, std::string where);

  Kind kind() const { return kind_; }
  // Throws std::runtime_error when there is no template or it is not one this renderer knows,
  // and std::invalid_argument for messages the template itself would reject (none at all).
  std::string render(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                     bool enable_thinking) const;

 private:
  Kind kind_ = Kind::none;
  std::string source_, where_;
};

// XXH3-64 of a template's text: how known templates are recognised.
uint64_t chat_template_hash(std::string_view source);

// Qwen3's template, rendered as transformers' apply_chat_template does (no tools).
std::string render_qwen3(const std::vector<ChatMessage>& messages, bool add_generation_prompt, bool enable_thinking);

}  // namespace nanovllm
