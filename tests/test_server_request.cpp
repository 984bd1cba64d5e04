// Request parsing of the OpenAI server: accepted shapes, the sampling and logprobs parameters,
// and the 400 (with the parameter named) for every kind of bad input the issue lists.
#include <gtest/gtest.h>

#include <map>

#include "server/api_error.h"
#include "server/request.h"

namespace nanovllm::server {
namespace {

// Parses `body` expecting a 400; returns the error's param.
std::string param_of_error(const std::string& body, Endpoint ep = Endpoint::completions) {
  try {
    parse_request(body, ep);
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 400) << body;
    auto j = e.to_json();
    EXPECT_TRUE(j["error"].contains("message") && j["error"].contains("type") && j["error"].contains("param") &&
                j["error"].contains("code"));
    return e.param();
  }
  ADD_FAILURE() << "no error for " << body;
  return "";
}

TEST(ServerRequest, PromptShapes) {
  auto r = parse_request(R"({"model":"m","prompt":"hi"})", Endpoint::completions);
  ASSERT_EQ(r.prompts.size(), 1u);
  EXPECT_TRUE(r.prompts[0].is_text);
  EXPECT_EQ(r.prompts[0].text, "hi");
  EXPECT_EQ(r.model, "m");

  r = parse_request(R"({"prompt":["a","b"]})", Endpoint::completions);
  ASSERT_EQ(r.prompts.size(), 2u);
  EXPECT_EQ(r.prompts[1].text, "b");

  r = parse_request(R"({"prompt":[1,2,3]})", Endpoint::completions);
  ASSERT_EQ(r.prompts.size(), 1u);
  EXPECT_FALSE(r.prompts[0].is_text);
  EXPECT_EQ(r.prompts[0].ids, (std::vector<int32_t>{1, 2, 3}));

  r = parse_request(R"({"prompt":[[1,2],[3.0]]})", Endpoint::completions);
  ASSERT_EQ(r.prompts.size(), 2u);
  EXPECT_EQ(r.prompts[1].ids, (std::vector<int32_t>{3}));
}

TEST(ServerRequest, SamplingFields) {
  auto r = parse_request(
      R"({"prompt":"x","max_tokens":7,"temperature":0,"seed":-3,"n":3,"stop":"\n","ignore_eos":true,
          "stream":true,"stream_options":{"include_usage":true},"top_p":1,"top_k":-1,"presence_penalty":0,
          "frequency_penalty":0.0,"repetition_penalty":1,"logprobs":null,"user":"u"})",
      Endpoint::completions);
  EXPECT_EQ(r.max_tokens, 7);
  EXPECT_EQ(r.temperature, 0.0f);
  EXPECT_EQ(r.seed, -3);
  EXPECT_EQ(r.n, 3);
  EXPECT_EQ(r.stop, std::vector<std::string>{"\n"});
  EXPECT_TRUE(r.ignore_eos);
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);

  // Chat: max_completion_tokens wins over the older max_tokens; content parts are joined.
  r = parse_request(R"({"messages":[{"role":"developer","content":"s"},
                                    {"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],
                        "max_tokens":5,"max_completion_tokens":9,"chat_template_kwargs":{"enable_thinking":false}})",
                    Endpoint::chat);
  ASSERT_EQ(r.messages.size(), 2u);
  EXPECT_EQ(r.messages[0].role, "system");
  EXPECT_EQ(r.messages[1].content, "ab");
  EXPECT_EQ(r.max_tokens, 9);
  EXPECT_FALSE(r.enable_thinking);
}

TEST(ServerRequest, MalformedBodies) {
  EXPECT_EQ(param_of_error("{"), "");
  EXPECT_EQ(param_of_error("[1,2]"), "");
  EXPECT_EQ(param_of_error(""), "");
  EXPECT_EQ(param_of_error("{\"prompt\":\"\xff\xfe\"}"), "");      // invalid UTF-8
  EXPECT_EQ(param_of_error(R"({"prompt":"\ud800"})"), "");          // lone surrogate
  EXPECT_EQ(param_of_error(R"({"prompt":"a"} trailing)"), "");
}

