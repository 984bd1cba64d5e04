// Added-token matching (see added_vocabulary.h).
#include "tokenizer/added_vocabulary.h"

#include <utf8proc.h>

#include <algorithm>

#include "tokenizer/utf8.h"

namespace nanovllm {
namespace {

// The Unicode White_Space property (Rust's char::is_whitespace and regex \s).
bool is_space(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// Rust regex's Unicode \w: letters, marks, decimal digits, connector punctuation, joiners.
bool is_word(uint32_t c) {
  if (c == 0x200C || c == 0x200D) return true;
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(c))) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME: case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_PC:
      return true;
    default:
      return false;
  }
}

// The code point that ends at byte `end` (text valid UTF-8, end > 0).
uint32_t codepoint_before(std::string_view text, size_t end) {
  size_t b = end - 1;
  while (b > 0 && (static_cast<unsigned char>(text[b]) & 0xC0) == 0x80) --b;
  return utf8::next_codepoint(text, b);
}

}  // namespace

void AddedVocabulary::add(const AddedToken& token, std::string match_content) {
  if (match_content.empty()) return;  // HF never matches an empty token
  MatchSet& s = set_[token.normalized];
  const auto index = static_cast<int32_t>(s.tokens.size());
  uint32_t node = 0;
  for (char c : match_content) {
    const auto b = static_cast<uint8_t>(c);
    uint32_t next = 0;
    for (const auto& [kb, kn] : s.trie[node].kids)
      if (kb == b) next = kn;
    if (next == 0) {
      next = static_cast<uint32_t>(s.trie.size());
      s.trie[node].kids.emplace_back(b, next);
      s.trie.emplace_back();
    }
    node = next;
  }
  if (s.trie[node].token >= 0) return;  // the same string twice: the first token keeps it
  s.trie[node].token = index;
  s.first_byte[static_cast<uint8_t>(match_content[0])] = true;
  s.tokens.push_back(token);
  s.matches.push_back(std::move(match_content));
}

int AddedVocabulary::longest_at(const MatchSet& s, std::string_view text, size_t i, size_t& len) {
  int hit = -1;
  uint32_t node = 0;
  for (size_t k = i; k < text.size(); ++k) {
    const auto b = static_cast<uint8_t>(text[k]);
    uint32_t next = 0;
    for (const auto& [kb, kn] : s.trie[node].kids)
      if (kb == b) {
        next = kn;
        break;
      }
    if (next == 0) break;
    node = next;
    if (s.trie[node].token >= 0) {
      hit = s.trie[node].token;
      len = k + 1 - i;
    }
  }
  return hit;
}

void AddedVocabulary::split(std::string_view text, bool normalized, std::vector<Segment>& out) const {
  const MatchSet& s = set_[normalized];
  const auto n = static_cast<uint32_t>(text.size());
  uint32_t start_offset = 0;  // end of the previous accepted match
  uint32_t i = 0;
  while (i < n) {
    auto b = static_cast<uint8_t>(text[i]);
    if (!s.first_byte[b]) {
      ++i;
      continue;
    }
    size_t len = 0;
    int hit = longest_at(s, text, i, len);
    if (hit < 0) {
      ++i;
      continue;
    }
    const AddedToken& t = s.tokens[hit];
    uint32_t start = i, stop = i + static_cast<uint32_t>(len);
    i = stop;  // the matcher moves past a match even when single_word then rejects it
    if (t.single_word) {
      bool start_space = start == 0 || !is_word(codepoint_before(text, start));
      size_t p = stop;
      bool stop_space = stop == n || !is_word(utf8::next_codepoint(text, p));
      if (!start_space || !stop_space) continue;
    }
    if (t.lstrip) {
      uint32_t ns = start;
      while (ns > 0) {
        size_t b0 = ns - 1;
        while (b0 > 0 && (static_cast<unsigned char>(text[b0]) & 0xC0) == 0x80) --b0;
        size_t q = b0;
        if (!is_space(utf8::next_codepoint(text, q))) break;
        ns = static_cast<uint32_t>(b0);
      }
      start = std::max(ns, start_offset);  // spaces an earlier match took stay with it
    }
    if (t.rstrip) {
      while (stop < n) {
        size_t q = stop;
        if (!is_space(utf8::next_codepoint(text, q))) break;
        stop = static_cast<uint32_t>(q);
      }
      // HF's matcher resumes after the token itself, not after the stripped spaces.
    }
    if (start_offset < start) out.push_back({start_offset, start, -1});
    out.push_back({start, stop, t.id});
    start_offset = stop;
  }
  if (start_offset != n) out.push_back({start_offset, n, -1});
}

}  // namespace nanovllm
