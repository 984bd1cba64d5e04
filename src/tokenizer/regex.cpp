// PCRE2 regex with Oniguruma-compatible escapes (see regex.h).
#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer/regex.h"

#include <pcre2.h>

#include <stdexcept>

namespace nanovllm {
namespace {

// Onig's Unicode \s is the White_Space property: \t-\r, space, U+0085 and the Z categories.
constexpr std::string_view kSpaceSet = "\\t-\\r\\x{20}\\x{85}\\p{Z}";
// Onig's \w: letters, marks, decimal digits and connector punctuation.
constexpr std::string_view kWordSet = "\\p{L}\\p{M}\\p{Nd}\\p{Pc}";

// Per-thread match state: one match data block and a JIT stack big enough for long runs of
// whitespace under `\s+(?!\S)`.
struct MatchState {
  pcre2_match_data* data = pcre2_match_data_create(16, nullptr);
  pcre2_jit_stack* stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
  pcre2_match_context* ctx = pcre2_match_context_create(nullptr);
  MatchState() { pcre2_jit_stack_assign(ctx, nullptr, stack); }
  ~MatchState() {
    pcre2_match_context_free(ctx);
    pcre2_jit_stack_free(stack);
    pcre2_match_data_free(data);
  }
};

MatchState& match_state() {
  thread_local MatchState state;
  return state;
}

}  // namespace

std::string onig_to_pcre2(std::string_view p) {
  std::string out;
  out.reserve(p.size() + 32);
  bool in_class = false;
  for (size_t i = 0; i < p.size(); ++i) {
    char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      char e = p[++i];
      std::string_view set;
      bool negate = false;
      switch (e) {
        case 's': set = kSpaceSet; break;
        case 'S': set = kSpaceSet; negate = true; break;
        case 'w': set = kWordSet; break;
        case 'W': set = kWordSet; negate = true; break;
        case 'd': set = "\\p{Nd}"; break;
        case 'D': set = "\\p{Nd}"; negate = true; break;
        default:
          out.push_back('\\');
          out.push_back(e);
          continue;
      }
      if (in_class) {
        if (negate) throw std::runtime_error(std::string("regex '") + std::string(p) + "': \\" + e +
                                             " inside a character class is not supported");
        out += set;
      } else {
        out += negate ? "[^" : "[";
        out += set;
        out += "]";
      }
      continue;
    }
    if (c == '[' && !in_class) {
      in_class = true;
      out.push_back(c);
      // A ']' (after an optional '^') right at the start of a class is a literal.
      if (i + 1 < p.size() && p[i + 1] == '^') out.push_back(p[++i]);
      if (i + 1 < p.size() && p[i + 1] == ']') out.push_back(p[++i]);
      continue;
    }
    if (c == '[' && in_class && i + 1 < p.size() && p[i + 1] == ':') {
      throw std::runtime_error("regex '" + std::string(p) + "': POSIX classes are not supported");
    }
    if (c == ']' && in_class) in_class = false;
    out.push_back(c);
  }
  return out;
}

Regex::Regex(std::string_view pattern, std::string_view where) {
  std::string translated = onig_to_pcre2(pattern);
  int err = 0;
  PCRE2_SIZE err_offset = 0;
  auto* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                             PCRE2_UTF | PCRE2_UCP, &err, &err_offset, nullptr);
  if (!code) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    throw std::runtime_error(std::string(where) + ": cannot compile regex '" + std::string(pattern) + "' at offset " +
                             std::to_string(err_offset) + ": " + reinterpret_cast<char*>(msg));
  }
  // JIT is several times faster; if the platform lacks it, pcre2_match still works.
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  code_ = code;
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

bool Regex::find(std::string_view subject, size_t start, size_t& match_begin, size_t& match_end) const {
  MatchState& st = match_state();
  // The caller validated the UTF-8 once; without NO_UTF_CHECK PCRE2 would rescan the rest of
  // the subject on every call, which is quadratic over a long text.
  int rc = pcre2_match(static_cast<pcre2_code*>(code_), reinterpret_cast<PCRE2_SPTR>(subject.data()), subject.size(),
                       start, PCRE2_NO_UTF_CHECK, st.data, st.ctx);
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  if (rc < 0 && rc != 0) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(rc, msg, sizeof msg);
    throw std::runtime_error(std::string("regex match failed: ") + reinterpret_cast<char*>(msg));
  }
  PCRE2_SIZE* ov = pcre2_get_ovector_pointer(st.data);
  match_begin = ov[0];
  match_end = ov[1];
  return true;
}

}  // namespace nanovllm
