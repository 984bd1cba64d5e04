// UTF-8 helpers for the tokenizer: strict validation that names the offending byte offset, and
// lossy decoding that replaces bad bytes with U+FFFD exactly as Rust's String::from_utf8_lossy
// (and so HF tokenizers' decoders) does.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace nanovllm::utf8 {

enum class Step : uint8_t { valid, invalid, incomplete };

// Classifies the sequence starting at s[i]: a whole valid character, a maximal invalid subpart
// (WHATWG/Unicode "maximal subpart" rule, one U+FFFD each), or a valid prefix cut off by the end.
// `len` receives the number of bytes the step covers (>= 1).
Step step(std::string_view s, size_t i, size_t& len);

// Byte offset of the first byte that is not part of valid UTF-8, or npos.
size_t find_invalid(std::string_view s);

// Throws std::invalid_argument("<what>: invalid UTF-8 at byte offset N (byte 0xXX)") if s is not UTF-8.
void validate(std::string_view s, std::string_view what);

// Appends bytes to out, each invalid subpart (and a trailing incomplete one) replaced by U+FFFD.
void append_lossy(std::string& out, std::string_view bytes);

// Decodes the code point at s[i] (s must be valid UTF-8 there) and advances i.
inline uint32_t next_codepoint(std::string_view s, size_t& i) {
  auto b = static_cast<unsigned char>(s[i]);
  if (b < 0x80) { ++i; return b; }
  int n = b >= 0xF0 ? 3 : b >= 0xE0 ? 2 : 1;
  uint32_t cp = b & (0x3F >> n);
  for (int k = 1; k <= n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  i += n + 1;
  return cp;
}

// Appends the UTF-8 encoding of cp.
void append_codepoint(std::string& out, uint32_t cp);

}  // namespace nanovllm::utf8