TEST(ServerRequest, WrongTypesAndRanges) {
  EXPECT_EQ(param_of_error(R"({})"), "prompt");
  EXPECT_EQ(param_of_error(R"({"prompt":5})"), "prompt");
  EXPECT_EQ(param_of_error(R"({"prompt":[]})"), "prompt");
  EXPECT_EQ(param_of_error(R"({"prompt":[1,-2]})"), "prompt[1]");
  EXPECT_EQ(param_of_error(R"({"prompt":[[1],"a",{}]})"), "prompt");
  EXPECT_EQ(param_of_error(R"({"prompt":"a","max_tokens":"5"})"), "max_tokens");
  EXPECT_EQ(param_of_error(R"({"prompt":"a","max_tokens":0})"), "max_tokens");
  EXPECT_EQ(param_of_error(R"({"prompt":"a","max_tokens":1.5})"), "max_tokens");
  EXPECT_EQ(param_of_error(R"({"prompt":"a","max_tokens":1e40})"), "max_tokens");
  EXPECT_EQ(param_of_error(R"({"prompt":"a","temperature":-0.1})"), "temperature");
  EXPECT_EQ(param_of_error(R"({"prompt":"a","temperature":true})"), "temperature");
  EXPECT_EQ(param_of_error(R"({"prompt":"a","n":0})"), "n");
  EXPECT_EQ(param_of_error(R"({"prompt":"a","n":1000})"), "n");
  EXPECT_EQ(param_of_error(R"({"prompt":"a","stop":[""]})"), "stop");
  EXPECT_EQ(param_of_error(R"({"prompt":"a","stop":[1]})"), "stop[0]");
  EXPECT_EQ(param_of_error(R"({"prompt":"a","stream":"yes"})"), "stream");
  EXPECT_EQ(param_of_error(R"({"prompt":"a","stream_options":{"include_usage":true}})"), "stream_options");
  EXPECT_EQ(param_of_error(R"({"prompt":"a","model":3})"), "model");
  EXPECT_EQ(param_of_error(R"({"prompt":"a","seed":"1"})"), "seed");
  EXPECT_EQ(param_of_error(R"({"prompt":"a","no_such_field":1})"), "no_such_field");
  EXPECT_EQ(param_of_error(R"({"messages":[]})", Endpoint::chat), "messages");
  EXPECT_EQ(param_of_error(R"({"messages":[{"content":"x"}]})", Endpoint::chat), "messages[0].role");
  EXPECT_EQ(param_of_error(R"({"messages":[{"role":"robot","content":"x"}]})", Endpoint::chat), "messages[0].role");
  EXPECT_EQ(param_of_error(R"({"messages":[{"role":"user","content":5}]})", Endpoint::chat), "messages[0].content");
  EXPECT_EQ(param_of_error(R"({"messages":[{"role":"user","content":[{"type":"image_url"}]}]})", Endpoint::chat),
            "messages[0].content[0]");
  // A prompt on the chat endpoint and messages on completions are unknown fields there.
  EXPECT_EQ(param_of_error(R"({"messages":[{"role":"user","content":"x"}],"prompt":"a"})", Endpoint::chat), "prompt");
}

const char* kChat = R"("messages":[{"role":"user","content":"x"}])";

std::string chat_body(const std::string& fields) { return std::string("{") + kChat + "," + fields + "}"; }

TEST(ServerRequest, SamplingParameters) {
  auto r = parse_request(R"({"prompt":"a","top_p":0.9,"top_k":40,"min_p":0.1,"repetition_penalty":1.2,
                             "presence_penalty":-0.5,"frequency_penalty":2,"min_tokens":3,
                             "logit_bias":{"5":1.5,"77":-200,"9":150}})",
                         Endpoint::completions);
  EXPECT_FLOAT_EQ(*r.top_p, 0.9f);
  EXPECT_EQ(r.top_k, 40);
  EXPECT_FLOAT_EQ(*r.min_p, 0.1f);
  EXPECT_FLOAT_EQ(*r.repetition_penalty, 1.2f);
  EXPECT_FLOAT_EQ(*r.presence_penalty, -0.5f);
  EXPECT_FLOAT_EQ(*r.frequency_penalty, 2.0f);
  EXPECT_EQ(r.min_tokens, 3);
  // vLLM clamps biases to [-100, 100].
  EXPECT_EQ(r.logit_bias, (std::map<int32_t, float>{{5, 1.5f}, {9, 100.0f}, {77, -100.0f}}));

  // Left out or null: unset, so the server's defaults (generation_config.json) apply.
  r = parse_request(R"({"prompt":"a","temperature":null,"top_p":null,"top_k":null,"min_p":null,
                        "repetition_penalty":null,"presence_penalty":null,"frequency_penalty":null,
                        "logit_bias":null,"min_tokens":null})",
                    Endpoint::completions);
  EXPECT_FALSE(r.temperature || r.top_p || r.top_k || r.min_p || r.repetition_penalty || r.presence_penalty ||
               r.frequency_penalty);
  EXPECT_TRUE(r.logit_bias.empty());
  EXPECT_EQ(r.min_tokens, 0);

  // The edges of each range are in it; -1 and 0 are both "off" for top_k.
  EXPECT_NO_THROW(parse_request(R"({"prompt":"a","top_p":1,"top_k":-1,"min_p":0,"temperature":2,
                                    "presence_penalty":-2,"frequency_penalty":-2})",
                                Endpoint::completions));
  EXPECT_NO_THROW(parse_request(R"({"prompt":"a","top_p":1e-9,"top_k":0,"min_p":1,"temperature":0,
                                    "presence_penalty":2,"frequency_penalty":2,"repetition_penalty":1e-6})",
                                Endpoint::completions));
}

