// A PCRE2 (JIT-compiled) regex that behaves like the Oniguruma patterns HF tokenizers compiles
// from tokenizer.json: Onig's Unicode \s, \S, \w, \d are rewritten into explicit classes, since
// PCRE2's own differ (e.g. PCRE2's \s leaves out U+0085).
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

namespace nanovllm {

// Rewrites an Oniguruma pattern into an equivalent PCRE2 one. Throws std::runtime_error for a
// construct whose meaning would differ and that it cannot rewrite (e.g. \S inside a class).
std::string onig_to_pcre2(std::string_view pattern);

class Regex {
 public:
  // `pattern` is Oniguruma syntax as in tokenizer.json; `where` names it in errors.
  Regex(std::string_view pattern, std::string_view where);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Finds the first match at or after byte `start` of `subject` (valid UTF-8, `start` on a
  // character boundary). Returns false when there is none.
  bool find(std::string_view subject, size_t start, size_t& match_begin, size_t& match_end) const;

 private:
  void* code_ = nullptr;  // pcre2_code_8*
};

}  // namespace nanovllm
