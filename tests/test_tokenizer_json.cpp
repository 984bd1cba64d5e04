// Loading tokenizer.json features on small hand-made tokenizers, with the ids HF's documented
// semantics give (derived by hand in each test): merges as "a b" strings or ["a", "b"] pairs,
// added-token flags, normalizers, split behaviors, ignore_merges, SentencePiece-style BPE (byte
// fallback, unk, fuse_unk, Prepend/Replace, its decoders), post-processors and add_bos_token,
// tokenizer_config forms, and a clear error naming every feature the loader does not implement.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tokenizer/byte_level.h"
#include "tokenizer/tokenizer.h"

namespace nanovllm {
namespace {

using json = nlohmann::json;

// A byte-level BPE: ids 0..255 are the bytes, then one id per merge (in order), then extras.
struct Spec {
  std::vector<std::pair<std::string, std::string>> merges;  // raw bytes, e.g. {"a", "b"}
  std::vector<std::string> extra_vocab;                      // raw bytes
  bool merges_as_pairs = false;
  json normalizer = nullptr;
  json pre_tokenizer = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
  json added_tokens = json::array();
  json model_extra = json::object();
  json top_extra = json::object();
  json config = nullptr;  // tokenizer_config.json, when set
};

int32_t byte_id(char c) { return static_cast<uint8_t>(c); }

json tokenizer_json(const Spec& s) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_level::bytes_to_token(std::string(1, static_cast<char>(b)))] = b;
  int next = 256;
  json merges = json::array();
  for (const auto& [l, r] : s.merges) {
    std::string lt = byte_level::bytes_to_token(l), rt = byte_level::bytes_to_token(r);
    if (!vocab.contains(lt + rt)) vocab[lt + rt] = next++;
    if (s.merges_as_pairs) merges.push_back({lt, rt});
    else merges.push_back(lt + " " + rt);
  }
  for (const auto& e : s.extra_vocab) vocab[byte_level::bytes_to_token(e)] = next++;
  json model = {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", ""},
                {"end_of_word_suffix", ""}, {"fuse_unk", false}, {"byte_fallback", false}, {"ignore_merges", false},
                {"vocab", vocab}, {"merges", merges}};
  model.update(s.model_extra);
  json top = {{"version", "1.0"}, {"truncation", nullptr}, {"padding", nullptr}, {"added_tokens", s.added_tokens},
              {"normalizer", s.normalizer}, {"pre_tokenizer", s.pre_tokenizer}, {"post_processor", nullptr},
              {"decoder", {{"type", "ByteLevel"}}}, {"model", model}};
  top.update(s.top_extra);
  return top;
}

