// Pre-tokenizers from tokenizer.json: Split (regex or literal, all five HF behaviors, invert),
// ByteLevel (optionally splitting with GPT-2's regex) and Sequence. They cut normalized text
// into pieces that BPE encodes one at a time.
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/regex.h"

namespace nanovllm {

struct Range {
  uint32_t begin, end;
};

class PreTokenizer {
 public:
  // From the "pre_tokenizer" field (null: the whole text is one piece). Throws naming any type,
  // behavior or option it does not support.
  static PreTokenizer from_json(const nlohmann::json& j, std::string_view where);
  PreTokenizer();
  ~PreTokenizer();
  PreTokenizer(PreTokenizer&&) noexcept;
  PreTokenizer& operator=(PreTokenizer&&) noexcept;

  // True when a ByteLevel step asks for a space before text that does not start with one.
  bool add_prefix_space() const { return add_prefix_space_; }
  // True when a ByteLevel step is present: the vocabulary is then byte-level.
  bool byte_level() const { return byte_level_; }
  // Appends the pieces of text (byte ranges, non-empty, in order) to out.
  void split(std::string_view text, std::vector<Range>& out) const;

  enum class Behavior { removed, isolated, merged_with_previous, merged_with_next, contiguous };
  struct Step {
    std::unique_ptr<Regex> regex;  // null for a literal pattern
    std::string literal;
    Behavior behavior = Behavior::isolated;
    bool invert = false;
  };

 private:
  std::vector<Step> steps_;
  bool add_prefix_space_ = false;
  bool byte_level_ = false;
};

}  // namespace nanovllm
