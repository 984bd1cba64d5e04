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
  s.tokens.push_back(token);
  s.matches.push_back(std::move(match_content));
  for (auto& v : s.by_first_byte) v.clear();
  for (uint32_t k = 0; k < s.matches.size(); ++k) s.by_first_byte[static_cast<uint8_t>(s.matches[k][0])].push_back(k);
  for (int b = 0; b < 256; ++b) {
    auto& v = s.by_first_byte[b];
    std::stable_sort(v.begin(), v.end(), [&](uint32_t x, uint32_t y) { return s.matches[x].size() > s.matches[y].size(); });
    s.first_byte[b] = !v.empty();
  }
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
    int hit = -1;
    for (uint32_t k : s.by_first_byte[b]) {
      if (text.compare(i, s.matches[k].size(), s.matches[k]) == 0) {
        hit = static_cast<int>(k);
        break;
      }
    }
    if (hit < 0) {
      ++i;
      continue;
    }
    const AddedToken& t = s.tokens[hit];
    uint32_t start = i, stop = i + static_cast<uint32_t>(s.matches[hit].size());
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
