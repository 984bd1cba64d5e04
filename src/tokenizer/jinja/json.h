// Values from JSON (messages, tools and kwargs arrive as JSON) and Python's json.dumps for the
// tojson filter, which transformers defines as json.dumps(x, ensure_ascii=False, indent=None,
// separators=None, sort_keys=False): non-ASCII kept, ", " and ": " separators, keys in order.
#pragma once
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>

#include "tokenizer/jinja/value.h"

namespace nanovllm::jinja {

Value from_json(const nlohmann::ordered_json& j);  // keys keep the JSON text's order
Value from_json(const nlohmann::json& j);          // keys come sorted (nlohmann::json sorts them)

struct JsonOptions {
  std::optional<std::string> indent;  // Python's indent (an int n becomes n spaces); absent: one line
  bool ensure_ascii = false;
  std::optional<std::string> item_separator, key_separator;  // absent: Python's defaults
  bool sort_keys = false;
};

// Python's json.dumps(value, ...); undefined, namespaces and functions are not serializable.
std::string to_json(const Value& v, const JsonOptions& options);

}  // namespace nanovllm::jinja
