// GPT-2's byte-level alphabet: each of the 256 bytes is shown as a printable code point, so a
// byte-level BPE vocabulary is a set of strings. We run BPE on raw bytes and use this only to
// translate vocabulary strings to bytes (and back) at load time.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace nanovllm::byte_level {

// The code point that stands for byte b.
uint32_t byte_to_codepoint(uint8_t b);
// The byte that code point cp stands for, or -1 when cp is not in the alphabet.
int codepoint_to_byte(uint32_t cp);

// A vocabulary string as the bytes it stands for. Like HF's ByteLevel decoder, a string with any
// character outside the alphabet (e.g. an added token such as "<think>" is inside it, but "é"
// alone maps to byte 0xE9) stands for its own UTF-8 bytes. `token` must be valid UTF-8.
std::string token_to_bytes(std::string_view token);
// Bytes as a vocabulary string (each byte as its alphabet code point).
std::string bytes_to_token(std::string_view bytes);

}  // namespace nanovllm::byte_level