class TokenizerJson : public ::testing::Test {
 protected:
  std::filesystem::path dir_;
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("nanovllm_tokjson_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void write(const std::string& name, const std::string& text) { std::ofstream(dir_ / name) << text; }
  std::unique_ptr<Tokenizer> load(const Spec& s) {
    write("tokenizer.json", tokenizer_json(s).dump());
    if (!s.config.is_null()) write("tokenizer_config.json", s.config.dump());
    return Tokenizer::from_dir(dir_);
  }
  // The message of the runtime_error loading `s` throws.
  std::string load_error(const Spec& s) {
    try {
      load(s);
    } catch (const std::runtime_error& e) {
      return e.what();
    }
    return "(no error)";
  }
  std::string load_error_text(const std::string& text) {
    write("tokenizer.json", text);
    try {
      Tokenizer::from_dir(dir_);
    } catch (const std::runtime_error& e) {
      return e.what();
    }
    return "(no error)";
  }
};

// "abc abc" splits (GPT-2 regex) into "abc" and " abc"; merges a+b (rank 0 -> id 256) then
// ab+c (rank 1 -> id 257); the space byte stays alone.
TEST_F(TokenizerJson, MergesAsStringsOrPairs) {
  for (bool pairs : {false, true}) {
    Spec s;
    s.merges = {{"a", "b"}, {"ab", "c"}};
    s.merges_as_pairs = pairs;
    auto tok = load(s);
    EXPECT_EQ(tok->encode("abc abc"), (std::vector<int32_t>{257, byte_id(' '), 257}));
    EXPECT_EQ(tok->decode({257, byte_id(' '), 257}), "abc abc");
  }
}

// Lowest rank first, leftmost on ties: "aaa" with a+a -> "aa" gives [aa, a], not [a, aa].
TEST_F(TokenizerJson, MergeOrderIsRankThenLeftmost) {
  Spec s;
  s.merges = {{"b", "c"}, {"a", "a"}, {"a", "b"}};  // ids 256 bc, 257 aa, 258 ab
  auto tok = load(s);
  EXPECT_EQ(tok->encode("aaa"), (std::vector<int32_t>{257, byte_id('a')}));
  EXPECT_EQ(tok->encode("abc"), (std::vector<int32_t>{byte_id('a'), 256}));  // b+c outranks a+b
  // Long pieces take the heap path; the rule is the same.
  std::string run(301, 'a');
  std::vector<int32_t> want(150, 257);
  want.push_back(byte_id('a'));
  EXPECT_EQ(tok->encode(run), want);
}

// Merges out of training order: ab+a (rank 0) is listed before a+b (rank 1). After a+b fires at
// the start of "abab", the new pair ab+a outranks the second a+b, so HF merges it next:
// [aba, b]. Merging every a+b first would give [ab, ab]. Both piece lengths (scan; long-piece
// loop, which must notice and fall back to the heap) must follow HF.
TEST_F(TokenizerJson, MergesOutOfTrainingOrder) {
  Spec s;
  s.merges = {{"ab", "a"}, {"a", "b"}};  // 256 "aba", 257 "ab"
  auto tok = load(s);
  EXPECT_EQ(tok->encode("abab"), (std::vector<int32_t>{256, byte_id('b')}));
  std::vector<int32_t> want = {256, byte_id('b')};
  want.insert(want.end(), 70, byte_id('c'));
  EXPECT_EQ(tok->encode("abab" + std::string(70, 'c')), want);
}

TEST_F(TokenizerJson, IgnoreMergesTakesWholeWordsFromTheVocab) {
  Spec s;
  s.extra_vocab = {"xyz"};  // id 256, unreachable by merges
  EXPECT_EQ(load(s)->encode("xyz"), (std::vector<int32_t>{byte_id('x'), byte_id('y'), byte_id('z')}));
  s.model_extra = {{"ignore_merges", true}};
  EXPECT_EQ(load(s)->encode("xyz"), (std::vector<int32_t>{256}));
}

json added(const std::string& content, int id, bool lstrip, bool rstrip, bool single_word, bool special = true) {
  return {{"id", id}, {"content", content}, {"single_word", single_word}, {"lstrip", lstrip}, {"rstrip", rstrip},
          {"normalized", false}, {"special", special}};
}

// lstrip/rstrip swallow the whitespace beside the token; single_word only matches a token that
// is not inside a word. Leftmost-longest: "<mm>" wins over "<m" at the same start.
TEST_F(TokenizerJson, AddedTokenFlags) {
  Spec s;
  s.pre_tokenizer = {{"type", "ByteLevel"}, {"use_regex", false}};  // no splitting: ids show the pieces
  s.added_tokens = json::array({added("<m>", 300, true, true, false), added("tok", 301, false, false, true),
                                added("<m", 302, false, false, false), added("<mm>", 303, false, false, false)});
  auto tok = load(s);
  EXPECT_EQ(tok->encode("x <m>  y"), (std::vector<int32_t>{byte_id('x'), 300, byte_id('y')}));
  EXPECT_EQ(tok->encode("tok tokyo"), (std::vector<int32_t>{301, byte_id(' '), byte_id('t'), byte_id('o'),
                                                             byte_id('k'), byte_id('y'), byte_id('o')}));
  EXPECT_EQ(tok->encode("<mm>"), (std::vector<int32_t>{303}));
  EXPECT_EQ(tok->encode("<mx"), (std::vector<int32_t>{302, byte_id('x')}));
  EXPECT_EQ(tok->decode({300, 301}), "<m>tok");
  EXPECT_EQ(tok->decode({300, 301}, true), "");
}

// NFC runs on the text between added tokens: e + U+0301 becomes U+00E9 (bytes C3 A9).
TEST_F(TokenizerJson, NormalizerSequence) {
  Spec s;
  s.normalizer = {{"type", "Sequence"}, {"normalizers", json::array({{{"type", "NFD"}}, {{"type", "NFC"}}})}};
  auto tok = load(s);
  EXPECT_EQ(tok->encode("e\xCC\x81"), (std::vector<int32_t>{0xC3, 0xA9}));
  s.normalizer = {{"type", "NFKC"}};
  EXPECT_EQ(load(s)->encode("\xEF\xAC\x81"), (std::vector<int32_t>{byte_id('f'), byte_id('i')}));  // U+FB01 "fi"
}

// Split behaviors on "a--b" with the literal "-": merges a+- and -+b reveal where pieces end.
TEST_F(TokenizerJson, SplitBehaviors) {
  auto run = [&](const std::string& behavior, bool invert = false) {
    Spec s;
    s.merges = {{"a", "-"}, {"-", "b"}, {"-", "-"}};  // 256 "a-", 257 "-b", 258 "--"
    s.pre_tokenizer = {{"type", "Sequence"},
                       {"pretokenizers", json::array({{{"type", "Split"}, {"pattern", {{"String", "-"}}},
                                                       {"behavior", behavior}, {"invert", invert}},
                                                      {{"type", "ByteLevel"}, {"use_regex", false}}})}};
    return load(s)->encode("a--b");
  };
  const int32_t a = byte_id('a'), b = byte_id('b'), d = byte_id('-');
  EXPECT_EQ(run("Isolated"), (std::vector<int32_t>{a, d, d, b}));
  EXPECT_EQ(run("Removed"), (std::vector<int32_t>{a, b}));
  EXPECT_EQ(run("MergedWithPrevious"), (std::vector<int32_t>{256, d, b}));  // "a-", "-", "b"
  EXPECT_EQ(run("MergedWithNext"), (std::vector<int32_t>{a, d, 257}));      // "a", "-", "-b"
  EXPECT_EQ(run("Contiguous"), (std::vector<int32_t>{a, 258, b}));          // "a", "--", "b"
  EXPECT_EQ(run("Removed", true), (std::vector<int32_t>{d, d}));            // the letters are the delimiters
}

TEST_F(TokenizerJson, RegexSplitUsesOnigWhitespace) {
  // Onig's \s includes U+0085 (NEL); PCRE2's does not. With GPT-2's pattern, Onig splits two NELs
  // before a letter as NEL | NEL (\s+(?!\S) then \s+); were NEL not space, ` ?[^\s\p{L}\p{N}]+`
  // would keep them together and the NEL+NEL merge would fire.
  Spec s;
  s.merges = {{"\xC2", "\x85"}, {"\xC2\x85", "\xC2\x85"}};  // 256 NEL, 257 NEL NEL
  auto tok = load(s);
  EXPECT_EQ(tok->encode("a\xC2\x85\xC2\x85" "b"), (std::vector<int32_t>{byte_id('a'), 256, 256, byte_id('b')}));
}

TEST_F(TokenizerJson, ConfigTokensAndTemplates) {
  Spec s;
  s.added_tokens = json::array({added("<eos>", 300, false, false, false), added("<pad>", 301, false, false, false)});
  s.config = {{"eos_token", {{"content", "<eos>"}, {"lstrip", false}}}, {"pad_token", "<pad>"}, {"bos_token", nullptr},
              {"chat_template", json::array({{{"name", "tool_use"}, {"template", "x"}},
                                             {{"name", "default"}, {"template", "{{ messages }}"}}})}};
  auto tok = load(s);
  EXPECT_EQ(tok->eos_token_id(), 300);
  EXPECT_EQ(tok->pad_token_id(), 301);
  EXPECT_EQ(tok->bos_token_id(), std::nullopt);
  EXPECT_EQ(tok->vocab_size(), 302);
  // The list's "default" template is the one rendered (by the Jinja engine, as Python prints it).
  EXPECT_EQ(tok->apply_chat_template({{"user", "hi", ""}}, true, true), "[{'role': 'user', 'content': 'hi'}]");
  s.config["eos_token"] = "<nope>";
  EXPECT_NE(load_error(s).find("eos_token \"<nope>\""), std::string::npos) << load_error(s);
}

TEST_F(TokenizerJson, UnsupportedFeaturesAreNamed) {
  auto expect_named = [&](Spec s, const std::string& needle) {
    std::string err = load_error(s);
    EXPECT_NE(err.find(needle), std::string::npos) << "error \"" << err << "\" should name " << needle;
  };
  Spec s;
  s.normalizer = {{"type", "Lowercase"}};
  expect_named(s, "\"Lowercase\"");
  s = Spec();
  s.pre_tokenizer = {{"type", "Whitespace"}};
  expect_named(s, "\"Whitespace\"");
  s = Spec();
  s.pre_tokenizer = {{"type", "Split"}, {"pattern", {{"Regex", "a"}}}, {"behavior", "Weird"}};
  expect_named(s, "\"Weird\"");
  s = Spec();
  s.model_extra = {{"dropout", 0.1}};
  expect_named(s, "dropout");
  s = Spec();
  s.model_extra = {{"type", "WordPiece"}};
  expect_named(s, "WordPiece");
  s = Spec();
  s.model_extra = {{"continuing_subword_prefix", "##"}};
  expect_named(s, "continuing_subword_prefix");
  s = Spec();
  s.top_extra = {{"decoder", {{"type", "WordPiece"}}}};
  expect_named(s, "\"WordPiece\"");
  s = Spec();
  s.pre_tokenizer = {{"type", "Metaspace"}, {"replacement", "_"}};
  expect_named(s, "\"Metaspace\"");
  s = Spec();
  s.top_extra = {{"post_processor", {{"type", "Weird"}}}};
  expect_named(s, "post_processor type \"Weird\"");
  s = Spec();
  s.top_extra = {{"post_processor", {{"type", "TemplateProcessing"}, {"single", json::array({{{"SpecialToken", {{"id", "<x>"}}}}})}}}};
  expect_named(s, "\"<x>\"");
  s = Spec();
  s.normalizer = {{"type", "Replace"}, {"pattern", {{"Regex", "(a)"}}}, {"content", "$1$1"}};
  expect_named(s, "\"$\"");
  s = Spec();
  s.top_extra = {{"truncation", {{"max_length", 8}}}};
  expect_named(s, "truncation");
  s = Spec();
  s.merges = {{"a", "b"}};
  json j = tokenizer_json(s);
  j["model"]["merges"].push_back("q zz");  // "zz" is not in the vocabulary
  EXPECT_NE(load_error_text(j.dump()).find("\"zz\""), std::string::npos) << load_error_text(j.dump());
  EXPECT_NE(load_error_text("{\"model\": {\"vocab\": {\"a\": 0,}}}").find("byte offset"), std::string::npos);
}

// ---- SentencePiece-style BPE (Llama 2, Gemma): characters, byte fallback, "▁" for spaces ----

const std::string kSp = "\xE2\x96\x81";  // ▁

// A vocabulary as SentencePiece conversions lay it out: <unk> 0, <s> 1, </s> 2, <0x00>..<0xFF>
// 3..258, then `pieces` from 259. Defaults are Llama 2's normalizer, decoder and post-processor.
struct SpSpec {
  std::vector<std::string> pieces = {kSp, "a", "b", kSp + "a", "ab"};  // 259 260 261 262 263
  std::vector<std::pair<std::string, std::string>> merges = {{kSp, "a"}, {"a", "b"}};
  json model_extra = {{"byte_fallback", true}, {"fuse_unk", true}, {"unk_token", "<unk>"}};
  std::vector<int> missing_bytes;  // <0xNN> left out of the vocabulary
  json normalizer = {{"type", "Sequence"},
                     {"normalizers", json::array({{{"type", "Prepend"}, {"prepend", kSp}},
                                                  {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kSp}}})}};
  json pre_tokenizer = nullptr;
  json decoder = {{"type", "Sequence"},
                  {"decoders", json::array({{{"type", "Replace"}, {"pattern", {{"String", kSp}}}, {"content", " "}},
                                            {{"type", "ByteFallback"}}, {{"type", "Fuse"}},
                                            {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}})}};
  json post_processor = {{"type", "TemplateProcessing"},
                         {"single", json::array({{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                                                 {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
                         {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}};
  json config = nullptr;
};

int32_t byte_token(int b) { return 3 + b; }

json sp_tokenizer_json(const SpSpec& s) {
  json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
  for (int b = 0; b < 256; ++b) {
    if (std::find(s.missing_bytes.begin(), s.missing_bytes.end(), b) != s.missing_bytes.end()) continue;
    char buf[8];
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    vocab[buf] = byte_token(b);
  }
  for (size_t i = 0; i < s.pieces.size(); ++i) vocab[s.pieces[i]] = 259 + static_cast<int>(i);
  json merges = json::array();
  for (const auto& [l, r] : s.merges) merges.push_back({l, r});
  json model = {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", nullptr},
                {"end_of_word_suffix", nullptr}, {"fuse_unk", false}, {"byte_fallback", false}, {"vocab", vocab},
                {"merges", merges}};
  model.update(s.model_extra);
  json specials = json::array();
  for (auto [content, id] : {std::pair{"<unk>", 0}, std::pair{"<s>", 1}, std::pair{"</s>", 2}})
    specials.push_back({{"id", id}, {"content", content}, {"single_word", false}, {"lstrip", false}, {"rstrip", false},
                        {"normalized", false}, {"special", true}});
  return {{"version", "1.0"}, {"truncation", nullptr}, {"padding", nullptr}, {"added_tokens", specials},
          {"normalizer", s.normalizer}, {"pre_tokenizer", s.pre_tokenizer}, {"post_processor", s.post_processor},
          {"decoder", s.decoder}, {"model", model}};
}

class SentencePieceJson : public TokenizerJson {
 protected:
  std::unique_ptr<Tokenizer> load_sp(const SpSpec& s) {
    write("tokenizer.json", sp_tokenizer_json(s).dump());
    std::filesystem::remove(dir_ / "tokenizer_config.json");
    if (!s.config.is_null()) write("tokenizer_config.json", s.config.dump());
    return Tokenizer::from_dir(dir_);
  }
};

using Ids = std::vector<int32_t>;

// Llama 2's pipeline: Prepend "▁" and spaces as "▁" (per span between special tokens), BPE over
// characters (lowest rank first), byte fallback for characters not in the vocabulary, and a
// decoder that undoes it all, dropping the one leading space the Prepend added.
TEST_F(SentencePieceJson, LlamaStylePipeline) {
  auto tok = load_sp(SpSpec());
  EXPECT_EQ(tok->encode("a b"), (Ids{262, 259, 261}));  // "▁a▁b": ▁+a merges, the second ▁ has no partner
  EXPECT_EQ(tok->encode("ab"), (Ids{262, 261}));        // ▁+a (rank 0) before a+b (rank 1)
  EXPECT_EQ(tok->encode(" a"), (Ids{259, 262}));
  EXPECT_EQ(tok->encode("\xC3\xA9"), (Ids{259, byte_token(0xC3), byte_token(0xA9)}));  // é: byte fallback
  EXPECT_EQ(tok->encode("<s>a</s>b"), (Ids{1, 262, 2, 259, 261}));  // each span gets its own "▁"
  EXPECT_EQ(tok->encode(""), Ids{});
  EXPECT_EQ(tok->encode("", true), Ids{1});
  EXPECT_EQ(tok->encode("a", true), (Ids{1, 262}));
  EXPECT_EQ(tok->decode({262, 259, 261}), "a b");
  EXPECT_EQ(tok->decode({259, 262}), " a");
  EXPECT_EQ(tok->decode({259, byte_token(0xC3), byte_token(0xA9)}), "\xC3\xA9");
  EXPECT_EQ(tok->decode({1, 262, 2}), "<s> a</s>");  // the leading space survives after "<s>"
  EXPECT_EQ(tok->decode({1, 262, 2}, true), "a");
  // A byte run that is not UTF-8 as a whole: one U+FFFD per byte, even for its valid part.
  EXPECT_EQ(tok->decode({byte_token(0xC3), byte_token(0xA9), byte_token(0x80), 260}),
            "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD" "a");
}

// Without byte fallback, unknown characters become <unk>: one per run under fuse_unk, one each
// without it, and nothing at all when the model has no unk_token.
TEST_F(SentencePieceJson, UnknownCharacters) {
  SpSpec s;
  s.model_extra = {{"byte_fallback", false}, {"fuse_unk", true}, {"unk_token", "<unk>"}};
  EXPECT_EQ(load_sp(s)->encode("\xC3\xA9\xC3\xA9" "a"), (Ids{259, 0, 260}));
  s.model_extra["fuse_unk"] = false;
  EXPECT_EQ(load_sp(s)->encode("\xC3\xA9\xC3\xA9" "a"), (Ids{259, 0, 0, 260}));
  s.model_extra = {{"byte_fallback", false}, {"unk_token", nullptr}};
  EXPECT_EQ(load_sp(s)->encode("\xC3\xA9\xC3\xA9" "a"), (Ids{262}));  // "▁" + "a" merge once the é's are gone
  s.model_extra = {{"byte_fallback", false}, {"unk_token", "<missing>"}};
  EXPECT_THROW(load_sp(s)->encode("\xC3\xA9"), std::runtime_error);  // HF: UnkTokenOutOfVocabulary
}

// HF writes a pending <unk> only when a known character comes: byte-fallback tokens found in
// between go first. 😀 (F0 9F 98 80) cannot fall back (no <0xF0>), é can.
TEST_F(SentencePieceJson, PendingUnkComesAfterByteFallback) {
  SpSpec s;
  s.missing_bytes = {0xF0};
  EXPECT_EQ(load_sp(s)->encode("\xF0\x9F\x98\x80\xC3\xA9" "a"),
            (Ids{259, byte_token(0xC3), byte_token(0xA9), 0, 260}));
}

// Gemma's pipeline: spaces replaced by "▁" (no Prepend), a Split on " " that finds nothing left
// to split, and a decoder without Strip.
TEST_F(SentencePieceJson, GemmaStylePipeline) {
  SpSpec s;
  s.normalizer = {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kSp}};
  s.pre_tokenizer = {{"type", "Split"}, {"pattern", {{"String", " "}}}, {"behavior", "MergedWithPrevious"}, {"invert", false}};
  s.decoder["decoders"].erase(3);
  auto tok = load_sp(s);
  EXPECT_EQ(tok->encode("a b"), (Ids{260, 259, 261}));
  EXPECT_EQ(tok->encode(" a"), (Ids{262}));
  EXPECT_EQ(tok->decode({262}), " a");
  EXPECT_EQ(tok->decode({1, 262}), "<s> a");
}

// Post-processors add their tokens only under add_special_tokens; tokenizer_config.json's
// add_bos_token / add_eos_token replace them, as transformers does.
TEST_F(SentencePieceJson, PostProcessorsAndAddBosToken) {
  SpSpec s;
  EXPECT_EQ(load_sp(s)->encode("a", true), (Ids{1, 262}));
  s.config = {{"bos_token", "<s>"}, {"eos_token", "</s>"}, {"add_bos_token", false}, {"add_eos_token", true}};
  EXPECT_EQ(load_sp(s)->encode("a", true), (Ids{262, 2}));
  s.config = {{"bos_token", "<s>"}, {"add_bos_token", true}};
  s.post_processor = {{"type", "ByteLevel"}};  // DeepSeek-V3's case: the json adds nothing, the config a BOS
  EXPECT_EQ(load_sp(s)->encode("a", true), (Ids{1, 262}));
  s.config = nullptr;
  EXPECT_EQ(load_sp(s)->encode("a", true), (Ids{262}));
  s.post_processor = {{"type", "RobertaProcessing"}, {"cls", {"<s>", 1}}, {"sep", {"</s>", 2}}};
  EXPECT_EQ(load_sp(s)->encode("a", true), (Ids{1, 262, 2}));
  s.post_processor = {{"type", "Sequence"},
                      {"processors", json::array({{{"type", "ByteLevel"}}, SpSpec().post_processor})}};
  EXPECT_EQ(load_sp(s)->encode("a", true), (Ids{1, 262}));
  EXPECT_EQ(load_sp(s)->encode("a", false), (Ids{262}));
}

// Replace with a regex, then with a literal; Metaspace as the decoder.
TEST_F(SentencePieceJson, RegexReplaceAndMetaspaceDecoder) {
  SpSpec s;
  s.normalizer = {{"type", "Sequence"},
                  {"normalizers", json::array({{{"type", "Replace"}, {"pattern", {{"Regex", " {2,}"}}}, {"content", " "}},
                                               {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kSp}}})}};
  s.decoder = {{"type", "Metaspace"}, {"replacement", kSp}, {"prepend_scheme", "always"}, {"split", true}};
  auto tok = load_sp(s);
  EXPECT_EQ(tok->encode("a    b"), (Ids{260, 259, 261}));
  EXPECT_EQ(tok->decode({262, 262}), "a a");  // Metaspace drops the first token's ▁
}

}  // namespace
}  // namespace nanovllm
