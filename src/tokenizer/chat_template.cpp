// ChatTemplate: picks the model's template, builds the variables transformers passes and renders
// them with the Jinja engine (see chat_template.h).
#include "tokenizer/chat_template.h"

#include <stdexcept>

#include "tokenizer/jinja/json.h"
#include "tokenizer/jinja/template.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"
#include "util/files.h"

namespace nanovllm {
namespace {

// The tokens transformers' special_tokens_map holds, when the config sets them.
constexpr const char* kSpecialTokenKeys[] = {"bos_token", "eos_token", "unk_token", "sep_token",
                                             "pad_token", "cls_token", "mask_token"};

// A token in tokenizer_config.json: a string, or an AddedToken object {"content": ...}.
std::optional<std::string> token_text(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return std::nullopt;
}

// transformers' special_tokens_map: the special tokens that are set, as strings (and
// additional_special_tokens as a list when it is not empty).
nlohmann::ordered_json special_tokens_of(const nlohmann::json* cfg) {
  nlohmann::ordered_json out = nlohmann::ordered_json::object();
  if (!cfg || !cfg->is_object()) return out;
  for (const char* key : kSpecialTokenKeys)
    if (auto it = cfg->find(key); it != cfg->end())
      if (auto t = token_text(*it); t && !t->empty()) out[key] = *t;
  if (auto it = cfg->find("additional_special_tokens"); it != cfg->end() && it->is_array()) {
    nlohmann::ordered_json list = nlohmann::ordered_json::array();
    for (const auto& x : *it)
      if (auto t = token_text(x)) list.push_back(*t);
    if (!list.empty()) out["additional_special_tokens"] = std::move(list);
  }
  return out;
}

// tokenizer_config.json's chat_template: a string, or a list of {"name", "template"}.
std::vector<ChatTemplate::Named> config_templates(const nlohmann::json& cfg, const std::string& where) {
  auto it = cfg.find("chat_template");
  if (it == cfg.end() || it->is_null()) return {};
  if (it->is_string()) return {{"default", it->get<std::string>()}};
  if (it->is_array()) {
    std::vector<ChatTemplate::Named> out;
    for (const auto& t : *it) {
      if (!t.is_object() || !t.contains("name") || !t["name"].is_string() || !t.contains("template") ||
          !t["template"].is_string())
        throw std::runtime_error(where + ": each chat_template entry must be {\"name\": string, \"template\": string}");
      out.push_back({t["name"].get<std::string>(), t["template"].get<std::string>()});
    }
    return out;
  }
  throw std::runtime_error(where + ": chat_template must be a string or a list of {name, template}");
}

// vLLM reads an inline --chat-template with Python's "unicode_escape" codec; these are the
// escapes one types on a command line.
std::string decode_escapes(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\' || i + 1 == s.size()) {
      out += s[i];
      continue;
    }
    switch (s[++i]) {
      case 'n': out += '\n'; break;
      case 't': out += '\t'; break;
      case 'r': out += '\r'; break;
      case '\\': out += '\\'; break;
      case '\'': out += '\''; break;
      case '"': out += '"'; break;
      default: out += '\\', out += s[i];
    }
  }
  return out;
}

}  // namespace

ChatTemplate::ChatTemplate(std::vector<Named> templates, std::string where, nlohmann::ordered_json special_tokens,
                           bool strict)
    : where_(std::move(where)), special_tokens_(std::move(special_tokens)) {
  for (Named& t : templates) {
    // Errors name the file, and the template when the model has several.
    std::string name = where_ + (templates.size() > 1 ? " (chat template '" + t.name + "')" : "");
    Compiled c{t.name, nullptr, nullptr};
    try {
      utf8::validate(t.source, name);
      c.tmpl = std::make_shared<const jinja::Template>(t.source, name);
    } catch (const std::exception&) {
      if (strict) throw;
      c.error = std::current_exception();
    }
    templates_.push_back(std::move(c));
  }
}

void ChatTemplate::check() const {
  for (const Compiled& c : templates_)
    if (!c.tmpl) std::rethrow_exception(c.error);
}

