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

}  // namespace

bool Tokenizer::present(const std::filesystem::path& dir) {
  std::error_code ec;
  return std::filesystem::is_regular_file(dir / "tokenizer.json", ec);
}

std::unique_ptr<Tokenizer> Tokenizer::from_dir(const std::filesystem::path& dir, const std::string& chat_template) {
  const std::filesystem::path tok_path = dir / "tokenizer.json";
  if (!present(dir)) throw std::runtime_error(tok_path.string() + ": not found");
  BpeTokenizer::Parts parts = load_tokenizer_json(read_file(tok_path), tok_path.string());
  parts.where = dir.string();

  const std::filesystem::path cfg_path = dir / "tokenizer_config.json";
  std::optional<nlohmann::json> config;
  std::error_code ec;
  if (std::filesystem::is_regular_file(cfg_path, ec)) {
    const nlohmann::json& cfg = config.emplace(read_json_file(cfg_path));
    if (!cfg.is_object()) throw std::runtime_error(cfg_path.string() + ": not a JSON object");
    parts.eos_token = token_field(cfg, "eos_token", cfg_path.string());
    parts.pad_token = token_field(cfg, "pad_token", cfg_path.string());
    parts.bos_token = token_field(cfg, "bos_token", cfg_path.string());
    // add_bos_token / add_eos_token: transformers then builds the post-processor from them.
    for (auto [key, flag] : {std::pair{"add_bos_token", &parts.add_bos_token},
                             std::pair{"add_eos_token", &parts.add_eos_token}}) {
      if (!cfg.contains(key) || cfg[key].is_null()) continue;
      if (!cfg[key].is_boolean()) throw std::runtime_error(cfg_path.string() + ": " + key + " must be true or false");
      *flag = cfg[key].get<bool>();
    }
  }
  parts.chat_template = load_chat_template(dir, config ? &*config : nullptr, chat_template);
  return std::make_unique<BpeTokenizer>(std::move(parts));
}

}  // namespace nanovllm
