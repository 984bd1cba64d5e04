// The server's logprobs rendering: token strings (OpenAI's "bytes:\xNN" for part of a character),
// vLLM's -9999 floor for -inf, completions' top-N-plus-chosen objects, chat entries and vLLM's
// prompt_logprobs, on a byte tokenizer and on Qwen3's byte-level BPE.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <limits>

#include "server/logprobs.h"
#include "server/sse.h"

namespace nanovllm::server {
namespace {

using json = nlohmann::json;

// One id per byte (ids 256.. are unknown): decode() is the bytes themselves.
class ByteTokenizer : public Tokenizer {
 public:
  std::vector<int32_t> encode(std::string_view text) const override { return {text.begin(), text.end()}; }
  std::string decode(const std::vector<int32_t>& ids, bool) const override {
    std::string s;
    for (int32_t id : ids) {
      if (id < 0 || id >= 256) throw std::out_of_range("unknown id");
      s += static_cast<char>(id);
    }
    return s;
  }
  int vocab_size() const override { return 256; }
  std::optional<int32_t> token_to_id(std::string_view) const override { return std::nullopt; }
  std::optional<int32_t> eos_token_id() const override { return std::nullopt; }
  std::optional<int32_t> pad_token_id() const override { return std::nullopt; }
  std::optional<int32_t> bos_token_id() const override { return std::nullopt; }
  std::string apply_chat_template(const std::vector<ChatMessage>&, bool, bool) const override { return ""; }
};

PositionLogprobs position(int32_t id, float logprob, int rank, std::vector<TokenLogprob> top) {
  return PositionLogprobs{id, logprob, rank, std::move(top)};
}

TEST(ServerLogprobs, TokenStrings) {
  ByteTokenizer tok;
  EXPECT_EQ(token_text(tok, 'a').text, "a");
  EXPECT_EQ(token_text(tok, 'a').bytes, "a");
  // A lone lead byte is not text: OpenAI's form, the raw byte kept for chat's "bytes".
  EXPECT_EQ(token_text(tok, 0xE4).text, "bytes:\\xe4");
  EXPECT_EQ(token_text(tok, 0xE4).bytes, "\xE4");
  // An id the tokenizer lacks (a padded row of the lm-head) decodes to nothing.
  EXPECT_EQ(token_text(tok, 300).text, "");
  EXPECT_EQ(char_count("a\xE4\xBD\xA0"), 2);  // 'a' and the lead byte of U+4F60
  EXPECT_EQ(char_count("\xBD\xA0"), 0);       // continuation bytes only
}

TEST(ServerLogprobs, QwenByteLevelTokens) {
  const std::filesystem::path dir = std::filesystem::path(NANOVLLM_SOURCE_DIR) / "models" / "qwen3-tokenizer";
  if (!Tokenizer::present(dir)) GTEST_SKIP() << "models/qwen3-tokenizer is missing: run scripts/setup.sh to fetch it";
  auto tok = Tokenizer::from_dir(dir);
  // "你" is one token; its first byte alone is another (the byte-level symbol U+00E4).
  const std::vector<int32_t> ni = tok->encode("你");
  ASSERT_EQ(ni.size(), 1u);
  EXPECT_EQ(token_text(*tok, ni[0]).text, "你");
  const std::optional<int32_t> e4 = tok->token_to_id("\xC3\xA4");
  ASSERT_TRUE(e4.has_value());
  EXPECT_EQ(token_text(*tok, *e4).text, "bytes:\\xe4");
  EXPECT_EQ(token_text(*tok, *e4).bytes, "\xE4");
  // A special token shows its text.
  const std::optional<int32_t> im_end = tok->token_to_id("<|im_end|>");
  ASSERT_TRUE(im_end.has_value());
  EXPECT_EQ(token_text(*tok, *im_end).text, "<|im_end|>");
}

TEST(ServerLogprobs, MinusInfinityIsVllmsFloor) {
  EXPECT_EQ(response_logprob(-std::numeric_limits<float>::infinity()), -9999.0);
  EXPECT_EQ(response_logprob(std::numeric_limits<float>::quiet_NaN()), -9999.0);
  EXPECT_EQ(response_logprob(-20000.0f), -9999.0);
  EXPECT_EQ(response_logprob(-1.5f), -1.5);
  ByteTokenizer tok;
  json out = empty_completion_logprobs();
  int64_t offset = 0;
  append_completion_position(tok, position('a', -std::numeric_limits<float>::infinity(), 9, {{'b', -0.5f}}), 1, out,
                             offset);
  // Valid JSON, with numbers where OpenAI's clients expect them.
  const json back = json::parse(dump_json(out));
  EXPECT_EQ(back["token_logprobs"][0], -9999.0);
  EXPECT_EQ(back["top_logprobs"][0]["a"], -9999.0);
}

TEST(ServerLogprobs, CompletionsObject) {
  ByteTokenizer tok;
  json out = empty_completion_logprobs();
  int64_t offset = 0;
  append_unscored_token(tok, 'H', out, offset);
  // The chosen token among the top 2: two entries; outside them: three.
  append_completion_position(tok, position('i', -0.25f, 1, {{'i', -0.25f}, {'!', -2.0f}, {'?', -3.0f}}), 2, out,
                             offset);
  append_completion_position(tok, position(0xE4, -5.0f, 7, {{'x', -1.0f}, {'y', -1.5f}}), 2, out, offset);
  append_completion_position(tok, position(0xBD, -6.0f, 8, {{'x', -1.0f}}), 0, out, offset);
  EXPECT_EQ(out["tokens"], json({"H", "i", "bytes:\\xe4", "bytes:\\xbd"}));
  EXPECT_EQ(out["token_logprobs"], json({nullptr, -0.25, -5.0, -6.0}));
  EXPECT_EQ(out["top_logprobs"][0], nullptr);
  EXPECT_EQ(out["top_logprobs"][1], json({{"i", -0.25}, {"!", -2.0}}));
  EXPECT_EQ(out["top_logprobs"][2], json({{"x", -1.0}, {"y", -1.5}, {"bytes:\\xe4", -5.0}}));
  EXPECT_EQ(out["top_logprobs"][3], json({{"bytes:\\xbd", -6.0}}));  // logprobs 0: the chosen token only
  // Characters that begin before each token: a continuation byte begins none.
  EXPECT_EQ(out["text_offset"], json({0, 1, 2, 3}));
  EXPECT_EQ(offset, 3);
}

TEST(ServerLogprobs, ChatEntry) {
  ByteTokenizer tok;
  const json e = chat_logprob_entry(tok, position(0xE4, -1.0f, 1, {{0xE4, -1.0f}, {'a', -2.0f}, {'b', -3.0f}}), 2);
  EXPECT_EQ(e, json({{"token", "bytes:\\xe4"},
                     {"logprob", -1.0},
                     {"bytes", {0xE4}},
                     {"top_logprobs",
                      {{{"token", "bytes:\\xe4"}, {"logprob", -1.0}, {"bytes", {0xE4}}},
                       {{"token", "a"}, {"logprob", -2.0}, {"bytes", {'a'}}}}}}));
  EXPECT_EQ(chat_logprob_entry(tok, position('a', -1.0f, 1, {{'a', -1.0f}}), 0)["top_logprobs"], json::array());
}

TEST(ServerLogprobs, VllmPromptLogprobs) {
  ByteTokenizer tok;
  const json p = vllm_prompt_logprobs(
      tok, {position('b', -4.0f, 12, {{'x', -1.0f}, {'y', -2.0f}}), position('c', -0.5f, 1, {{'c', -0.5f}})}, 1);
  EXPECT_EQ(p, json::parse(R"([null,
      {"98": {"logprob": -4.0, "rank": 12, "decoded_token": "b"},
       "120": {"logprob": -1.0, "rank": 1, "decoded_token": "x"}},
      {"99": {"logprob": -0.5, "rank": 1, "decoded_token": "c"}}])"));
}

}  // namespace
}  // namespace nanovllm::server
