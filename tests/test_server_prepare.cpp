// prepare(): a checked request to engine work — vLLM's default max_tokens, its context-length
// errors, token ids checked against the model's vocabulary, n choices with seed + j, the sampling
// fields over the server's defaults (generation_config.json), logprobs and echo.
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

const ModelLimits kLimits{/*max_model_len=*/64, /*vocab_size=*/300, /*max_logprobs=*/5};
const SamplingDefaults kDefaults{};  // SamplingParams' own: no generation_config.json

std::string param_of_error(const std::string& body, Endpoint ep = Endpoint::completions) {
  ByteTokenizer tok;
  try {
    prepare(parse_request(body, ep), tok, kLimits, kDefaults);
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
                   tok, kLimits, kDefaults);
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
                    tok, kLimits, kDefaults);
  EXPECT_EQ(st.subs[0].params.stop, (std::vector<std::string>{"a", "bc"}));
  EXPECT_EQ(st.subs[0].params.stop_token_ids, (std::vector<int32_t>{7}));
  EXPECT_TRUE(st.subs[0].params.include_stop_str_in_output);
  EXPECT_FALSE(st.subs[0].params.skip_special_tokens);
  // Completions default to 16 tokens.
  EXPECT_EQ(p.subs[0].params.max_tokens, 16);
  // Without a seed the engine picks one per request.
  auto q = prepare(parse_request(R"({"prompt":"x","n":2})", Endpoint::completions), tok, kLimits, kDefaults);
  EXPECT_FALSE(q.subs[0].params.seed.has_value());
  // ... and 16 is cut to what the context leaves.
  auto r = prepare(parse_request(R"({"prompt":")" + std::string(60, 'x') + R"("})", Endpoint::completions), tok,
                   kLimits, kDefaults);
  EXPECT_EQ(r.subs[0].params.max_tokens, 4);
}

TEST(ServerPrepare, ChatUsesTheTemplateAndTheRestOfTheContext) {
  ByteTokenizer tok;
  auto p = prepare(parse_request(R"({"messages":[{"role":"user","content":"hi"}],"ignore_eos":true})", Endpoint::chat),
                   tok, kLimits, kDefaults);
  const std::string rendered = "[user]hi[assistant]";
  ASSERT_EQ(p.subs.size(), 1u);
  EXPECT_EQ(p.subs[0].prompt_token_ids, std::vector<int32_t>(rendered.begin(), rendered.end()));
  EXPECT_EQ(p.subs[0].params.max_tokens, 64 - static_cast<int>(rendered.size()));
  EXPECT_TRUE(p.subs[0].params.ignore_eos);
  auto q = prepare(parse_request(R"({"messages":[{"role":"user","content":"hi"}],"add_generation_prompt":false,
                                     "max_tokens":3})",
                                 Endpoint::chat),
                   tok, kLimits, kDefaults);
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
  EXPECT_NO_THROW(
      prepare(parse_request(R"({"prompt":"abcd","max_tokens":60})", Endpoint::completions), tok, kLimits, kDefaults));
}

TEST(ServerPrepare, SamplingFieldsReachTheEngine) {
  ByteTokenizer tok;
  auto p = prepare(parse_request(R"({"prompt":"ab","top_p":0.5,"top_k":7,"min_p":0.25,"repetition_penalty":1.5,
                                     "presence_penalty":-1,"frequency_penalty":2,"logit_bias":{"3":5,"9":-300},
                                     "min_tokens":4,"max_tokens":8,"logprobs":2})",
                                 Endpoint::completions),
                   tok, kLimits, kDefaults);
  const SamplingParams& sp = p.subs[0].params;
  EXPECT_FLOAT_EQ(sp.top_p, 0.5f);
  EXPECT_EQ(sp.top_k, 7);
  EXPECT_FLOAT_EQ(sp.min_p, 0.25f);
  EXPECT_FLOAT_EQ(sp.repetition_penalty, 1.5f);
  EXPECT_FLOAT_EQ(sp.presence_penalty, -1.0f);
  EXPECT_FLOAT_EQ(sp.frequency_penalty, 2.0f);
  EXPECT_EQ(sp.logit_bias, (std::map<int32_t, float>{{3, 5.0f}, {9, -100.0f}}));  // clamped as vLLM
  EXPECT_EQ(sp.min_tokens, 4);
  EXPECT_EQ(sp.logprobs, 2);
  EXPECT_FALSE(sp.prompt_logprobs.has_value());  // no echo: the prompt's are not needed
  // Chat: top_logprobs is the count once logprobs is on; 0 when it is left out.
  auto c = prepare(parse_request(R"({"messages":[{"role":"user","content":"x"}],"logprobs":true,"top_logprobs":3})",
                                 Endpoint::chat),
                   tok, kLimits, kDefaults);
  EXPECT_EQ(c.subs[0].params.logprobs, 3);
  auto c0 = prepare(parse_request(R"({"messages":[{"role":"user","content":"x"}],"logprobs":true})", Endpoint::chat),
                    tok, kLimits, kDefaults);
  EXPECT_EQ(c0.subs[0].params.logprobs, 0);
  auto off = prepare(parse_request(R"({"messages":[{"role":"user","content":"x"}],"top_logprobs":0})", Endpoint::chat),
                     tok, kLimits, kDefaults);
  EXPECT_FALSE(off.subs[0].params.logprobs.has_value());
}