TEST(ServerRequest, SamplingParametersOutOfRangeNameTheParameter) {
  for (const char* field : {R"("top_p":0)", R"("top_p":1.01)", R"("top_p":-0.5)", R"("top_p":"0.5")"})
    EXPECT_EQ(param_of_error(std::string(R"({"prompt":"a",)") + field + "}"), "top_p") << field;
  for (const char* field : {R"("top_k":-2)", R"("top_k":1.5)", R"("top_k":3000000000)", R"("top_k":true)"})
    EXPECT_EQ(param_of_error(std::string(R"({"prompt":"a",)") + field + "}"), "top_k") << field;
  for (const char* field : {R"("min_p":-0.01)", R"("min_p":1.5)"})
    EXPECT_EQ(param_of_error(std::string(R"({"prompt":"a",)") + field + "}"), "min_p") << field;
  for (const char* field : {R"("repetition_penalty":0)", R"("repetition_penalty":-1)", R"("repetition_penalty":1e39)"})
    EXPECT_EQ(param_of_error(std::string(R"({"prompt":"a",)") + field + "}"), "repetition_penalty") << field;
  for (const char* field : {R"("presence_penalty":2.5)", R"("presence_penalty":-2.01)"})
    EXPECT_EQ(param_of_error(std::string(R"({"prompt":"a",)") + field + "}"), "presence_penalty") << field;
  for (const char* field : {R"("frequency_penalty":3)", R"("frequency_penalty":-3)"})
    EXPECT_EQ(param_of_error(std::string(R"({"prompt":"a",)") + field + "}"), "frequency_penalty") << field;
  for (const char* field : {R"("temperature":2.5)", R"("temperature":-1)"})
    EXPECT_EQ(param_of_error(std::string(R"({"prompt":"a",)") + field + "}"), "temperature") << field;
  for (const char* field : {R"("min_tokens":-1)", R"("min_tokens":"2")"})
    EXPECT_EQ(param_of_error(std::string(R"({"prompt":"a",)") + field + "}"), "min_tokens") << field;
  // logit_bias: an object of integer token ids to numbers.
  for (const char* field : {R"("logit_bias":{"a":1})", R"("logit_bias":{"1.5":1})", R"("logit_bias":{"":1})",
                            R"("logit_bias":{"-3":1})", R"("logit_bias":{"99999999999":1})",
                            R"("logit_bias":{"5":"x"})", R"("logit_bias":{"5":null})", R"("logit_bias":[1,2])",
                            R"("logit_bias":{"5 ":1})"})
    EXPECT_EQ(param_of_error(std::string(R"({"prompt":"a",)") + field + "}"), "logit_bias") << field;
  EXPECT_EQ(param_of_error(R"({"prompt":"a","seed":1.5})"), "seed");
}

