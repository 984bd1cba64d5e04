// Tokenizer::from_dir: reads tokenizer.json and tokenizer_config.json (plus chat_template.jinja
// when a model ships its template that way) and refuses, by name, any feature it does not implement.
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "tokenizer/bpe_tokenizer.h"
#include "tokenizer/tokenizer_json.h"
#include "util/files.h"

namespace nanovllm {
namespace {

// eos_token and friends: a string, an AddedToken object {"content": ...}, or null.
std::optional<std::string> token_field(const nlohmann::json& cfg, const char* key, const std::string& where) {
  if (!cfg.contains(key) || cfg[key].is_null()) return std::nullopt;
  const auto& v = cfg[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  throw std::runtime_error(where + ": " + key + " must be a string or an object with \"content\"");
}

std::string chat_template_field(const nlohmann::json& cfg, const std::string& where) {
  if (!cfg.contains("chat_template") || cfg["chat_template"].is_null()) return {};
  const auto& v = cfg["chat_template"];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_array()) {  // a list of named templates: the "default" one is what transformers uses
    for (const auto& t : v)
      if (t.is_object() && t.value("name", std::string()) == "default" && t.contains("template"))
        return t["template"].get<std::string>();
    throw std::runtime_error(where + ": chat_template list has no \"default\" entry");
  }
  throw std::runtime_error(where + ": chat_template must be a string or a list of {name, template}");
}

}  // namespace

bool Tokenizer::present(const std::filesystem::path& dir) {
  std::error_code ec;
  return std::filesystem::is_regular_file(dir / "tokenizer.json", ec);
}

std::unique_ptr<Tokenizer> Tokenizer::from_dir(const std::filesystem::path& dir) {
  const std::filesystem::path tok_path = dir / "tokenizer.json";
  if (!present(dir)) throw std::runtime_error(tok_path.string() + ": not found");
  BpeTokenizer::Parts parts = load_tokenizer_json(read_file(tok_path), tok_path.string());
  parts.where = dir.string();

  const std::filesystem::path cfg_path = dir / "tokenizer_config.json";
  std::string template_source, template_where = cfg_path.string();
  std::error_code ec;
  if (std::filesystem::is_regular_file(cfg_path, ec)) {
    const nlohmann::json cfg = read_json_file(cfg_path);
    if (!cfg.is_object()) throw std::runtime_error(cfg_path.string() + ": not a JSON object");
    parts.eos_token = token_field(cfg, "eos_token", cfg_path.string());
    parts.pad_token = token_field(cfg, "pad_token", cfg_path.string());
    parts.bos_token = token_field(cfg, "bos_token", cfg_path.string());
    template_source = chat_template_field(cfg, cfg_path.string());
  }
  // transformers prefers a separate chat_template.jinja over the config's field.
  const std::filesystem::path jinja_path = dir / "chat_template.jinja";
  if (std::filesystem::is_regular_file(jinja_path, ec)) {
    template_source = read_file(jinja_path);
    template_where = jinja_path.string();
  }
  parts.chat_template = ChatTemplate(std::move(template_source), std::move(template_where));
  return std::make_unique<BpeTokenizer>(std::move(parts));
}

}  // namespace nanovllm
