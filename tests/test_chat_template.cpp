// Chat templates through the Jinja engine against transformers' apply_chat_template: Qwen3's on
// tests/fixtures/tokenizer/chat.json (rendered text and ids), and every models/*-tokenizer
// template on tests/fixtures/tokenizer/chat_templates.json (tools, tool calls, content parts,
// rejected conversations; tests/reference/make_chat_template_fixtures.py). Then how templates
// are found (config string or named list, chat_template.jinja, --chat-template) and the errors.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "tokenizer/chat_template.h"
#include "tokenizer/jinja/error.h"
#include "tokenizer/tokenizer.h"
#include "util/files.h"

namespace nanovllm {
namespace {

using ojson = nlohmann::ordered_json;
const std::filesystem::path kSource = NANOVLLM_SOURCE_DIR;
const std::filesystem::path kQwen3Dir = kSource / "models" / "qwen3-tokenizer";

const Tokenizer* qwen3() {
  static std::unique_ptr<Tokenizer> tok = Tokenizer::present(kQwen3Dir) ? Tokenizer::from_dir(kQwen3Dir) : nullptr;
  return tok.get();
}

// The models/*-tokenizer directories scripts/setup.sh fetches (tokenizer_config.json is enough here).
bool have_models() {
  for (const char* m : {"qwen3", "llama3_1", "llama2", "gemma3", "deepseek_v3"})
    if (!std::filesystem::is_regular_file(kSource / "models" / (std::string(m) + "-tokenizer") / "tokenizer_config.json"))
      return false;
  return true;
}
#define REQUIRE_MODELS() \
  if (!have_models()) GTEST_SKIP() << "models/*-tokenizer are missing: run scripts/setup.sh to fetch them"

ChatTemplate model_template(const std::string& model, const std::string& override_template = "") {
  const std::filesystem::path dir = kSource / "models" / model;
  const nlohmann::json cfg = read_json_file(dir / "tokenizer_config.json");
  return load_chat_template(dir, &cfg, override_template);
}

std::vector<ChatMessage> messages_of(const nlohmann::json& j) {
  std::vector<ChatMessage> msgs;
  for (const auto& m : j)
    msgs.push_back({m["role"].get<std::string>(), m["content"].get<std::string>(),
                    m.value("reasoning_content", std::string())});
  return msgs;
}

// A directory that is removed at the end of the test.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    path = std::filesystem::temp_directory_path() /
           ("nanovllm-chat-" + std::to_string(::getpid()) + "-" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(path);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  void write(const std::string& name, const std::string& text) const { std::ofstream(path / name) << text; }
};

TEST(ChatTemplate, Qwen3MatchesTransformers) {
  if (!qwen3()) GTEST_SKIP() << "models/qwen3-tokenizer is missing: run scripts/setup.sh to fetch it";
  std::ifstream f(kSource / "tests/fixtures/tokenizer/chat.json");
  auto cases = nlohmann::json::parse(f)["cases"];
  ASSERT_GE(cases.size(), 8u);
  for (const auto& c : cases) {
    bool agp = c["add_generation_prompt"], think = c["enable_thinking"];
    std::string rendered = qwen3()->apply_chat_template(messages_of(c["messages"]), agp, think);
    EXPECT_EQ(rendered, c["rendered"].get<std::string>())
        << c["messages"].dump() << " add_generation_prompt=" << agp << " enable_thinking=" << think;
    EXPECT_EQ(qwen3()->encode(rendered), c["ids"].get<std::vector<int32_t>>()) << c["messages"].dump();
  }
}

TEST(ChatTemplate, EveryModelTemplateMatchesTransformers) {
  REQUIRE_MODELS();
  std::ifstream f(kSource / "tests/fixtures/tokenizer/chat_templates.json");
  ASSERT_TRUE(f) << "tests/fixtures/tokenizer/chat_templates.json is missing";
  const ojson fixture = ojson::parse(f);
  std::map<std::string, int> rendered, rejected;
  for (const auto& c : fixture["cases"]) {
    const std::string model = c["model"];
    SCOPED_TRACE(model + " messages=" + c["messages"].dump() + " tools=" + (c["tools"].is_null() ? "no" : "yes") +
                 " add_generation_prompt=" + c["add_generation_prompt"].dump() + " kwargs=" + c["kwargs"].dump());
    const ChatTemplate t = model_template(model);
    if (c.contains("rendered")) {
      ++rendered[model];
      try {
        EXPECT_EQ(t.render(c["messages"], c["tools"], c["add_generation_prompt"], c["kwargs"]),
                  c["rendered"].get<std::string>());
      } catch (const std::exception& e) {
        ADD_FAILURE() << "unexpected error: " << e.what();
      }
      continue;
    }
    ++rejected[model];
    try {
      t.render(c["messages"], c["tools"], c["add_generation_prompt"], c["kwargs"]);
      ADD_FAILURE() << "rendered, transformers raised: " << c["error"];
    } catch (const jinja::TemplateError& e) {
      EXPECT_EQ(e.message(), c["error"].get<std::string>());
      EXPECT_GT(e.line(), 0);
    }
  }
  // Each model's template rendered conversations, and Gemma's rejected some (roles must alternate).
  for (const char* m : {"qwen3-tokenizer", "llama3_1-tokenizer", "gemma3-tokenizer", "deepseek_v3-tokenizer"})
    EXPECT_GE(rendered[m], 20) << m;
  EXPECT_GE(rejected["gemma3-tokenizer"], 8);
}

// Cases written from the template's text: tool turns (grouped into one user turn), a multi-step
// tool exchange (thinking kept after the last real query), and a role the template does not
// know (rendered as nothing); the ChatMessage form of apply_chat_template.
TEST(ChatTemplate, Qwen3ToolTurnsAndUnknownRoles) {
  if (!qwen3()) GTEST_SKIP() << "models/qwen3-tokenizer is missing: run scripts/setup.sh to fetch it";
  std::vector<ChatMessage> msgs = {
      {"user", "weather?", ""},
      {"assistant", "<think>\nneed tool\n</think>\n\ncalling", ""},
      {"tool", "sunny", ""},
      {"tool", "20C", ""},
      {"assistant", "It is sunny.", "saw results"},
      {"developer", "ignored", ""},
  };
  std::string want =
      "<|im_start|>user\nweather?<|im_end|>\n"
      "<|im_start|>assistant\n<think>\nneed tool\n</think>\n\ncalling<|im_end|>\n"
      "<|im_start|>user\n<tool_response>\nsunny\n</tool_response>\n<tool_response>\n20C\n</tool_response><|im_end|>\n"
      "<|im_start|>assistant\n<think>\nsaw results\n</think>\n\nIt is sunny.<|im_end|>\n";
  EXPECT_EQ(qwen3()->apply_chat_template(msgs, false, true), want);
  EXPECT_EQ(qwen3()->apply_chat_template(msgs, true, false), want + "<|im_start|>assistant\n<think>\n\n</think>\n\n");
}

// The general form: tools and tool calls reach the template (Qwen3 lists the tools as JSON in
// the system turn and writes each call's arguments with tojson, keys in the order given).
TEST(ChatTemplate, Qwen3ToolsAndToolCalls) {
  REQUIRE_MODELS();
  const ChatTemplate t = model_template("qwen3-tokenizer");
  ojson tools = ojson::parse(R"([{"type": "function", "function": {"name": "f", "parameters": {"z": 1, "a": "é"}}}])");
  ojson messages = ojson::parse(R"([{"role": "user", "content": "hi"},
      {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": {"b": 2, "a": [1]}}}]}])");
  EXPECT_EQ(t.render(messages, tools, false, ojson::object()),
            "<|im_start|>system\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
            "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
            "{\"type\": \"function\", \"function\": {\"name\": \"f\", \"parameters\": {\"z\": 1, \"a\": \"é\"}}}\n"
            "</tools>\n\nFor each function call, return a json object with function name and arguments within "
            "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": "
            "<args-json-object>}\n</tool_call><|im_end|>\n"
            "<|im_start|>user\nhi<|im_end|>\n"
            "<|im_start|>assistant\n<think>\n\n</think>\n\n<tool_call>\n{\"name\": \"f\", \"arguments\": "
            "{\"b\": 2, \"a\": [1]}}\n</tool_call><|im_end|>\n");
}

TEST(ChatTemplate, SpecialTokensComeFromTheConfig) {
  REQUIRE_MODELS();
  // DeepSeek-V3's bos_token is an AddedToken object; Llama 3.1's a string.
  ojson hi = ojson::parse(R"([{"role": "user", "content": "hi"}])");
  EXPECT_EQ(model_template("deepseek_v3-tokenizer").render(hi, nullptr, true, ojson::object()),
            "<｜begin▁of▁sentence｜><｜User｜>hi<｜Assistant｜>");
  EXPECT_EQ(model_template("llama3_1-tokenizer").render(hi, nullptr, false, ojson::object()),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>");
  // Qwen3 has no bos_token: undefined in the template, as in transformers' special_tokens_map.
  ChatTemplate t({{"default", "[{{ bos_token is defined }}|{{ eos_token }}|{{ pad_token }}]"}}, "cfg",
                 ojson{{"eos_token", "<e>"}, {"pad_token", "<p>"}});
  EXPECT_EQ(t.render(hi, nullptr, false, ojson::object()), "[False|<e>|<p>]");
}

TEST(ChatTemplate, RejectedConversationsNameTheTemplateLine) {
  REQUIRE_MODELS();
  ojson two_users = ojson::parse(R"([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])");
  try {
    model_template("gemma3-tokenizer").render(two_users, nullptr, true, ojson::object());
    FAIL() << "expected a TemplateError";
  } catch (const jinja::TemplateError& e) {
    EXPECT_EQ(e.line(), 19);
    EXPECT_EQ(std::string(e.what()),
              (kSource / "models/gemma3-tokenizer/tokenizer_config.json").string() +
                  " chat_template, line 19: Conversation roles must alternate user/assistant/user/assistant/...");
  }
}

TEST(ChatTemplate, AModelWithoutATemplateSaysSo) {
  REQUIRE_MODELS();
  try {
    model_template("llama2-tokenizer").render(ojson::array(), nullptr, true, ojson::object());
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("the model has no chat template"), std::string::npos) << e.what();
  }
  // ... and --chat-template gives it one.
  ChatTemplate t = model_template("llama2-tokenizer", "{% for m in messages %}[INST] {{ m.content }} [/INST]{% endfor %}");
  EXPECT_EQ(t.render(ojson::parse(R"([{"role": "user", "content": "x"}])"), nullptr, true, ojson::object()),
            "[INST] x [/INST]");
}

TEST(ChatTemplate, NamedTemplatesPickDefaultOrToolUse) {
  TempDir d;
  nlohmann::json cfg = {{"chat_template", nlohmann::json::array({{{"name", "tool_use"}, {"template", "tools:{{ tools|length }}"}},
                                                                 {{"name", "default"}, {"template", "default"}}})}};
  ChatTemplate t = load_chat_template(d.path, &cfg, "");
  EXPECT_EQ(t.render(ojson::array(), nullptr, true, ojson::object()), "default");
  EXPECT_EQ(t.render(ojson::array(), ojson::array({1, 2}), true, ojson::object()), "tools:2");
  nlohmann::json no_default = {{"chat_template", nlohmann::json::array({{{"name", "rag"}, {"template", "x"}}})}};
  EXPECT_THROW(load_chat_template(d.path, &no_default, "").render(ojson::array(), nullptr, true, ojson::object()),
               std::runtime_error);
  nlohmann::json malformed = {{"chat_template", 3}};
  EXPECT_THROW(load_chat_template(d.path, &malformed, ""), std::runtime_error);
}

TEST(ChatTemplate, ChatTemplateJinjaWinsAndOverrideWinsOverBoth) {
  TempDir d;
  nlohmann::json cfg = {{"chat_template", "from config"}, {"eos_token", "</s>"}};
  EXPECT_EQ(load_chat_template(d.path, &cfg, "").render(ojson::array(), nullptr, true, ojson::object()), "from config");
  d.write("chat_template.jinja", "from file {{ eos_token }}\n");  // one trailing newline is dropped
  EXPECT_EQ(load_chat_template(d.path, &cfg, "").render(ojson::array(), nullptr, true, ojson::object()),
            "from file </s>");
  d.write("override.jinja", "override");
  EXPECT_EQ(load_chat_template(d.path, &cfg, (d.path / "override.jinja").string())
                .render(ojson::array(), nullptr, true, ojson::object()),
            "override");
  // Text that names no file and holds "{", "}" or a newline is the template itself (vLLM's rule),
  // with the escapes one types on a command line.
  EXPECT_EQ(load_chat_template(d.path, &cfg, "{{ 'inline' }}\\n!").render(ojson::array(), nullptr, true, ojson::object()),
            "inline\n!");
  EXPECT_THROW(load_chat_template(d.path, &cfg, "no/such/file.jinja"), std::runtime_error);
}

TEST(ChatTemplate, SyntaxErrorsNameTheLine) {
  TempDir d;
  nlohmann::json cfg = {{"chat_template", "ok\n{% if messages %}\nno end"}};
  // The model's own template: the model still loads; rendering says what is wrong and where.
  ChatTemplate t = load_chat_template(d.path, &cfg, "");
  try {
    t.render(ojson::array(), nullptr, true, ojson::object());
    FAIL() << "expected an error";
  } catch (const jinja::TemplateError& e) {
    EXPECT_EQ(e.line(), 2);
    EXPECT_NE(std::string(e.what()).find("chat_template, line 2: the 'if' block is never closed"), std::string::npos)
        << e.what();
  }
  // A template the user gave (--chat-template) fails at once.
  d.write("bad.jinja", "{{ x | nosuchfilter }}");
  try {
    load_chat_template(d.path, &cfg, (d.path / "bad.jinja").string());
    FAIL() << "expected an error";
  } catch (const jinja::TemplateError& e) {
    EXPECT_EQ(e.line(), 1);
    EXPECT_EQ(e.message(), "No filter named 'nosuchfilter'.");
  }
}

TEST(ChatTemplate, KwargsAreTemplateVariables) {
  ChatTemplate t({{"default", "{{ enable_thinking }} {{ documents }} {{ custom|tojson }}"}}, "cfg", ojson::object());
  EXPECT_EQ(t.render(ojson::array(), nullptr, true, ojson{{"enable_thinking", false}, {"custom", {{"k", 1}}}}),
            "False None {\"k\": 1}");
  EXPECT_EQ(t.render(ojson::array(), nullptr, true, ojson{{"documents", ojson::array({"d"})}, {"custom", 2}}),
            " ['d'] 2");
  EXPECT_THROW(t.render(ojson::array(), nullptr, true, ojson{{"messages", 1}}), std::invalid_argument);
}

}  // namespace
}  // namespace nanovllm
