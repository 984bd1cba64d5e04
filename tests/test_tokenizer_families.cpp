// The model families' real tokenizers (models/<name>-tokenizer, fetched by scripts/setup.sh):
// Llama 3.1 and DeepSeek-V3 (byte-level BPE, their own pre-tokenizer regexes), Llama 2 and Gemma 3
// (SentencePiece-style BPE: byte fallback, "▁" for spaces, Replace/ByteFallback/Fuse/Strip
// decoders) and Qwen3. Known encodings below were checked against transformers.js (the node test
// compares the whole corpus); where tests/fixtures/tokenizer/<name>/encode.json exists (made by
// tests/reference/make_tokenizer_fixtures.py with HF tokenizers and transformers), every case of
// it must match. Also: decode round trips and incremental detokenizing equal to decode.
#include <gtest/gtest.h>

#include <filesystem>
#include <cstdio>
#include <fstream>
#include <map>
#include <optional>
#include <nlohmann/json.hpp>
#include <random>
#include <unordered_map>

#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace nanovllm {
namespace {

namespace fs = std::filesystem;
using Ids = std::vector<int32_t>;
const fs::path kSource = NANOVLLM_SOURCE_DIR;

const Tokenizer* family(const std::string& name) {
  static std::map<std::string, std::unique_ptr<Tokenizer>> cache;
  auto it = cache.find(name);
  if (it != cache.end()) return it->second.get();
  const fs::path dir = kSource / "models" / (name + "-tokenizer");
  auto tok = Tokenizer::present(dir) ? Tokenizer::from_dir(dir) : nullptr;
  return cache.emplace(name, std::move(tok)).first->second.get();
}

#define REQUIRE_FAMILY(name)                                                      \
  const Tokenizer* tok = family(name);                                            \
  if (!tok) GTEST_SKIP() << "models/" << name << "-tokenizer is missing: run scripts/setup.sh"

const std::vector<std::string> kFamilies = {"llama3_1", "llama2", "gemma3", "deepseek_v3", "qwen3"};

struct Known {
  std::string text;
  Ids ids;           // encode(text) = add_special_tokens=False
  Ids with_special;  // encode(text, true)
  std::optional<std::string> decoded = std::nullopt;  // decode(ids) when it is not the text
};

// Checked against transformers.js 4.3.1 (DeepSeek-V3's BOS: transformers' add_bos_token rule).
const std::map<std::string, std::vector<Known>> kKnown = {
    {"llama2",
     {{"Hello world", {22557, 1526}, {1, 22557, 1526}},
      {" Hello", {28705, 22557}, {1, 28705, 22557}},
      {"\xF0\x93\x80\x80 \xC3\xA9", {28705, 243, 150, 131, 131, 1233}, {1, 28705, 243, 150, 131, 131, 1233}},  // 𓀀: byte fallback
      {"<s>Hi</s>", {1, 15359, 2}, {1, 1, 15359, 2}, "<s> Hi</s>"},  // the text after <s> gets its own "▁"
      {"", {}, {1}}}},
    {"gemma3",
     {{"Hello world", {9259, 1902}, {2, 9259, 1902}},
      {" Hello", {26352}, {2, 26352}},
      {"a  b", {236746, 138, 236763}, {2, 236746, 138, 236763}},
      {"\xF0\x93\x80\x80 \xC3\xA9", {478, 385, 366, 366, 1559}, {2, 478, 385, 366, 366, 1559}},
      {"x\n\ny", {236781, 108, 236762}, {2, 236781, 108, 236762}},  // "\n\n" is an added token
      {"", {}, {2}}}},
    {"llama3_1",
     {{"Hello world", {9906, 1917}, {128000, 9906, 1917}},
      {"a  b", {64, 220, 293}, {128000, 64, 220, 293}},
      {"<s>Hi</s>", {45147, 29, 13347, 524, 82, 29}, {128000, 45147, 29, 13347, 524, 82, 29}},
      {"x\n\ny", {87, 271, 88}, {128000, 87, 271, 88}}}},
    {"deepseek_v3",
     {{"Hello world", {19923, 2058}, {0, 19923, 2058}},
      {" Hello", {45948}, {0, 45948}},
      {"\xF0\x93\x80\x80 \xC3\xA9", {117366, 225, 225, 2678}, {0, 117366, 225, 225, 2678}}}},
    {"qwen3", {{"Hello world", {9707, 1879}, {9707, 1879}}, {"x\n\ny", {87, 271, 88}, {87, 271, 88}}}},
};

TEST(TokenizerFamilies, KnownEncodings) {
  for (const auto& [name, cases] : kKnown) {
    const Tokenizer* tok = family(name);
    if (!tok) continue;
    for (const Known& k : cases) {
      EXPECT_EQ(tok->encode(k.text), k.ids) << name << " " << nlohmann::json(k.text).dump();
      EXPECT_EQ(tok->encode(k.text, false), k.ids) << name;
      EXPECT_EQ(tok->encode(k.text, true), k.with_special) << name << " " << nlohmann::json(k.text).dump();
      EXPECT_EQ(tok->decode(k.ids), k.decoded.value_or(k.text)) << name;
    }
  }
}

// What decode does with the special tokens and spaces of each SentencePiece chain.
TEST(TokenizerFamilies, SentencePieceDecode) {
  if (const Tokenizer* tok = family("llama2")) {
    EXPECT_EQ(tok->decode({1, 22557, 1526}), "<s> Hello world");  // Strip drops only the text's first space
    EXPECT_EQ(tok->decode({1, 22557, 1526}, true), "Hello world");
    EXPECT_EQ(tok->decode({243, 150}), "\xEF\xBF\xBD\xEF\xBF\xBD");  // an incomplete byte run: U+FFFD per byte
    EXPECT_EQ(tok->bos_token_id(), 1);
    EXPECT_EQ(tok->eos_token_id(), 2);
  }
  if (const Tokenizer* tok = family("gemma3")) {
    EXPECT_EQ(tok->decode({2, 26352}), "<bos> Hello");  // no Strip: the space stays
    EXPECT_EQ(tok->decode({2, 26352}, true), " Hello");
    EXPECT_EQ(tok->bos_token_id(), 2);
    EXPECT_EQ(tok->eos_token_id(), tok->token_to_id("<end_of_turn>"));
    EXPECT_EQ(tok->vocab_size(), 262145);
  }
}

std::vector<std::string> fixture_texts() {
  std::ifstream f(kSource / "tests/fixtures/tokenizer/encode.json");
  std::vector<std::string> out;
  const nlohmann::json doc = nlohmann::json::parse(f);  // a named value: the loop reads into it
  for (const auto& c : doc.at("cases")) out.push_back(c.at("text"));
  for (std::string extra : {"<s>Hello</s>", "<bos><start_of_turn>user\nHi<end_of_turn>", "\xE2\x96\x81 x \xE2\x96\x81\xE2\x96\x81",
                            "<|begin_of_text|>Hi<|eot_id|>", "<\xEF\xBD\x9C" "User\xEF\xBD\x9C>Hi", "  two", "<0x41>"})
    out.push_back(extra);
  return out;
}

// One push per id: pieces are whole characters and add up to decode, with and without special
// tokens, for every family and every fixture text (byte-fallback runs, leading "▁", added tokens).
TEST(TokenizerFamilies, IncrementalDetokenizerEqualsDecode) {
  const auto texts = fixture_texts();
  for (const std::string& name : kFamilies) {
    const Tokenizer* tok = family(name);
    if (!tok) continue;
    int failures = 0;
    for (const std::string& text : texts) {
      const Ids ids = tok->encode(text, true);
      for (bool skip : {false, true}) {
        IncrementalDetokenizer detok(*tok, skip);
        std::string all;
        for (int32_t id : ids) {
          std::string piece = detok.push(id);
          ASSERT_EQ(utf8::find_invalid(piece), std::string::npos) << name << " " << nlohmann::json(text).dump();
          all += piece;
        }
        all += detok.flush();
        if (all != tok->decode(ids, skip) && ++failures <= 3)
          ADD_FAILURE() << name << ": stream differs from decode for " << nlohmann::json(text).dump();
      }
    }
    EXPECT_EQ(failures, 0) << name;
  }
}

// Streaming Llama 2: the first "▁" is dropped once, byte-fallback bytes wait until they can no
// longer turn into U+FFFD (the next token that is not a byte), as HF's ByteFallback decides.
TEST(TokenizerFamilies, SentencePieceStreaming) {
  REQUIRE_FAMILY("llama2");
  IncrementalDetokenizer d(*tok, true);
  EXPECT_EQ(d.push(1), "");        // <s>, skipped
  EXPECT_EQ(d.push(22557), "Hello");
  EXPECT_EQ(d.push(1526), " world");
  EXPECT_EQ(d.push(28705), " ");   // "▁"
  for (int32_t id : {243, 150, 131, 131}) EXPECT_EQ(d.push(id), "");  // 𓀀 as four byte tokens
  EXPECT_EQ(d.push(1233), "\xF0\x93\x80\x80 \xC3\xA9");
  EXPECT_EQ(d.flush(), "");
  EXPECT_THROW(d.push(1 << 30), std::out_of_range);
}

// decode(encode(s)) == s on random text of many scripts (no "▁", which the SentencePiece
// decoders turn into a space; NFC-inert ranges, for Qwen3's NFC).
TEST(TokenizerFamilies, RandomRoundTrip) {
  const std::pair<uint32_t, uint32_t> ranges[] = {{0x20, 0x7E}, {0x20, 0x7E}, {0x09, 0x0D}, {0xA0, 0x2FF}, {0x400, 0x4FF},
                                                  {0x4E00, 0x4FFF}, {0x1F300, 0x1F64F}, {0x3040, 0x3096}, {0x10300, 0x1034A}};
  for (const std::string& name : kFamilies) {
    const Tokenizer* tok = family(name);
    if (!tok) continue;
    std::mt19937 rng(77);
    for (int t = 0; t < 200; ++t) {
      std::string s;
      int n = std::uniform_int_distribution<int>(0, 60)(rng);
      for (int k = 0; k < n; ++k) {
        auto [lo, hi] = ranges[std::uniform_int_distribution<size_t>(0, std::size(ranges) - 1)(rng)];
        utf8::append_codepoint(s, std::uniform_int_distribution<uint32_t>(lo, hi)(rng));
      }
      ASSERT_EQ(tok->decode(tok->encode(s)), s) << name << " " << nlohmann::json(s).dump();
      ASSERT_EQ(tok->decode(tok->encode(s, true), true), s) << name;
    }
  }
}

// Llama 2 has no pre-tokenizer: a whole text is one BPE word of thousands of symbols, where the
// long-piece loop leaves its passes for the heap early. Held to the textbook algorithm (merge the
// lowest-ranked adjacent pair, leftmost first, until none is left) on the file's own merges.
TEST(TokenizerFamilies, LongSegmentsEqualTextbookBpe) {
  REQUIRE_FAMILY("llama2");
  std::ifstream f(kSource / "models/llama2-tokenizer/tokenizer.json");
  const nlohmann::json j = nlohmann::json::parse(f);
  std::unordered_map<std::string, size_t> rank;  // "left right" -> rank
  for (const auto& m : j["model"]["merges"])
    rank.emplace(m.is_string() ? m.get<std::string>() : m[0].get<std::string>() + " " + m[1].get<std::string>(), rank.size());
  // Words of random letters: varied enough that each pass merges few pairs (the heap takes over),
  // plus some repeats and a run.
  const std::vector<std::string> words = {"the", "of", "tokenizer", ",", ".", "12", "(", "aaaaaaaaaaaaaaaa"};
  std::mt19937 rng(11);
  for (int t = 0; t < 3; ++t) {
    std::string text;
    while (text.size() < 4000 + 2000 * t) {
      if (rng() % 4 == 0) {
        text += words[std::uniform_int_distribution<size_t>(0, words.size() - 1)(rng)] + " ";
        continue;
      }
      for (int k = std::uniform_int_distribution<int>(2, 9)(rng); k > 0; --k) text += static_cast<char>('a' + rng() % 26);
      text += ' ';
    }
    // Llama 2's normalizer: "▁" in front, every space as "▁"; every character is in the vocabulary.
    std::vector<std::string> sym = {"\xE2\x96\x81"};
    for (char c : text) sym.push_back(c == ' ' ? "\xE2\x96\x81" : std::string(1, c));
    auto rank_of = [&](size_t i) {
      auto it = rank.find(sym[i] + " " + sym[i + 1]);
      return it == rank.end() ? SIZE_MAX : it->second;
    };
    std::vector<size_t> r(sym.size() - 1);
    for (size_t i = 0; i + 1 < sym.size(); ++i) r[i] = rank_of(i);
    for (;;) {
      size_t best = SIZE_MAX, bi = 0;
      for (size_t i = 0; i < r.size(); ++i)
        if (r[i] < best) best = r[i], bi = i;
      if (best == SIZE_MAX) break;
      sym[bi] += sym[bi + 1];
      sym.erase(sym.begin() + static_cast<std::ptrdiff_t>(bi) + 1);
      r.erase(r.begin() + static_cast<std::ptrdiff_t>(bi));
      if (bi > 0) r[bi - 1] = rank_of(bi - 1);
      if (bi < r.size()) r[bi] = rank_of(bi);
    }
    Ids want;
    for (const auto& s : sym) want.push_back(*tok->token_to_id(s));
    ASSERT_EQ(tok->encode(text), want) << "text of " << text.size() << " bytes";
  }
}

// Every case of the HF fixture (tests/reference/make_tokenizer_fixtures.py), when it has been made.
TEST(TokenizerFamilies, FixturesMatchHuggingFace) {
  int checked = 0;
  for (const std::string& name : kFamilies) {
    const fs::path path = kSource / "tests/fixtures/tokenizer" / name / "encode.json";
    const Tokenizer* tok = family(name);
    if (!tok || !fs::exists(path)) continue;
    std::ifstream f(path);
    const nlohmann::json fixture = nlohmann::json::parse(f);
    std::ifstream cf(kSource / "models" / (name + "-tokenizer") / "tokenizer_config.json");
    const bool add_bos = cf && nlohmann::json::parse(cf).value("add_bos_token", false);
    int failures = 0, rebuilt = 0;
    for (const auto& c : fixture["cases"]) {
      const std::string text = c["text"];
      const Ids ids = c["ids"], special = c["ids_special"];
      // Where transformers 5.17 rebuilds the tokenizer instead of running tokenizer.json (Llama 2's
      // legacy Metaspace: " " -> [<s>, "▁"]; DeepSeek-V3's converted pre-tokenizer, which drops
      // the space in "Hello, world!"), we follow tokenizer.json as tokenizers does: the text
      // survives, and the ids are those the model was trained with. And as transformers 4's
      // Llama/Gemma fast tokenizers and transformers.js, tokenizer_config's add_bos_token means BOS
      // and the text's ids (DeepSeek-V3's post-processor adds none; a text that starts with BOS
      // gets a second one, as there).
      Ids special_tokenizers = c.value("ids_special_tokenizers", nlohmann::json()).is_null()
                                   ? special
                                   : c["ids_special_tokenizers"].get<Ids>();
      if (add_bos && tok->bos_token_id()) {
        special_tokenizers = ids;
        special_tokenizers.insert(special_tokenizers.begin(), *tok->bos_token_id());
      }
      if (special_tokenizers != special) ++rebuilt;
      std::string what;
      if (tok->encode(text) != ids) what = "encode";
      else if (tok->encode(text, true) != special_tokenizers) what = "encode with special tokens";
      else if (tok->decode(ids) != c["decoded"].get<std::string>()) what = "decode";
      else if (tok->decode(ids, true) != c["decoded_skip_special"].get<std::string>()) what = "decode skip_special";
      else if (tok->decode(special) != c["decoded_special"].get<std::string>()) what = "decode of special ids";
      else if (tok->decode(special, true) != c["decoded_special_skip_special"].get<std::string>())
        what = "decode of special ids, skip_special";
      if (!what.empty() && ++failures <= 5) ADD_FAILURE() << name << ": " << what << " differs for " << nlohmann::json(text).dump();
    }
    EXPECT_EQ(failures, 0) << name << " (" << fixture["reference"] << ")";
    std::printf("%s: %zu cases, %d where transformers 5.17's ids differ from tokenizer.json's (+ BOS)\n", name.c_str(),
                fixture["cases"].size(), rebuilt);
    ++checked;
  }
  if (checked == 0) GTEST_SKIP() << "no tests/fixtures/tokenizer/<name>/encode.json yet (make_tokenizer_fixtures.py)";
}

}  // namespace
}  // namespace nanovllm
