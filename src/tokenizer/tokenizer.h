// Tokenizer: byte-level BPE from a Hugging Face tokenizer.json, exact to HF tokenizers, plus the
// chat template from tokenizer_config.json.
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "nanovllm/chat_message.h"

namespace nanovllm {

class Tokenizer {
 public:
  // True when dir has a tokenizer.json.
  static bool present(const std::filesystem::path& dir);
  // Loads dir/tokenizer.json and (when present) dir/tokenizer_config.json. Throws
  // std::runtime_error naming the file and the unsupported feature or malformed field.
  static std::unique_ptr<Tokenizer> from_dir(const std::filesystem::path& dir);
  virtual ~Tokenizer() = default;

  // Equals HF `Tokenizer.encode(text, add_special_tokens=False).ids`. Throws std::invalid_argument
  // on invalid UTF-8, naming the byte offset.
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  // Equals HF `Tokenizer.decode(ids, skip_special_tokens=...)`. Throws on an id out of range.
  virtual std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const = 0;

  virtual int vocab_size() const = 0;
  virtual std::optional<int32_t> token_to_id(std::string_view token) const = 0;
  virtual std::optional<int32_t> eos_token_id() const = 0;   // from tokenizer_config.json
  virtual std::optional<int32_t> pad_token_id() const = 0;
  virtual std::optional<int32_t> bos_token_id() const = 0;

  // Renders the model's chat template; throws std::runtime_error when the model has no template
  // or one this renderer does not support (it never renders something else).
  virtual std::string apply_chat_template(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                                          bool enable_thinking) const = 0;
};

// Turns a stream of ids into text pieces; the concatenation of every piece equals
// decode(all ids), and no piece ends inside a UTF-8 sequence.
class IncrementalDetokenizer {
 public:
  explicit IncrementalDetokenizer(const Tokenizer& tok, bool skip_special_tokens = false);
  std::string push(int32_t id);  // the text that became final with this id (may be "")
  std::string flush();           // whatever is left at the end (invalid bytes as U+FFFD, as HF does)

 private:
  const Tokenizer& tok_;
  bool skip_special_;
  std::vector<int32_t> ids_;
  size_t prefix_offset_ = 0, read_offset_ = 0;
};

}  // namespace nanovllm
