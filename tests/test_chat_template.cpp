// Qwen3's chat template against transformers' apply_chat_template (tests/fixtures/tokenizer/
// chat.json), and the errors for templates and inputs the renderer refuses.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace nanovllm {
namespace {

const std::filesystem::path kSource = NANOVLLM_SOURCE_DIR;
const std::filesystem::path kQwen3Dir = kSource / "models" / "qwen3-tokenizer";

const Tokenizer* qwen3() {
  static std::unique_ptr<Tokenizer> tok = Tokenizer::present(kQwen3Dir) ? Tokenizer::from_dir(kQwen3Dir) : nullptr;
  return tok.get();
}

nlohmann::json chat_fixture() {
  std::ifstream f(kSource / "tests/fixtures/tokenizer/chat.json");
  return nlohmann::json::parse(f);
}

std::vector<ChatMessage> messages_of(const nlohmann::json& j) {
  std::vector<ChatMessage> msgs;
  for (const auto& m : j)
    msgs.push_back({m["role"].get<std::string>(), m["content"].get<std::string>(),
                    m.value("reasoning_content", std::string())});
  return msgs;
}

TEST(ChatTemplate, Qwen3MatchesTransformers) {
  if (!qwen3()) GTEST_SKIP() << "models/qwen3-tokenizer is missing: run scripts/setup.sh to fetch it";
  auto cases = chat_fixture()["cases"];
  ASSERT_GE(cases.size(), 8u);
  for (const auto& c : cases) {
    bool agp = c["add_generation_prompt"], think = c["enable_thinking"];
    std::string rendered = qwen3()->apply_chat_template(messages_of(c["messages"]), agp, think);
    EXPECT_EQ(rendered, c["rendered"].get<std::string>())
        << c["messages"].dump() << " add_generation_prompt=" << agp << " enable_thinking=" << think;
    EXPECT_EQ(qwen3()->encode(rendered), c["ids"].get<std::vector<int32_t>>()) << c["messages"].dump();
  }
}

// Cases the fixture does not spell out, written from the template's text: tool turns (grouped
// into one user turn), a multi-step tool exchange (thinking kept after the last real query), and
// a role the template does not know (rendered as nothing).
TEST(ChatTemplate, Qwen3ToolTurnsAndUnknownRoles) {
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
  EXPECT_EQ(render_qwen3(msgs, false, true), want);
  EXPECT_EQ(render_qwen3(msgs, true, false), want + "<|im_start|>assistant\n<think>\n\n</think>\n\n");
}

TEST(ChatTemplate, RecognisesQwen3ByItsText) {
  std::ifstream f(kQwen3Dir / "tokenizer_config.json");
  if (!f) GTEST_SKIP() << "models/qwen3-tokenizer is missing: run scripts/setup.sh to fetch it";
  std::string source = nlohmann::json::parse(f)["chat_template"];
  EXPECT_EQ(ChatTemplate(source, "cfg").kind(), ChatTemplate::Kind::qwen3);
  // One character off is another template: refused, not rendered as Qwen3's.
  ChatTemplate edited(source + " ", "cfg");
  EXPECT_EQ(edited.kind(), ChatTemplate::Kind::unsupported);
  try {
    edited.render({{"user", "hi", ""}}, true, true);
    FAIL() << "expected std::runtime_error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("not one nanovllm renders"), std::string::npos) << e.what();
  }
  EXPECT_THROW(ChatTemplate("", "cfg").render({{"user", "hi", ""}}, true, true), std::runtime_error);
}

TEST(ChatTemplate, NoMessagesIsAnError) { EXPECT_THROW(render_qwen3({}, true, true), std::invalid_argument); }

}  // namespace
}  // namespace nanovllm