TEST(ServerPrepare, GenerationConfigDefaultsApplyToFieldsLeftOut) {
  ByteTokenizer tok;
  SamplingDefaults d;
  d.params.temperature = 0.25f;
  d.params.top_p = 0.75f;
  d.params.top_k = 20;
  d.params.min_p = 0.05f;
  d.params.repetition_penalty = 1.1f;
  d.params.max_tokens = 10;
  d.max_new_tokens = 10;
  auto p = prepare(parse_request(R"({"prompt":"ab","top_k":null})", Endpoint::completions), tok, kLimits, d);
  const SamplingParams& sp = p.subs[0].params;
  EXPECT_FLOAT_EQ(sp.temperature, 0.25f);
  EXPECT_FLOAT_EQ(sp.top_p, 0.75f);
  EXPECT_EQ(sp.top_k, 20);
  EXPECT_FLOAT_EQ(sp.min_p, 0.05f);
  EXPECT_FLOAT_EQ(sp.repetition_penalty, 1.1f);
  EXPECT_EQ(sp.max_tokens, 10);  // min(16, max_new_tokens 10, room 62)
  // What the request sets wins, max_tokens included.
  auto q = prepare(parse_request(R"({"prompt":"ab","temperature":0,"top_p":1,"top_k":-1,"min_p":0,
                                     "repetition_penalty":1,"max_tokens":30})",
                                 Endpoint::completions),
                   tok, kLimits, d);
  EXPECT_FLOAT_EQ(q.subs[0].params.temperature, 0.0f);
  EXPECT_FLOAT_EQ(q.subs[0].params.top_p, 1.0f);
  EXPECT_EQ(q.subs[0].params.top_k, -1);
  EXPECT_FLOAT_EQ(q.subs[0].params.min_p, 0.0f);
  EXPECT_FLOAT_EQ(q.subs[0].params.repetition_penalty, 1.0f);
  EXPECT_EQ(q.subs[0].params.max_tokens, 30);
  // Chat's default: the rest of the context, capped by max_new_tokens.
  auto c = prepare(parse_request(R"({"messages":[{"role":"user","content":"hi"}]})", Endpoint::chat), tok, kLimits, d);
  EXPECT_EQ(c.subs[0].params.max_tokens, 10);
  d.max_new_tokens = 1000;
  auto c2 = prepare(parse_request(R"({"messages":[{"role":"user","content":"hi"}]})", Endpoint::chat), tok, kLimits, d);
  EXPECT_EQ(c2.subs[0].params.max_tokens, 64 - static_cast<int>(std::string("[user]hi[assistant]").size()));
}

TEST(ServerPrepare, EchoKeepsThePromptAndAsksForItsLogprobs) {
  ByteTokenizer tok;
  auto p = prepare(parse_request(R"({"prompt":["ab",[120,121,122]],"echo":true,"logprobs":3})", Endpoint::completions),
                   tok, kLimits, kDefaults);
  ASSERT_EQ(p.echoes.size(), 2u);
  EXPECT_EQ(p.echoes[0].text, "ab");
  EXPECT_EQ(p.echoes[0].first_token_id, 'a');
  EXPECT_EQ(p.echoes[1].text, "xyz");  // token ids are echoed decoded
  EXPECT_EQ(p.echoes[1].first_token_id, 120);
  EXPECT_EQ(p.subs[0].params.prompt_logprobs, 3);
  // prompt_logprobs beside echo: the engine computes the larger count.
  auto q = prepare(parse_request(R"({"prompt":"ab","echo":true,"logprobs":1,"prompt_logprobs":4})",
                                 Endpoint::completions),
                   tok, kLimits, kDefaults);
  EXPECT_EQ(q.subs[0].params.prompt_logprobs, 4);
  EXPECT_EQ(q.subs[0].params.logprobs, 1);
  // Echo without logprobs needs no prompt logprobs; no echo keeps no prompt.
  auto e = prepare(parse_request(R"({"prompt":"ab","echo":true})", Endpoint::completions), tok, kLimits, kDefaults);
  EXPECT_FALSE(e.subs[0].params.prompt_logprobs.has_value());
  auto n = prepare(parse_request(R"({"prompt":"ab","logprobs":1})", Endpoint::completions), tok, kLimits, kDefaults);
  EXPECT_TRUE(n.echoes.empty());
}

TEST(ServerPrepare, BoundsOfTheModelAndTheServer) {
  EXPECT_EQ(param_of_error(R"({"prompt":"a","logit_bias":{"300":1}})"), "logit_bias");  // id >= vocab
  EXPECT_EQ(param_of_error(R"({"prompt":"a","logprobs":6})"), "logprobs");                // > max_logprobs 5
  EXPECT_EQ(param_of_error(R"({"prompt":"a","prompt_logprobs":6})"), "prompt_logprobs");
  EXPECT_EQ(param_of_error(R"({"messages":[{"role":"user","content":"x"}],"logprobs":true,"top_logprobs":6})",
                           Endpoint::chat),
            "top_logprobs");
  EXPECT_EQ(param_of_error(R"({"prompt":"a","min_tokens":9,"max_tokens":8})"), "min_tokens");
  EXPECT_EQ(param_of_error(R"({"prompt":"a","min_tokens":17})"), "min_tokens");  // above the default 16
  ByteTokenizer tok;
  EXPECT_NO_THROW(prepare(parse_request(R"({"prompt":"a","logprobs":5,"min_tokens":16,"logit_bias":{"299":1}})",
                                        Endpoint::completions),
                          tok, kLimits, kDefaults));
}

}  // namespace
}  // namespace nanovllm::server
