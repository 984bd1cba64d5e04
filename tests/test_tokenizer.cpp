// Tokenizer against Hugging Face: encode/decode on the committed corpus (tests/fixtures/tokenizer,
// made by tests/reference/make_tokenizer_fixtures.py with HF tokenizers), incremental
// detokenizing, the config-derived ids, and clear errors for bad input.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include <utf8proc.h>

#include "tokenizer/normalizer.h"
#include "tokenizer/tokenizer_json.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace nanovllm {
namespace {

const std::filesystem::path kSource = NANOVLLM_SOURCE_DIR;
const std::filesystem::path kQwen3Dir = kSource / "models" / "qwen3-tokenizer";

nlohmann::json read_json(const std::filesystem::path& p) {
  std::ifstream f(p);
  if (!f) throw std::runtime_error(p.string() + ": cannot open");
  return nlohmann::json::parse(f);
}

// One Qwen3 tokenizer for the whole suite: loading it is the slow part.
const Tokenizer* qwen3() {
  static std::unique_ptr<Tokenizer> tok = Tokenizer::present(kQwen3Dir) ? Tokenizer::from_dir(kQwen3Dir) : nullptr;
  return tok.get();
}

#define REQUIRE_QWEN3()                                                                               \
  if (!qwen3()) GTEST_SKIP() << "models/qwen3-tokenizer is missing: run scripts/setup.sh to fetch it"

const nlohmann::json& encode_fixture() {
  static nlohmann::json j = read_json(kSource / "tests/fixtures/tokenizer/encode.json");
  return j;
}

std::vector<int32_t> ids_of(const nlohmann::json& j) { return j.get<std::vector<int32_t>>(); }

TEST(Tokenizer, FixtureCorpusIsLargeAndVaried) {
  const auto& cases = encode_fixture()["cases"];
  EXPECT_GE(cases.size(), 200u);
}

TEST(Tokenizer, EncodeMatchesHuggingFace) {
  REQUIRE_QWEN3();
  int failures = 0;
  for (const auto& c : encode_fixture()["cases"]) {
    std::string text = c["text"];
    auto got = qwen3()->encode(text);
    auto want = ids_of(c["ids"]);
    if (got != want && ++failures <= 5) ADD_FAILURE() << "encode differs for " << nlohmann::json(text).dump();
  }
  EXPECT_EQ(failures, 0);
}

TEST(Tokenizer, DecodeMatchesHuggingFace) {
  REQUIRE_QWEN3();
  for (const auto& c : encode_fixture()["cases"]) {
    auto ids = ids_of(c["ids"]);
    EXPECT_EQ(qwen3()->decode(ids), c["decoded"].get<std::string>()) << c["text"].dump();
    EXPECT_EQ(qwen3()->decode(ids, true), c["decoded_skip_special"].get<std::string>()) << c["text"].dump();
  }
}

// encode is const and keeps its caches per thread: several threads at once get HF's ids too.
TEST(Tokenizer, EncodeFromSeveralThreads) {
  REQUIRE_QWEN3();
  const auto& cases = encode_fixture()["cases"];
  std::vector<int> failures(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (size_t k = t; k < cases.size() * 2; k += 2) {  // overlapping halves, different orders
        const auto& c = cases[(k * 7919) % cases.size()];
        if (qwen3()->encode(c["text"].get<std::string>()) != c["ids"].get<std::vector<int32_t>>()) ++failures[t];
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures, std::vector<int>(4, 0));
}

// Streams ids one at a time: no piece may split a character, and the pieces must add up to the
// full decode, for every corpus text, with and without special tokens.
TEST(Tokenizer, IncrementalDetokenizerEqualsDecode) {
  REQUIRE_QWEN3();
  for (bool skip : {false, true}) {
    for (const auto& c : encode_fixture()["cases"]) {
      auto ids = ids_of(c["ids"]);
      IncrementalDetokenizer detok(*qwen3(), skip);
      std::string all;
      for (int32_t id : ids) {
        std::string piece = detok.push(id);
        ASSERT_EQ(utf8::find_invalid(piece), std::string::npos) << "broken UTF-8 piece in " << c["text"].dump();
        all += piece;
      }
      all += detok.flush();
      EXPECT_EQ(all, c[skip ? "decoded_skip_special" : "decoded"].get<std::string>()) << c["text"].dump();
    }
  }
}

// A Tokenizer that is not the built-in BPE (here: one that forwards to it) takes the detokenizer's
// generic path, which only sees decode(); its pieces must add up the same way.
class ForwardingTokenizer final : public Tokenizer {
 public:
  explicit ForwardingTokenizer(const Tokenizer& t) : t_(t) {}
  std::vector<int32_t> encode(std::string_view text) const override { return t_.encode(text); }
  std::string decode(const std::vector<int32_t>& ids, bool skip) const override { return t_.decode(ids, skip); }
  int vocab_size() const override { return t_.vocab_size(); }
  std::optional<int32_t> token_to_id(std::string_view s) const override { return t_.token_to_id(s); }
  std::optional<int32_t> eos_token_id() const override { return t_.eos_token_id(); }
  std::optional<int32_t> pad_token_id() const override { return t_.pad_token_id(); }
  std::optional<int32_t> bos_token_id() const override { return t_.bos_token_id(); }
  std::string apply_chat_template(const std::vector<ChatMessage>& m, bool agp, bool think) const override {
    return t_.apply_chat_template(m, agp, think);
  }

 private:
  const Tokenizer& t_;
};

TEST(Tokenizer, IncrementalDetokenizerGenericPath) {
  REQUIRE_QWEN3();
  ForwardingTokenizer fwd(*qwen3());
  for (const auto& c : encode_fixture()["cases"]) {
    auto ids = ids_of(c["ids"]);
    IncrementalDetokenizer detok(fwd);
    std::string all;
    for (int32_t id : ids) {
      std::string piece = detok.push(id);
      ASSERT_EQ(utf8::find_invalid(piece), std::string::npos);
      all += piece;
    }
    all += detok.flush();
    EXPECT_EQ(all, c["decoded"].get<std::string>()) << c["text"].dump();
  }
}

// Byte tokens that never form a character (a lone continuation byte, a truncated sequence) must
// come out as U+FFFD exactly where decode puts them, and the stream must not stall on them.
TEST(Tokenizer, IncrementalDetokenizerOnInvalidBytes) {
  REQUIRE_QWEN3();
  auto byte_id = [](const char* token) { return *qwen3()->token_to_id(token); };
  // Byte-level alphabet: 0x80 -> U+0122 "Ģ", 0xE4 -> "ä", 0xBD -> "½", 'a' -> "a".
  std::vector<int32_t> ids = {byte_id("Ģ"), byte_id("a"), byte_id("ä"), byte_id("½"), byte_id("a"), byte_id("ä")};
  IncrementalDetokenizer detok(*qwen3());
  std::string all;
  std::vector<std::string> pieces;
  for (int32_t id : ids) pieces.push_back(detok.push(id)), all += pieces.back();
  EXPECT_EQ(pieces[0], "\xEF\xBF\xBD");  // a lone continuation byte is final at once
  all += detok.flush();
  EXPECT_EQ(all, qwen3()->decode(ids));
  EXPECT_EQ(all, "\xEF\xBF\xBD" "a" "\xEF\xBF\xBD" "a" "\xEF\xBF\xBD");
}

TEST(Tokenizer, IncrementalDetokenizerRejectsUnknownIds) {
  REQUIRE_QWEN3();
  IncrementalDetokenizer detok(*qwen3());
  EXPECT_EQ(detok.push(9707), "Hello");
  EXPECT_THROW(detok.push(1 << 30), std::out_of_range);
  EXPECT_EQ(detok.push(1879), " world");  // the stream goes on without the bad id
  EXPECT_EQ(detok.flush(), "");
}

TEST(Tokenizer, ConfigIds) {
  REQUIRE_QWEN3();
  // Qwen3's tokenizer_config.json: eos "<|im_end|>", pad "<|endoftext|>", no bos.
  EXPECT_EQ(qwen3()->eos_token_id(), 151645);
  EXPECT_EQ(qwen3()->pad_token_id(), 151643);
  EXPECT_EQ(qwen3()->bos_token_id(), std::nullopt);
  EXPECT_EQ(qwen3()->vocab_size(), 151669);  // 151643 BPE entries + 26 added tokens
  EXPECT_EQ(qwen3()->token_to_id("<think>"), 151667);
  EXPECT_EQ(qwen3()->token_to_id("Hello"), 9707);
  EXPECT_EQ(qwen3()->token_to_id("no such token"), std::nullopt);
}

TEST(Tokenizer, InvalidUtf8NamesTheOffset) {
  REQUIRE_QWEN3();
  try {
    qwen3()->encode(std::string("ok \xC3\x28 bad"));
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("byte offset 3"), std::string::npos) << e.what();
  }
  EXPECT_THROW(qwen3()->encode("\xED\xA0\x80"), std::invalid_argument);  // a surrogate
  EXPECT_THROW(qwen3()->encode("abc\xF0\x9F\x98"), std::invalid_argument);  // cut short
}

TEST(Tokenizer, DecodeRejectsUnknownIds) {
  REQUIRE_QWEN3();
  EXPECT_THROW(qwen3()->decode({9707, 151669}), std::out_of_range);
  EXPECT_THROW(qwen3()->decode({-1}), std::out_of_range);
}

// Round trip on random Unicode: decode(encode(s)) gives s back (s drawn already in NFC-inert
// ranges so the normalizer leaves it as it is).
TEST(Tokenizer, RandomRoundTrip) {
  REQUIRE_QWEN3();
  std::mt19937 rng(1234);
  const std::pair<uint32_t, uint32_t> ranges[] = {{0x20, 0x7E}, {0x09, 0x0D}, {0xA0, 0x2FF}, {0x400, 0x4FF},
                                                  {0x4E00, 0x4FFF}, {0x1F300, 0x1F64F}, {0x3040, 0x3096}};
  for (int t = 0; t < 300; ++t) {
    std::string s;
    int n = std::uniform_int_distribution<int>(0, 60)(rng);
    for (int k = 0; k < n; ++k) {
      auto [lo, hi] = ranges[std::uniform_int_distribution<int>(0, 6)(rng)];
      utf8::append_codepoint(s, std::uniform_int_distribution<uint32_t>(lo, hi)(rng));
    }
    EXPECT_EQ(qwen3()->decode(qwen3()->encode(s)), s);
  }
}

// The NFC normalizer only hands utf8proc the spans NFC may change; on random text dense with
// combining marks, jamo, compatibility and singleton characters it must equal utf8proc's NFC of
// the whole string.
TEST(Tokenizer, NfcSpansEqualWholeStringNfc) {
  Normalizer nfc = Normalizer::from_json(nlohmann::json{{"type", "NFC"}}, "test");
  std::mt19937 rng(99);
  const uint32_t pool[] = {'a', 'e', 'A', ' ', 0x301, 0x300, 0x327, 0x308, 0x1100, 0x1161, 0x11A8, 0xAC00, 0xAC01,
                           0x2126, 0x212B, 0xF900, 0x958, 0x915, 0x93C, 0xB47, 0xB3E, 0x3099, 0x304B, 0xFB01,
                           0x1E0A, 0x323, 0x4E2D, 0x1F600, 0x5D9, 0x5B4, 0xE9, 0x65, 0x3C9, 0x345, 0x1F80};
  for (int t = 0; t < 2000; ++t) {
    std::string s;
    int n = std::uniform_int_distribution<int>(1, 12)(rng);
    for (int k = 0; k < n; ++k) utf8::append_codepoint(s, pool[std::uniform_int_distribution<size_t>(0, std::size(pool) - 1)(rng)]);
    auto* ref = reinterpret_cast<char*>(utf8proc_NFC(reinterpret_cast<const utf8proc_uint8_t*>(s.c_str())));
    std::string want(ref);
    std::free(ref);
    std::string got;
    if (!nfc.apply(s, got)) got = s;
    EXPECT_EQ(got, want) << "input " << nlohmann::json(s).dump();
  }
}

// The long-piece merge loop (passes, then a heap) must agree with the plain scan on Qwen3's real
// merges: runs, repeated words, random letters, CJK, mixed bytes.
TEST(Tokenizer, LongPieceMergeLoopAgreesWithScan) {
  REQUIRE_QWEN3();
  std::ifstream f(kQwen3Dir / "tokenizer.json");
  std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const BpeModel model = load_tokenizer_json(text, "tokenizer.json").model;
  std::mt19937 rng(5);
  const std::vector<std::string> atoms = {"a", "x", "ab", "the", "=", "-", " ", "\xE7\x9A\x84", "\xF0\x9F\x99\x82",
                                          "ing", "Q", "7", "\xC3\xA9", "\xE2\x80\x8D"};
  for (int t = 0; t < 3000; ++t) {
    std::string piece;
    int kinds = std::uniform_int_distribution<int>(1, 4)(rng);  // few kinds: runs; many: varied text
    size_t want = std::uniform_int_distribution<size_t>(1, 64)(rng);
    while (piece.size() < want) {
      const std::string& a = atoms[std::uniform_int_distribution<size_t>(0, std::min<size_t>(atoms.size(), kinds * 4) - 1)(rng)];
      if (piece.size() + a.size() > 64) break;
      piece += a;
    }
    if (piece.empty()) continue;
    std::vector<int32_t> scan, passes;
    auto p = reinterpret_cast<const uint8_t*>(piece.data());
    model.encode_short(p, piece.size(), scan);
    model.encode_long(p, piece.size(), passes);
    ASSERT_EQ(passes, scan) << nlohmann::json(piece).dump();
  }
}

TEST(Tokenizer, MissingDirectory) {
  EXPECT_FALSE(Tokenizer::present(kSource / "no-such-dir"));
  EXPECT_THROW(Tokenizer::from_dir(kSource / "no-such-dir"), std::runtime_error);
}

}  // namespace
}  // namespace nanovllm
