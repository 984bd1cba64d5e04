// Normalizers from tokenizer.json: Unicode NFC/NFD/NFKC/NFKD (via utf8proc), Prepend, Replace
// (a literal or a regex) and Sequence of them.
#pragma once
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace nanovllm {

class Regex;

class Normalizer {
 public:
  enum class Form { nfc, nfd, nfkc, nfkd, prepend, replace };
  struct Step {
    Form form = Form::nfc;
    std::string text;                    // Prepend: what goes in front; Replace: the literal pattern
    std::string content;                 // Replace: the replacement
    std::shared_ptr<const Regex> regex;  // Replace with {"Regex": ...}
  };
  // From the "normalizer" field (null means none). Throws naming any type it does not support.
  static Normalizer from_json(const nlohmann::json& j, std::string_view where);

  bool empty() const { return steps_.empty(); }
  // Normalizes s into out. Returns false (leaving out untouched) when s is already normal, the
  // common case, so callers can keep using s without a copy.
  bool apply(std::string_view s, std::string& out) const;

 private:
  std::vector<Step> steps_;
};

}  // namespace nanovllm
