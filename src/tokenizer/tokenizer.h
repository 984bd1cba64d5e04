// Tokenizer: BPE (byte-level, or SentencePiece-style with byte fallback) from a Hugging Face
// tokenizer.json, exact to HF tokenizers, plus the chat template from tokenizer_config.json.
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "nanovllm/chat_message.h"

namespace nanovllm {

class Tokenizer {
 public:
  // True when dir has a tokenizer.json.
  static bool present(const std::filesystem::path& dir);
  // Loads dir/tokenizer.json and (when present) dir/tokenizer_config.json. Throws
  // std::runtime_error naming the file and the unsupported feature or malformed field.
  // `chat_template` (vLLM's --chat-template: a file, or the template text) replaces the model's.
  static std::unique_ptr<Tokenizer> from_dir(const std::filesystem::path& dir, const std::string& chat_template = {});
  virtual ~Tokenizer() = default;

  // Equals HF `Tokenizer.encode(text, add_special_tokens=False).ids`. Throws std::invalid_argument
  // on invalid UTF-8, naming the byte offset.
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  // With add_special_tokens, also the post-processor's special tokens around them (Llama 3, Llama 2,
  // Gemma and DeepSeek-V3 put BOS first), as transformers' tokenizer(text) does: what vLLM uses for
  // completion prompts (chat-rendered prompts already hold theirs: add_special_tokens=false).
  // A Tokenizer without a post-processor adds nothing.
  virtual std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const { return encode(text); }
  // Equals HF `Tokenizer.decode(ids, skip_special_tokens=...)`. Throws on an id out of range.
  virtual std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const = 0;

  virtual int vocab_size() const = 0;
  // The most bytes of text one token can stand for, at most (an upper bound; 0 when unknown): a
  // text of more than n times this many bytes cannot be n tokens or fewer.
  virtual size_t max_token_bytes() const { return 0; }
  // Throws the chat template's syntax error (file and line), if it has one that does not parse.
  virtual void check_chat_template() const {}
  virtual std::optional<int32_t> token_to_id(std::string_view token) const = 0;
  virtual std::optional<int32_t> eos_token_id() const = 0;   // from tokenizer_config.json
  virtual std::optional<int32_t> pad_token_id() const = 0;
  virtual std::optional<int32_t> bos_token_id() const = 0;

  // Renders the model's chat template (Jinja, as transformers' apply_chat_template) with
  // kwargs {"enable_thinking": ...}. Throws std::runtime_error when the model has no template,
  // and jinja::TemplateError (a std::runtime_error naming the template's line) when the
  // template fails or rejects the conversation.
  virtual std::string apply_chat_template(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                                          bool enable_thinking) const = 0;
  // The general form, transformers' apply_chat_template(messages, tools=tools,
  // add_generation_prompt=..., **kwargs): messages a JSON list of message objects (role, content
  // as a string or a list of parts, reasoning_content, tool_calls, name, tool_call_id, ...), tools
  // a JSON list or null, kwargs an object of extra template variables (enable_thinking,
  // documents, ...). Objects keep their key order (tojson prints them in that order).
  std::string apply_chat_template(const nlohmann::ordered_json& messages, const nlohmann::ordered_json& tools,
                                  bool add_generation_prompt, const nlohmann::ordered_json& kwargs) const {
    return render_chat_template(messages, tools, add_generation_prompt, kwargs);
  }

 protected:
  // The general apply_chat_template; a Tokenizer without a chat template throws.
  virtual std::string render_chat_template(const nlohmann::ordered_json& messages, const nlohmann::ordered_json& tools,
                                           bool add_generation_prompt, const nlohmann::ordered_json& kwargs) const;
};

// Turns a stream of ids into text pieces; the concatenation of every piece equals
// decode(all ids), and no piece ends inside a UTF-8 sequence.
class DecodeStream;

class IncrementalDetokenizer {
 public:
  explicit IncrementalDetokenizer(const Tokenizer& tok, bool skip_special_tokens = false);
  ~IncrementalDetokenizer();
  IncrementalDetokenizer(IncrementalDetokenizer&&) noexcept;
  std::string push(int32_t id);  // the text that became final with this id (may be "")
  std::string flush();           // whatever is left at the end (invalid bytes as U+FFFD, as HF does)

 private:
  const Tokenizer& tok_;
  bool skip_special_;
  std::vector<int32_t> ids_;
  size_t prefix_offset_ = 0, read_offset_ = 0;
  std::unique_ptr<DecodeStream> stream_;  // decoders other than ByteLevel (SentencePiece-style)
};

}  // namespace nanovllm
