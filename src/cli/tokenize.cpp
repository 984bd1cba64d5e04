// `nanovllm tokenize`: encode text (or a chat rendered with the model's template) to ids, or
// decode ids to text, printing one JSON line. A handy check against HF from a shell.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <stdexcept>

#include "cli/commands.h"
#include "cli/engine_flags.h"
#include "util/files.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace nanovllm::cli {
namespace {

struct TokenizeArgs {
  std::string model, text, text_file, chat_file, decode, texts_file, decode_file;
  bool no_thinking = false, no_generation_prompt = false, skip_special = false, add_special = false;
  std::string tools_file, template_kwargs, chat_template;  // the chat's tools, extra variables, template
  bool chat_text = false;                                 // print the rendered chat, not its ids
};

// A chat as transformers' apply_chat_template takes it: the messages as written (tool_calls,
// name, content parts, ... pass through; key order kept), tools, and the extra variables
// (--template-kwargs; enable_thinking=true unless given there or --no-thinking, as before).
struct Chat {
  nlohmann::ordered_json messages, tools, kwargs;
};

nlohmann::ordered_json read_ordered_json(const std::string& path) {
  try {
    return nlohmann::ordered_json::parse(read_file(path));
  } catch (const nlohmann::json::parse_error& e) {
    throw std::runtime_error(path + ": malformed JSON: " + e.what());
  }
}

Chat read_chat(const TokenizeArgs& a) {
  Chat c;
  c.messages = read_ordered_json(a.chat_file);
  if (!c.messages.is_array()) throw std::runtime_error(a.chat_file + ": expected a JSON list of messages");
  if (!a.tools_file.empty()) {
    c.tools = read_ordered_json(a.tools_file);
    if (!c.tools.is_array()) throw std::runtime_error(a.tools_file + ": expected a JSON list of tools");
  }
  c.kwargs = nlohmann::ordered_json::object();
  if (!a.template_kwargs.empty()) {
    try {
      c.kwargs = nlohmann::ordered_json::parse(a.template_kwargs);
    } catch (const nlohmann::json::parse_error& e) {
      throw std::invalid_argument(std::string("--template-kwargs: malformed JSON: ") + e.what());
    }
    if (!c.kwargs.is_object()) throw std::invalid_argument("--template-kwargs: expected a JSON object");
  }
  if (a.no_thinking) c.kwargs["enable_thinking"] = false;
  else if (a.template_kwargs.empty()) c.kwargs["enable_thinking"] = true;
  return c;
}

// --chat-text: the chat rendered with the template alone (tokenizer_config.json,
// chat_template.jinja or --chat-template), so no tokenizer.json is read.
std::string render_chat_text(const TokenizeArgs& a) {
  const std::filesystem::path cfg_path = std::filesystem::path(a.model) / "tokenizer_config.json";
  std::optional<nlohmann::json> cfg;
  if (std::filesystem::is_regular_file(cfg_path)) cfg = read_json_file(cfg_path);
  Chat c = read_chat(a);
  return load_chat_template(a.model, cfg ? &*cfg : nullptr, a.chat_template)
      .render(c.messages, c.tools, !a.no_generation_prompt, c.kwargs);
}

void run(const TokenizeArgs& a) {
  int sources = !a.text.empty() + !a.text_file.empty() + !a.chat_file.empty() + !a.decode.empty() +
                !a.texts_file.empty() + !a.decode_file.empty();
  if (sources != 1)
    throw std::invalid_argument(
        "tokenize: give exactly one of --text, --text-file, --chat-file, --decode, --texts-file, --decode-file");
  if (a.chat_text) {
    if (a.chat_file.empty()) throw std::invalid_argument("tokenize: --chat-text needs --chat-file");
    std::printf("%s\n", nlohmann::json{{"text", render_chat_text(a)}}.dump().c_str());
    return;
  }
  auto tok = Tokenizer::from_dir(a.model, a.chat_template);
  nlohmann::json out;
  if (!a.texts_file.empty()) {  // many texts, one load: {"ids": [[...], ...]}
    const nlohmann::json texts = read_json_file(a.texts_file);
    if (!texts.is_array()) throw std::runtime_error(a.texts_file + ": expected a JSON list of strings");
    out["ids"] = nlohmann::json::array();
    for (const auto& t : texts) out["ids"].push_back(tok->encode(t.get<std::string>(), a.add_special));
  } else if (!a.decode_file.empty()) {  // many id lists: {"texts": [...]}
    const nlohmann::json lists = read_json_file(a.decode_file);
    if (!lists.is_array()) throw std::runtime_error(a.decode_file + ": expected a JSON list of id lists");
    out["texts"] = nlohmann::json::array();
    for (const auto& ids : lists) out["texts"].push_back(tok->decode(ids.get<std::vector<int32_t>>(), a.skip_special));
  } else if (!a.decode.empty()) {
    out["text"] = tok->decode(parse_token_ids(a.decode, "--decode"), a.skip_special);
  } else {
    std::string text;
    if (!a.chat_file.empty()) {
      Chat c = read_chat(a);
      text = tok->apply_chat_template(c.messages, c.tools, !a.no_generation_prompt, c.kwargs);
    }
    else
      text = a.text_file.empty() ? a.text : read_file(a.text_file);
    out["ids"] = tok->encode(text, a.add_special);
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
  cmd->add_option("--chat-file", args->chat_file,
                  "JSON list of messages ({role, content, ...} as transformers takes them) to render and encode");
  cmd->add_option("--tools-file", args->tools_file, "With --chat-file: JSON list of tools passed to the template");
  cmd->add_option("--template-kwargs", args->template_kwargs,
                  "With --chat-file: JSON object of extra template variables (vLLM's chat_template_kwargs)");
  cmd->add_option("--chat-template", args->chat_template,
                  "Jinja chat template to use instead of the model's: a file, or the template text itself");
  cmd->add_flag("--chat-text", args->chat_text,
                "With --chat-file: print the rendered chat ({\"text\": ...}); reads only the template, not tokenizer.json");
  cmd->add_flag("--no-thinking", args->no_thinking, "Render the chat with enable_thinking=false");
  cmd->add_flag("--no-generation-prompt", args->no_generation_prompt, "Render the chat without the assistant prompt");
  cmd->add_option("--decode", args->decode, "Comma-separated ids to decode");
  cmd->add_flag("--skip-special-tokens", args->skip_special, "With --decode: drop special tokens");
  cmd->add_option("--texts-file", args->texts_file, "JSON list of texts to encode (prints {\"ids\": [[...], ...]})");
  cmd->add_option("--decode-file", args->decode_file, "JSON list of id lists to decode (prints {\"texts\": [...]})");
  cmd->add_flag("--add-special-tokens", args->add_special,
                "Encode with the post-processor's special tokens (BOS for Llama, Gemma, DeepSeek), as "
                "transformers' tokenizer(text) and vLLM's completion prompts");
  cmd->callback([args] { run(*args); });
}

}  // namespace nanovllm::cli