const ChatTemplate::Compiled& ChatTemplate::pick(bool with_tools) const {
  if (templates_.empty())
    throw std::runtime_error((where_.empty() ? "" : where_ + ": ") +
                             "the model has no chat template (give one with --chat-template FILE)");
  auto find = [&](const char* name) -> const Compiled* {
    for (const Compiled& c : templates_)
      if (c.name == name) return &c;
    return nullptr;
  };
  if (with_tools)
    if (const Compiled* c = find("tool_use")) return *c;
  if (const Compiled* c = find("default")) return *c;
  std::string names;
  for (const Compiled& c : templates_) names += (names.empty() ? "'" : ", '") + c.name + "'";
  throw std::runtime_error(where_ + ": the model has several chat templates (" + names +
                           ") and none named 'default' (give one with --chat-template FILE)");
}

std::string ChatTemplate::render(const nlohmann::ordered_json& messages, const nlohmann::ordered_json& tools,
                                 bool add_generation_prompt, const nlohmann::ordered_json& kwargs) const {
  const Compiled& c = pick(!tools.is_null());
  if (!c.tmpl) std::rethrow_exception(c.error);
  if (!kwargs.is_null() && !kwargs.is_object()) throw std::invalid_argument("chat template kwargs must be an object");
  // As transformers: render(messages=, tools=, documents=, add_generation_prompt=,
  // **special_tokens_map, **kwargs); tools and documents are None when not given.
  jinja::Object vars;
  vars.set("messages", jinja::from_json(messages));
  vars.set("tools", jinja::from_json(tools));
  vars.set("documents", jinja::Value::none());
  vars.set("add_generation_prompt", jinja::Value::boolean(add_generation_prompt));
  for (const auto& [k, v] : special_tokens_.items()) vars.set(k, jinja::from_json(v));
  if (kwargs.is_object()) {
    for (const auto& [k, v] : kwargs.items()) {
      if (k == "messages" || k == "tools" || k == "add_generation_prompt")
        throw std::invalid_argument("chat template kwargs may not set '" + k + "': it is an argument of its own");
      vars.set(k, jinja::from_json(v));
    }
  }
  return c.tmpl->render(vars);
}

nlohmann::ordered_json to_json(const std::vector<ChatMessage>& messages) {
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  for (const ChatMessage& m : messages) {
    nlohmann::ordered_json j = {{"role", m.role}, {"content", m.content}};
    if (!m.reasoning_content.empty()) j["reasoning_content"] = m.reasoning_content;
    out.push_back(std::move(j));
  }
  return out;
}

std::string ChatTemplate::render(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                                 bool enable_thinking) const {
  return render(to_json(messages), nullptr, add_generation_prompt, {{"enable_thinking", enable_thinking}});
}

ChatTemplate load_chat_template(const std::filesystem::path& dir, const nlohmann::json* tokenizer_config,
                                const std::string& override_template) {
  nlohmann::ordered_json special = special_tokens_of(tokenizer_config);
  std::error_code ec;
  if (!override_template.empty()) {
    if (std::filesystem::is_regular_file(override_template, ec))
      return ChatTemplate({{"default", read_file(override_template)}}, override_template, std::move(special), true);
    if (override_template.find_first_of("{}\n") == std::string::npos)
      throw std::runtime_error("--chat-template '" + override_template +
                               "' looks like a file path, but there is no such file");
    return ChatTemplate({{"default", decode_escapes(override_template)}}, "--chat-template", std::move(special), true);
  }
  // transformers: a chat_template.jinja file clobbers any template in the config.
  const std::filesystem::path jinja_path = dir / "chat_template.jinja";
  if (std::filesystem::is_regular_file(jinja_path, ec))
    return ChatTemplate({{"default", read_file(jinja_path)}}, jinja_path.string(), std::move(special));
  const std::string cfg_where = (dir / "tokenizer_config.json").string();
  std::vector<ChatTemplate::Named> templates;
  if (tokenizer_config) templates = config_templates(*tokenizer_config, cfg_where);
  // The label first: the arguments' order of evaluation is unspecified (clang moves `templates`
  // out before testing it when both are in one call).
  std::string where = templates.empty() ? cfg_where : cfg_where + " chat_template";
  return ChatTemplate(std::move(templates), std::move(where), std::move(special));
}

std::string Tokenizer::render_chat_template(const nlohmann::ordered_json&, const nlohmann::ordered_json&, bool,
                                            const nlohmann::ordered_json&) const {
  throw std::runtime_error("this tokenizer has no chat template");
}

}  // namespace nanovllm
