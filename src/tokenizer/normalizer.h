// Normalizers from tokenizer.json: Unicode NFC/NFD/NFKC/NFKD (via utf8proc) and Sequence of them.
#pragma once
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace nanovllm {

class Normalizer {
 public:
  enum class Form { nfc, nfd, nfkc, nfkd };
  // From the "normalizer" field (null means none). Throws naming any type it does not support.
  static Normalizer from_json(const nlohmann::json& j, std::string_view where);

  bool empty() const { return forms_.empty(); }
  // Normalizes s into out. Returns false (leaving out untouched) when s is already normal, the
  // common case, so callers can keep using s without a copy.
  bool apply(std::string_view s, std::string& out) const;

 private:
  std::vector<Form> forms_;
};

}  // namespace nanovllm
