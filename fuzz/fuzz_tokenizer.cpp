// libFuzzer target for the tokenizer: random bytes and random Unicode through encode, decode and
// the incremental detokenizer. Beyond "no crash" it checks the invariants HF's byte-level BPE
// has: decode(encode(s)) is NFC(s), and streamed pieces add up to decode(ids).
//   cmake -S . -B build-fuzz -DNANOVLLM_FUZZ=ON -DCMAKE_CXX_COMPILER=clang++ -DNANOVLLM_CUDA=OFF \
//         -DCMAKE_CXX_FLAGS=-fsanitize=fuzzer-no-link,address,undefined   # instrument the library too
//   cmake --build build-fuzz --target fuzz_tokenizer && build-fuzz/fuzz_tokenizer -max_total_time=300
// The tokenizer directory is $NANOVLLM_TOKENIZER_DIR, else models/qwen3-tokenizer of this checkout.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include "tokenizer/normalizer.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

#include <nlohmann/json.hpp>

namespace {

const nanovllm::Tokenizer& tokenizer() {
  static std::unique_ptr<nanovllm::Tokenizer> tok = [] {
    const char* dir = std::getenv("NANOVLLM_TOKENIZER_DIR");
    std::filesystem::path p = dir ? std::filesystem::path(dir)
                                  : std::filesystem::path(__FILE__).parent_path().parent_path() / "models" / "qwen3-tokenizer";
    return nanovllm::Tokenizer::from_dir(p);
  }();
  return *tok;
}

const nanovllm::Normalizer& nfc() {
  static nanovllm::Normalizer n = nanovllm::Normalizer::from_json(nlohmann::json{{"type", "NFC"}}, "fuzz");
  return n;
}

[[noreturn]] void fail(const char* what, const std::string& input) {
  std::fprintf(stderr, "fuzz_tokenizer: %s for input %s\n", what, nlohmann::json(input).dump().c_str());
  std::abort();
}

void check_text(const std::string& s) {
  const auto& tok = tokenizer();
  std::vector<int32_t> ids;
  try {
    ids = tok.encode(s);
  } catch (const std::invalid_argument&) {
    if (nanovllm::utf8::find_invalid(s) == std::string::npos) fail("valid UTF-8 rejected", s);
    return;
  }
  if (nanovllm::utf8::find_invalid(s) != std::string::npos) fail("invalid UTF-8 accepted", s);
  std::string want;
  if (!nfc().apply(s, want)) want = s;
  if (tok.decode(ids) != want) fail("decode(encode(s)) != NFC(s)", s);
}

void check_ids(const std::vector<int32_t>& ids) {
  const auto& tok = tokenizer();
  for (bool skip : {false, true}) {
    std::string whole = tok.decode(ids, skip);
    nanovllm::IncrementalDetokenizer detok(tok, skip);
    std::string streamed;
    for (int32_t id : ids) {
      std::string piece = detok.push(id);
      if (nanovllm::utf8::find_invalid(piece) != std::string::npos) fail("broken UTF-8 piece", whole);
      streamed += piece;
    }
    streamed += detok.flush();
    if (streamed != whole) fail("streamed text != decode(ids)", whole);
  }
}

// Code points drawn from ranges where tokenizers go wrong: ASCII, whitespace of every kind,
// combining marks, Hangul jamo, CJK, emoji and their joiners, and the edges of the code space.
uint32_t pick_codepoint(uint8_t a, uint8_t b) {
  static const uint32_t base[] = {0x20,   0x09,   0x300,  0x1100, 0xAC00, 0x4E00, 0x3040, 0x600,
                                  0x900,  0x1F300, 0x200B, 0x2000, 0xFE00, 0x10FF00, 0xD700, 0xE000};
  uint32_t cp = base[a & 15] + b;
  if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD;
  return cp;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t mode = data[0] % 3;
  ++data, --size;
  if (mode == 0) {  // raw bytes, valid UTF-8 or not
    check_text(std::string(reinterpret_cast<const char*>(data), size));
  } else if (mode == 1) {  // random Unicode
    std::string s;
    for (size_t i = 0; i + 1 < size; i += 2) nanovllm::utf8::append_codepoint(s, pick_codepoint(data[i], data[i + 1]));
    check_text(s);
  } else {  // random ids, byte tokens included
    std::vector<int32_t> ids;
    const int vocab = tokenizer().vocab_size();
    for (size_t i = 0; i + 2 < size; i += 3) {
      uint32_t v = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16);
      ids.push_back(static_cast<int32_t>(v % 3 == 0 ? v % 256 : v % static_cast<uint32_t>(vocab)));
    }
    check_ids(ids);
  }
  return 0;
}
