// prepare(): a checked request to engine work — vLLM's default max_tokens, its context-length
// errors, token ids checked against the model's vocabulary, n choices with seed + j.
#include <gtest/gtest.h>

#include "server/api_error.h"
#include "server/prepare.h"

namespace nanovllm::server {
namespace {

// One id per byte: token counts are plain to see in the tests below.
class ByteTokenizer : public Tokenizer {
 public:
  std::vector<int32_t> encode(std::string_view text) const override {
    return std::vector<int32_t>(text.begin(), text.end());
  }
  std::string decode(const std::vector<int32_t>& ids, bool) const override { return std::string(ids.begin(), ids.end()); }
  int vocab_size() const override { return 256; }
  std::optional<int32_t> token_to_id(std::string_view) const override { return std::nullopt; }
  std::optional<int32_t> eos_token_id() const override { return std::nullopt; }
  std::optional<int32_t> pad_token_id() const override { return std::nullopt; }
  std::optional<int32_t> bos_token_id() const override { return std::nullopt; }
  // "[role]content" per message, then "[assistant]" when a generation prompt is asked for.
  std::string apply_chat_template(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                                  bool) const override {
    std::string s;
    for (const auto& m : messages) s += "[" + m.role + "]" + m.content;
    if (add_generation_prompt) s += "[assistant]";
    return s;
  }
};

const ModelLimits kLimits{/*max_model_len=*/64, /*vocab_size=*/300};

std::string param_of_error(const std::string& body, Endpoint ep = Endpoint::completions) {
  ByteTokenizer tok;
  try {
    prepare(parse_request(body, ep), tok, kLimits);
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 400) << body;
    return e.param();
  }
  ADD_FAILURE() << "no error for " << body;
  return "";
}

TEST(ServerPrepare, DefaultsAndChoices) {
  ByteTokenizer tok;
  auto p = prepare(parse_request(R"({"prompt":["abc","de"],"n":2,"seed":10,"temperature":0.5})",
                                 Endpoint::completions),
                   tok, kLimits);
  ASSERT_EQ(p.subs.size(), 2u);
  EXPECT_EQ(p.prompt_tokens, (std::vector<int>{3, 2}));
  // One engine request per prompt, of n samples (choice i*n + j is prompt i, sample j), with the
  // request's seed and its stopping rules.
  EXPECT_EQ(p.subs[0].prompt_token_ids, (std::vector<int32_t>{'a', 'b', 'c'}));
  EXPECT_EQ(p.subs[1].prompt_token_ids, (std::vector<int32_t>{'d', 'e'}));
  for (const SubRequest& s : p.subs) {
    EXPECT_EQ(s.params.n, 2);
    EXPECT_EQ(s.params.seed, 10u);
  }
  EXPECT_FLOAT_EQ(p.subs[1].params.temperature, 0.5f);
  auto st = prepare(parse_request(R"({"prompt":"x","stop":["a","bc"],"stop_token_ids":[7],
                                      "include_stop_str_in_output":true,"skip_special_tokens":false})",
                                  Endpoint::completions),
                    tok, kLimits);
  EXPECT_EQ(st.subs[0].params.stop, (std::vector<std::string>{"a", "bc"}));
  EXPECT_EQ(st.subs[0].params.stop_token_ids, (std::vector<int32_t>{7}));
  EXPECT_TRUE(st.subs[0].params.include_stop_str_in_output);
  EXPECT_FALSE(st.subs[0].params.skip_special_tokens);
  // Completions default to 16 tokens.
  EXPECT_EQ(p.subs[0].params.max_tokens, 16);
  // Without a seed the engine picks one per request.
  auto q = prepare(parse_request(R"({"prompt":"x","n":2})", Endpoint::completions), tok, kLimits);
  EXPECT_FALSE(q.subs[0].params.seed.has_value());
  // ... and 16 is cut to what the context leaves.
  auto r = prepare(parse_request(R"({"prompt":")" + std::string(60, 'x') + R"("})", Endpoint::completions), tok,
                   kLimits);
  EXPECT_EQ(r.subs[0].params.max_tokens, 4);
}

TEST(ServerPrepare, ChatUsesTheTemplateAndTheRestOfTheContext) {
  ByteTokenizer tok;
  auto p = prepare(parse_request(R"({"messages":[{"role":"user","content":"hi"}],"ignore_eos":true})", Endpoint::chat),
                   tok, kLimits);
  const std::string rendered = "[user]hi[assistant]";
  ASSERT_EQ(p.subs.size(), 1u);
  EXPECT_EQ(p.subs[0].prompt_token_ids, std::vector<int32_t>(rendered.begin(), rendered.end()));
  EXPECT_EQ(p.subs[0].params.max_tokens, 64 - static_cast<int>(rendered.size()));
  EXPECT_TRUE(p.subs[0].params.ignore_eos);
  auto q = prepare(parse_request(R"({"messages":[{"role":"user","content":"hi"}],"add_generation_prompt":false,
                                     "max_tokens":3})",
                                 Endpoint::chat),
                   tok, kLimits);
  EXPECT_EQ(q.prompt_tokens[0], 8);
  EXPECT_EQ(q.subs[0].params.max_tokens, 3);
}

TEST(ServerPrepare, LengthAndVocabularyErrors) {
  EXPECT_EQ(param_of_error(R"({"prompt":""})"), "prompt");                                   // empty
  EXPECT_EQ(param_of_error(R"({"prompt":")" + std::string(64, 'x') + R"("})"), "prompt");      // no room left
  EXPECT_EQ(param_of_error(R"({"prompt":"abcd","max_tokens":61})"), "max_tokens");             // 4 + 61 > 64
  EXPECT_EQ(param_of_error(R"({"prompt":[1,2,300]})"), "prompt");                               // id >= vocab
  EXPECT_EQ(param_of_error(R"({"prompt":"a","stop_token_ids":[300]})"), "stop_token_ids");
  EXPECT_EQ(param_of_error(R"({"messages":[{"role":"user","content":")" + std::string(60, 'x') + R"("}]})",
                           Endpoint::chat),
            "messages");
  // Exactly at the limit is fine: 4 + 60 = 64.
  ByteTokenizer tok;
  EXPECT_NO_THROW(prepare(parse_request(R"({"prompt":"abcd","max_tokens":60})", Endpoint::completions), tok, kLimits));
}

}  // namespace
}  // namespace nanovllm::server
