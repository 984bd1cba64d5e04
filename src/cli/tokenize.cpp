// `nanovllm tokenize`: encode text (or a chat rendered with the model's template) to ids, or
// decode ids to text, printing one JSON line. A handy check against HF from a shell.
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "cli/commands.h"
#include "cli/engine_flags.h"
#include "util/files.h"
#include "tokenizer/tokenizer.h"

namespace nanovllm::cli {
namespace {

struct TokenizeArgs {
  std::string model, text, text_file, chat_file, decode;
  bool no_thinking = false, no_generation_prompt = false, skip_special = false;
};

std::vector<ChatMessage> read_messages(const std::string& path) {
  const nlohmann::json j = read_json_file(path);
  if (!j.is_array()) throw std::runtime_error(path + ": expected a JSON list of {role, content} messages");
  std::vector<ChatMessage> msgs;
  for (size_t i = 0; i < j.size(); ++i) {
    const auto& m = j[i];
    auto field = [&](const char* k, bool required) -> std::string {
      if (m.is_object() && m.contains(k) && m[k].is_string()) return m[k].get<std::string>();
      if (m.is_object() && (!m.contains(k) || m[k].is_null()) && !required) return {};
      throw std::runtime_error(path + ": message " + std::to_string(i) + ": \"" + k + "\" must be a string");
    };
    msgs.push_back({field("role", true), field("content", true), field("reasoning_content", false)});
  }
  return msgs;
}

void run(const TokenizeArgs& a) {
  int sources = !a.text.empty() + !a.text_file.empty() + !a.chat_file.empty() + !a.decode.empty();
  if (sources != 1) throw std::invalid_argument("tokenize: give exactly one of --text, --text-file, --chat-file, --decode");
  auto tok = Tokenizer::from_dir(a.model);
  nlohmann::json out;
  if (!a.decode.empty()) {
    out["text"] = tok->decode(parse_token_ids(a.decode, "--decode"), a.skip_special);
  } else {
    std::string text;
    if (!a.chat_file.empty())
      text = tok->apply_chat_template(read_messages(a.chat_file), !a.no_generation_prompt, !a.no_thinking);
    else
      text = a.text_file.empty() ? a.text : read_file(a.text_file);
    out["ids"] = tok->encode(text);
  }
  std::printf("%s\n", out.dump().c_str());
}

}  // namespace

void add_tokenize_command(CLI::App& app) {
  auto args = std::make_shared<TokenizeArgs>();
  auto* cmd = app.add_subcommand("tokenize", "Encode text or a chat to token ids, or decode ids to text (JSON out)");
  cmd->add_option("--model", args->model, "Model directory with tokenizer.json")->required();
  cmd->add_option("--text", args->text, "Text to encode");
  cmd->add_option("--text-file", args->text_file, "File whose bytes are the text to encode");
  cmd->add_option("--chat-file", args->chat_file, "JSON list of {role, content} messages to render and encode");
  cmd->add_flag("--no-thinking", args->no_thinking, "Render the chat with enable_thinking=false");
  cmd->add_flag("--no-generation-prompt", args->no_generation_prompt, "Render the chat without the assistant prompt");
  cmd->add_option("--decode", args->decode, "Comma-separated ids to decode");
  cmd->add_flag("--skip-special-tokens", args->skip_special, "With --decode: drop special tokens");
  cmd->callback([args] { run(*args); });
}

}  // namespace nanovllm::cli
