// Decoders (src/tokenizer/decoder.cpp) against a line-by-line port of HF tokenizers' decode_chain
// (the oracle below: each decoder maps a list of token strings to a list, then join("")), on HF's
// own unit cases and on random chains of random tokens; and the streaming contract: pieces pushed
// one token at a time are valid UTF-8 and add up to the whole decode.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>

#include "tokenizer/byte_level.h"
#include "tokenizer/decoder.h"
#include "tokenizer/utf8.h"

namespace nanovllm {
namespace {

using json = nlohmann::json;
using Tokens = std::vector<std::string>;

// ---- the oracle: HF's decoders, as written in tokenizers/src/decoders/*.rs ----

std::vector<uint32_t> chars_of(const std::string& s) {
  std::vector<uint32_t> c;
  for (size_t i = 0; i < s.size();) c.push_back(utf8::next_codepoint(s, i));
  return c;
}
std::string string_of(const std::vector<uint32_t>& c, size_t b, size_t e) {
  std::string s;
  for (size_t k = b; k < e; ++k) utf8::append_codepoint(s, c[k]);
  return s;
}

Tokens hf_byte_level(const Tokens& tokens) {
  std::string bytes;
  for (const auto& t : tokens) bytes += byte_level::token_to_bytes(t);  // all chars mapped, or t's own bytes
  std::string out;
  utf8::append_lossy(out, bytes);  // String::from_utf8_lossy
  return {out};
}

Tokens hf_replace(const Tokens& tokens, const std::string& pattern, const std::string& content) {
  Tokens out;
  for (const auto& t : tokens) {
    std::string r;
    size_t prev = 0, m;
    while ((m = t.find(pattern, prev)) != std::string::npos) {
      r += t.substr(prev, m - prev) + content;
      prev = m + pattern.size();
    }
    out.push_back(r + t.substr(prev));
  }
  return out;
}

Tokens hf_byte_fallback(const Tokens& tokens) {
  Tokens out;
  std::string prev;
  auto flush = [&] {
    if (prev.empty()) return;
    if (utf8::find_invalid(prev) == std::string::npos) out.push_back(prev);
    else for (size_t i = 0; i < prev.size(); ++i) out.push_back("\xEF\xBF\xBD");
    prev.clear();
  };
  for (const auto& t : tokens) {
    bool is_byte = false;
    if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>') {
      std::string hex = t.substr(3, 2);
      // u8::from_str_radix(hex, 16): an optional '+', then hex digits.
      std::string digits = hex[0] == '+' ? hex.substr(1) : hex;
      if (!digits.empty() && digits.find_first_not_of("0123456789abcdefABCDEF") == std::string::npos) {
        prev.push_back(static_cast<char>(std::stoi(digits, nullptr, 16)));
        is_byte = true;
      }
    }
    if (is_byte) continue;
    flush();
    out.push_back(t);
  }
  flush();
  return out;
}

Tokens hf_fuse(const Tokens& tokens) {
  std::string s;
  for (const auto& t : tokens) s += t;
  return {s};
}

Tokens hf_strip(const Tokens& tokens, uint32_t content, size_t start, size_t stop) {
  Tokens out;
  for (const auto& t : tokens) {
    auto c = chars_of(t);
    size_t start_cut = 0;
    for (size_t i = 0; i < std::min(start, c.size()); ++i) {
      if (c[i] != content) break;
      start_cut = i + 1;
    }
    size_t stop_cut = c.size();
    for (size_t i = 0; i < std::min(stop, c.size() - start_cut); ++i) {
      size_t index = c.size() - i - 1;
      if (c[index] != content) break;
      stop_cut = index;
    }
    out.push_back(string_of(c, start_cut, stop_cut));
  }
  return out;
}

Tokens hf_metaspace(const Tokens& tokens, uint32_t replacement, bool prepend) {
  Tokens out;
  for (size_t i = 0; i < tokens.size(); ++i) {
    std::string s;
    for (uint32_t c : chars_of(tokens[i])) {
      if (c == replacement) {
        if (!(i == 0 && prepend)) s += ' ';
      } else {
        utf8::append_codepoint(s, c);
      }
    }
    out.push_back(s);
  }
  return out;
}

// Runs the oracle for a decoder JSON (Sequence or single).
Tokens hf_chain(const json& d, Tokens tokens) {
  const std::string type = d["type"];
  if (type == "Sequence") {
    for (const auto& x : d["decoders"]) tokens = hf_chain(x, tokens);
    return tokens;
  }
  if (type == "ByteLevel") return hf_byte_level(tokens);
  if (type == "Replace") return hf_replace(tokens, d["pattern"]["String"], d["content"]);
  if (type == "ByteFallback") return hf_byte_fallback(tokens);
  if (type == "Fuse") return hf_fuse(tokens);
  if (type == "Strip") return hf_strip(tokens, chars_of(d["content"])[0], d["start"], d["stop"]);
  if (type == "Metaspace") return hf_metaspace(tokens, chars_of(d["replacement"])[0], d["prepend_scheme"] != "never");
  ADD_FAILURE() << "oracle lacks " << type;
  return tokens;
}

std::string hf_decode(const json& d, const Tokens& tokens) {
  return hf_fuse(hf_chain(d, tokens))[0];
}

// ---- the decoder under test ----

std::string decode(const json& d, const Tokens& tokens) {
  Decoder dec = Decoder::from_json(d, "test");
  std::vector<std::string_view> views(tokens.begin(), tokens.end());
  return dec.decode(views);
}

const json kReplaceSpace = {{"type", "Replace"}, {"pattern", {{"String", "\xE2\x96\x81"}}}, {"content", " "}};
const json kByteFallback = {{"type", "ByteFallback"}};
const json kFuse = {{"type", "Fuse"}};
json strip(int start, int stop) { return {{"type", "Strip"}, {"content", " "}, {"start", start}, {"stop", stop}}; }
json sequence(std::vector<json> ds) { return {{"type", "Sequence"}, {"decoders", ds}}; }
// Llama 2's and Gemma's decoders, as in their tokenizer.json.
const json kLlama2 = sequence({kReplaceSpace, kByteFallback, kFuse, strip(1, 0)});
const json kGemma = sequence({kReplaceSpace, kByteFallback, kFuse});

// HF's own unit cases (byte_fallback.rs, strip.rs, replace.rs, metaspace.rs).
TEST(TokenizerDecoders, HuggingFaceUnitCases) {
  EXPECT_EQ(decode(kByteFallback, {"Hey", "friend!"}), "Heyfriend!");
  EXPECT_EQ(decode(kByteFallback, {"<0x61>"}), "a");
  EXPECT_EQ(decode(kByteFallback, {"<0xE5>"}), "\xEF\xBF\xBD");
  EXPECT_EQ(decode(kByteFallback, {"<0xE5>", "<0x8f>"}), "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(decode(kByteFallback, {"<0xE5>", "<0x8f>", "<0xab>", "a"}), "\xE5\x8F\xAB" "a");  // 叫a
  EXPECT_EQ(decode(kByteFallback, {"<0xE5>", "<0x8f>", "a"}), "\xEF\xBF\xBD\xEF\xBF\xBD" "a");
  EXPECT_EQ(decode({{"type", "Strip"}, {"content", "H"}, {"start", 1}, {"stop", 0}}, {"Hey", " friend!", "HHH"}),
            "ey friend!HH");
  EXPECT_EQ(decode({{"type", "Strip"}, {"content", "y"}, {"start", 0}, {"stop", 1}}, {"Hey", " friend!"}), "He friend!");
  EXPECT_EQ(decode({{"type", "Replace"}, {"pattern", {{"String", "_"}}}, {"content", " "}}, {"hello", "_hello"}),
            "hello hello");
  EXPECT_EQ(decode({{"type", "Metaspace"}, {"replacement", "\xE2\x96\x81"}, {"prepend_scheme", "always"}},
                   {"\xE2\x96\x81Hey", "\xE2\x96\x81" "friend!"}),
            "Hey friend!");
  // No decoder at all: HF joins the tokens with spaces.
  EXPECT_EQ(decode(nullptr, {"a", "b", "c"}), "a b c");
}

// What the SentencePiece chains do at the start: Llama 2's Strip drops one leading space of the
// whole text (after Fuse), not of each token; Gemma keeps it.
TEST(TokenizerDecoders, SentencePieceChains) {
  const std::string sp = "\xE2\x96\x81";  // ▁
  EXPECT_EQ(decode(kLlama2, {sp + "Hello", sp + "world"}), "Hello world");
  EXPECT_EQ(decode(kLlama2, {sp, sp + "Hello"}), " Hello");
  EXPECT_EQ(decode(kLlama2, {"<s>", sp + "Hello"}), "<s> Hello");
  EXPECT_EQ(decode(kLlama2, {sp, "<0xC3>", "<0xA9>"}), "\xC3\xA9");  // "▁é" with é as two byte tokens
  EXPECT_EQ(decode(kLlama2, {"<0xC3>", "<0xA9>", "<0x80>", sp + "a"}), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD a");
  EXPECT_EQ(decode(kGemma, {sp + "Hello", sp + "world"}), " Hello world");
  EXPECT_EQ(decode(sequence({kByteFallback, {{"type", "Metaspace"}, {"replacement", sp}, {"prepend_scheme", "first"}}}),
                   {sp + sp + "a", sp + "b"}),
            "a b");  // HF drops every ▁ of token 0, not only the first
}

TEST(TokenizerDecoders, UnsupportedAreNamed) {
  auto error = [](const json& d) {
    try {
      Decoder::from_json(d, "tokenizer.json");
    } catch (const std::runtime_error& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  EXPECT_NE(error({{"type", "WordPiece"}}).find("\"WordPiece\""), std::string::npos);
  EXPECT_NE(error({{"type", "CTC"}}).find("\"CTC\""), std::string::npos);
  EXPECT_NE(error({{"type", "Strip"}, {"content", "ab"}, {"start", 1}}).find("exactly one character"), std::string::npos);
  EXPECT_NE(error({{"type", "Replace"}, {"pattern", {{"Regex", "(a)"}}}, {"content", "$1"}}).find("\"$\""),
            std::string::npos);
  EXPECT_NE(error({{"type", "Metaspace"}, {"replacement", "_"}, {"prepend_scheme", "sometimes"}}).find("\"sometimes\""),
            std::string::npos);
}

// Random chains of every supported decoder (any order, Fuse anywhere) over random tokens: the
// stream equals the oracle, and one-token-at-a-time pieces are whole characters adding up to it.
TEST(TokenizerDecoders, RandomChainsEqualHuggingFace) {
  const std::string sp = "\xE2\x96\x81";
  const std::vector<json> pool = {
      kReplaceSpace,
      {{"type", "Replace"}, {"pattern", {{"String", "ab"}}}, {"content", "X"}},  // spans tokens after a Fuse
      {{"type", "Replace"}, {"pattern", {{"String", sp + sp}}}, {"content", "="}},
      kByteFallback, kFuse, strip(1, 0), strip(2, 1), strip(0, 2),
      {{"type", "Strip"}, {"content", sp}, {"start", 1}, {"stop", 1}},
      {{"type", "Metaspace"}, {"replacement", sp}, {"prepend_scheme", "always"}},
      {{"type", "Metaspace"}, {"replacement", sp}, {"prepend_scheme", "never"}},
      {{"type", "ByteLevel"}},
  };
  const std::vector<std::string> token_pool = {
      sp, sp + "a", sp + sp, "a", "b", "ab", " ", "  ", "x ", "", "<0xE4>", "<0xB8>", "<0xAD>", "<0xC3>", "<0xA9>",
      "<0x20>", "<0x41>", "<0x80>", "<0xFF>", "<0x+A>", "<0xzz>", "\xC3\xA9", "\xE4\xB8\xAD", "\xC4\xA0",  // é 中 Ġ
      "\xC4\xA0\xC4\xA0", "\xC3\xA4\xC2\xB8", "<s>", "b" + sp, "\xF0\x9F\x99\x82"};                        // ä¸ 🙂
  std::mt19937 rng(2024);
  for (int t = 0; t < 4000; ++t) {
    std::vector<json> chain;
    int n = std::uniform_int_distribution<int>(1, 5)(rng);
    for (int k = 0; k < n; ++k) chain.push_back(pool[std::uniform_int_distribution<size_t>(0, pool.size() - 1)(rng)]);
    const json d = n == 1 && t % 2 ? chain[0] : sequence(chain);
    Tokens tokens;
    int m = std::uniform_int_distribution<int>(0, 12)(rng);
    for (int k = 0; k < m; ++k) tokens.push_back(token_pool[std::uniform_int_distribution<size_t>(0, token_pool.size() - 1)(rng)]);
    const std::string want = hf_decode(d, tokens);
    Decoder dec = Decoder::from_json(d, "test");
    DecodeStream stream(dec);
    std::string all;
    for (const auto& tok : tokens) {
      std::string piece;
      stream.push(tok, piece);
      ASSERT_EQ(utf8::find_invalid(piece), std::string::npos) << d.dump() << " " << json(tokens).dump();
      all += piece;
    }
    stream.finish(all);
    ASSERT_EQ(all, want) << "decoder " << d.dump() << "\ntokens " << json(tokens).dump();
  }
}

}  // namespace
}  // namespace nanovllm
