// Request parsing of the OpenAI server: accepted shapes, and the 400 (with the parameter named)
// for every kind of bad input the issue lists.
#include <gtest/gtest.h>

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

TEST(ServerRequest, UnsupportedSamplingIsRefusedByName) {
  EXPECT_EQ(param_of_error(R"({"prompt":"a","top_p":0.9})"), "top_p");
  EXPECT_EQ(param_of_error(R"({"prompt":"a","top_k":40})"), "top_k");
  EXPECT_EQ(param_of_error(R"({"prompt":"a","min_p":0.1})"), "min_p");
  EXPECT_EQ(param_of_error(R"({"prompt":"a","presence_penalty":0.5})"), "presence_penalty");
  EXPECT_EQ(param_of_error(R"({"prompt":"a","frequency_penalty":-1})"), "frequency_penalty");
  EXPECT_EQ(param_of_error(R"({"prompt":"a","repetition_penalty":1.2})"), "repetition_penalty");
  EXPECT_EQ(param_of_error(R"({"prompt":"a","logprobs":2})"), "logprobs");
  EXPECT_EQ(param_of_error(R"({"messages":[{"role":"user","content":"x"}],"logprobs":true})", Endpoint::chat),
            "logprobs");
  EXPECT_EQ(param_of_error(R"({"prompt":"a","echo":true})"), "echo");
  EXPECT_EQ(param_of_error(R"({"prompt":"a","best_of":3})"), "best_of");
  EXPECT_EQ(param_of_error(R"({"prompt":"a","logit_bias":{"5":1}})"), "logit_bias");
  EXPECT_EQ(param_of_error(R"({"prompt":"a","suffix":"x"})"), "suffix");
  EXPECT_EQ(param_of_error(R"({"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function"}]})",
                           Endpoint::chat),
            "tools");
  EXPECT_EQ(param_of_error(R"({"messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_object"}})",
                           Endpoint::chat),
            "response_format");
  // Their "off" values are accepted.
  EXPECT_NO_THROW(parse_request(R"({"prompt":"a","top_k":0,"min_p":0,"best_of":1,"echo":false,"logit_bias":{},
                                    "suffix":null,"top_p":null})",
                                Endpoint::completions));
}

}  // namespace
}  // namespace nanovllm::server
