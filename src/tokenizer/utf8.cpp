// UTF-8 validation and lossy decoding (see utf8.h).
#include "tokenizer/utf8.h"

#include <cstdio>
#include <stdexcept>

namespace nanovllm::utf8 {

Step step(std::string_view s, size_t i, size_t& len) {
  auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) { len = 1; return Step::valid; }
  int need;                 // continuation bytes after the lead
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the first continuation byte
  if (b0 >= 0xC2 && b0 <= 0xDF) need = 1;
  else if (b0 == 0xE0) { need = 2; lo = 0xA0; }
  else if (b0 == 0xED) { need = 2; hi = 0x9F; }  // no surrogates
  else if (b0 >= 0xE1 && b0 <= 0xEF) need = 2;
  else if (b0 == 0xF0) { need = 3; lo = 0x90; }
  else if (b0 >= 0xF1 && b0 <= 0xF3) need = 3;
  else if (b0 == 0xF4) { need = 3; hi = 0x8F; }  // nothing above U+10FFFF
  else { len = 1; return Step::invalid; }
  size_t k = 1;
  for (; k <= static_cast<size_t>(need); ++k) {
    if (i + k >= s.size()) { len = k; return Step::incomplete; }
    auto b = static_cast<unsigned char>(s[i + k]);
    bool ok = k == 1 ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xBF);
    if (!ok) { len = k; return Step::invalid; }
  }
  len = k;
  return Step::valid;
}

size_t find_invalid(std::string_view s) {
  size_t i = 0, n = s.size();
  while (i < n) {
    // ASCII runs dominate real text: skip 8 bytes at a time.
    while (i + 8 <= n) {
      uint64_t w;
      __builtin_memcpy(&w, s.data() + i, 8);
      if (w & 0x8080808080808080ull) break;
      i += 8;
    }
    if (i >= n) break;
    size_t len;
    if (step(s, i, len) != Step::valid) return i;
    i += len;
  }
  return std::string_view::npos;
}

void validate(std::string_view s, std::string_view what) {
  size_t bad = find_invalid(s);
  if (bad == std::string_view::npos) return;
  char buf[96];
  std::snprintf(buf, sizeof buf, ": invalid UTF-8 at byte offset %zu (byte 0x%02X)", bad,
                static_cast<unsigned>(static_cast<unsigned char>(s[bad])));
  throw std::invalid_argument(std::string(what) + buf);
}

void append_lossy(std::string& out, std::string_view bytes) {
  size_t i = 0, n = bytes.size();
  while (i < n) {
    size_t start = i;
    size_t len;
    while (i < n && step(bytes, i, len) == Step::valid) i += len;
    out.append(bytes.data() + start, i - start);
    if (i < n) {
      step(bytes, i, len);
      out.append("\xEF\xBF\xBD");
      i += len;
    }
  }
}

void append_codepoint(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

}  // namespace nanovllm::utf8
