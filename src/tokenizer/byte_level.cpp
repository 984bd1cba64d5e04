// GPT-2's byte <-> code point alphabet (see byte_level.h).
#include "tokenizer/byte_level.h"

#include <array>

#include "tokenizer/utf8.h"

namespace nanovllm::byte_level {
namespace {

struct Alphabet {
  std::array<uint32_t, 256> to_cp{};
  std::array<int16_t, 324> to_byte{};  // code points used are all below 256 + 68
  Alphabet() {
    to_byte.fill(-1);
    // Printable Latin-1 bytes stand for themselves; the rest get 256, 257, ... in byte order.
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      to_cp[b] = printable ? static_cast<uint32_t>(b) : next++;
      to_byte[to_cp[b]] = static_cast<int16_t>(b);
    }
  }
};

const Alphabet& alphabet() {
  static const Alphabet a;
  return a;
}

}  // namespace

uint32_t byte_to_codepoint(uint8_t b) { return alphabet().to_cp[b]; }

int codepoint_to_byte(uint32_t cp) { return cp < 324 ? alphabet().to_byte[cp] : -1; }

std::string token_to_bytes(std::string_view token) {
  std::string out;
  out.reserve(token.size());
  size_t i = 0;
  while (i < token.size()) {
    int b = codepoint_to_byte(utf8::next_codepoint(token, i));
    if (b < 0) return std::string(token);
    out.push_back(static_cast<char>(b));
  }
  return out;
}

std::string bytes_to_token(std::string_view bytes) {
  std::string out;
  for (char c : bytes) utf8::append_codepoint(out, byte_to_codepoint(static_cast<uint8_t>(c)));
  return out;
}

}  // namespace nanovllm::byte_level