TEST(ServerRequest, LogprobsAndEcho) {
  // Completions: an integer count; null and false are none.
  auto r = parse_request(R"({"prompt":"a","logprobs":3,"echo":true,"prompt_logprobs":2})", Endpoint::completions);
  EXPECT_EQ(r.logprobs, 3);
  EXPECT_EQ(r.prompt_logprobs, 2);
  EXPECT_TRUE(r.echo);
  r = parse_request(R"({"prompt":"a","logprobs":0})", Endpoint::completions);
  EXPECT_EQ(r.logprobs, 0);
  r = parse_request(R"({"prompt":"a","logprobs":null,"echo":false,"prompt_logprobs":null})", Endpoint::completions);
  EXPECT_FALSE(r.logprobs || r.prompt_logprobs || r.echo);
  r = parse_request(R"({"prompt":"a","logprobs":false})", Endpoint::completions);
  EXPECT_FALSE(r.logprobs);
  EXPECT_EQ(param_of_error(R"({"prompt":"a","logprobs":-1})"), "logprobs");
  EXPECT_EQ(param_of_error(R"({"prompt":"a","logprobs":true})"), "logprobs");
  EXPECT_EQ(param_of_error(R"({"prompt":"a","logprobs":"2"})"), "logprobs");
  EXPECT_EQ(param_of_error(R"({"prompt":"a","prompt_logprobs":-1})"), "prompt_logprobs");
  EXPECT_EQ(param_of_error(R"({"prompt":"a","echo":1})"), "echo");
  // As vLLM: prompt logprobs come with the finished request, so not with a stream.
  EXPECT_EQ(param_of_error(R"({"prompt":"a","prompt_logprobs":1,"stream":true})"), "prompt_logprobs");
  EXPECT_NO_THROW(parse_request(R"({"prompt":"a","logprobs":2,"echo":true,"stream":true})", Endpoint::completions));

  // Chat: logprobs is a switch, top_logprobs the count (0 when left out).
  r = parse_request(chat_body(R"("logprobs":true,"top_logprobs":4)"), Endpoint::chat);
  EXPECT_EQ(r.logprobs, 4);
  r = parse_request(chat_body(R"("logprobs":true)"), Endpoint::chat);
  EXPECT_EQ(r.logprobs, 0);
  r = parse_request(chat_body(R"("logprobs":false,"top_logprobs":0)"), Endpoint::chat);
  EXPECT_FALSE(r.logprobs);
  EXPECT_EQ(param_of_error(chat_body(R"("top_logprobs":2)"), Endpoint::chat), "top_logprobs");  // logprobs not on
  EXPECT_EQ(param_of_error(chat_body(R"("logprobs":false,"top_logprobs":2)"), Endpoint::chat), "top_logprobs");
  EXPECT_EQ(param_of_error(chat_body(R"("logprobs":true,"top_logprobs":-1)"), Endpoint::chat), "top_logprobs");
  EXPECT_EQ(param_of_error(chat_body(R"("logprobs":2)"), Endpoint::chat), "logprobs");
  // Chat has neither echo nor prompt_logprobs here.
  EXPECT_EQ(param_of_error(chat_body(R"("echo":true)"), Endpoint::chat), "echo");
  EXPECT_EQ(param_of_error(chat_body(R"("prompt_logprobs":1)"), Endpoint::chat), "prompt_logprobs");
}

TEST(ServerRequest, NumbersBeyondDoubleAreA400NamingTheField) {
  // nlohmann refuses 1e400 while parsing (not as infinity); the field is found all the same.
  EXPECT_EQ(param_of_error(R"({"prompt":"a","temperature":1e400})"), "temperature");
  EXPECT_EQ(param_of_error(R"({"prompt":"a","max_tokens":1e400})"), "max_tokens");
  EXPECT_EQ(param_of_error(R"({"prompt":"a","top_p":-1e400})"), "top_p");
  EXPECT_EQ(param_of_error(R"({"prompt":"a","logit_bias":{"5":1e400}})"), "logit_bias");
  EXPECT_EQ(param_of_error(R"({"prompt":"a","metadata":{"x":[1,{"y":2}]},"seed":[1e999]})"), "seed");
  EXPECT_EQ(param_of_error(chat_body(R"("top_logprobs":1e400)"), Endpoint::chat), "top_logprobs");
  EXPECT_EQ(param_of_error("1e400"), "");  // the body itself: nothing to name
  // Tiny numbers underflow to 0, which is a number like any other.
  EXPECT_FLOAT_EQ(*parse_request(R"({"prompt":"a","min_p":1e-400})", Endpoint::completions).min_p, 0.0f);
}

TEST(ServerRequest, UnsupportedFeaturesAreRefusedByName) {
  EXPECT_EQ(param_of_error(R"({"prompt":"a","best_of":3})"), "best_of");
  EXPECT_EQ(param_of_error(R"({"prompt":"a","length_penalty":0.5})"), "length_penalty");
  EXPECT_EQ(param_of_error(R"({"prompt":"a","use_beam_search":true})"), "use_beam_search");
  EXPECT_EQ(param_of_error(R"({"prompt":"a","suffix":"x"})"), "suffix");
  EXPECT_EQ(param_of_error(R"({"prompt":"a","bad_words":["x"]})"), "bad_words");
  EXPECT_EQ(param_of_error(R"({"prompt":"a","guided_json":{}})"), "guided_json");
  EXPECT_EQ(param_of_error(R"({"prompt":"a","allowed_token_ids":[1]})"), "allowed_token_ids");
  EXPECT_EQ(param_of_error(chat_body(R"("tools":[{"type":"function"}])"), Endpoint::chat), "tools");
  EXPECT_EQ(param_of_error(chat_body(R"("response_format":{"type":"json_object"})"), Endpoint::chat),
            "response_format");
  // Their "off" values are accepted.
  EXPECT_NO_THROW(parse_request(R"({"prompt":"a","best_of":1,"length_penalty":1,"suffix":null,"bad_words":[],
                                    "use_beam_search":false})",
                                Endpoint::completions));
}

}  // namespace
}  // namespace nanovllm::server
