// Post-processors (see post_processor.h): only what changes ids for one sequence; type ids,
// offsets (ByteLevel's trim_offsets) and the pair template do not matter to a single prompt.
#include "tokenizer/post_processor.h"

#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

namespace nanovllm {
namespace {

[[noreturn]] void fail(std::string_view where, const std::string& what) {
  throw std::runtime_error(std::string(where) + ": post_processor " + what);
}

// Bert/RobertaProcessing's "cls" and "sep": ["token", id].
int32_t token_pair_id(const nlohmann::json& j, const char* key, std::string_view where, const std::string& type) {
  if (!j.contains(key) || !j[key].is_array() || j[key].size() != 2 || !j[key][1].is_number_integer())
    fail(where, type + " needs \"" + key + "\": [token, id]");
  return j[key][1].get<int32_t>();
}

// Each processor wraps what the previous ones produced: prefix' = its prefix + prefix.
void add(const nlohmann::json& j, std::string_view where, PostProcessor& p) {
  if (j.is_null()) return;
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string()) fail(where, "must be an object with a \"type\"");
  const std::string type = j["type"];
  std::vector<int32_t> pre, post;
  if (type == "Sequence") {
    if (!j.contains("processors") || !j["processors"].is_array()) fail(where, "Sequence without a \"processors\" list");
    for (const auto& q : j["processors"]) add(q, where, p);
    return;
  } else if (type == "ByteLevel") {
    return;  // only trims offsets
  } else if (type == "TemplateProcessing") {
    if (!j.contains("single") || !j["single"].is_array()) fail(where, "TemplateProcessing without a \"single\" list");
    const auto& specials = j.value("special_tokens", nlohmann::json::object());
    bool seen_a = false;
    for (const auto& piece : j["single"]) {
      if (piece.contains("Sequence")) {
        const std::string id = piece["Sequence"].value("id", std::string());
        if (id != "A" || seen_a) fail(where, "TemplateProcessing \"single\" must hold the sequence $A once");
        seen_a = true;
      } else if (piece.contains("SpecialToken")) {
        const std::string id = piece["SpecialToken"].value("id", std::string());
        if (!specials.contains(id) || !specials[id].contains("ids") || !specials[id]["ids"].is_array())
          fail(where, "TemplateProcessing special token \"" + id + "\" is not in \"special_tokens\"");
        for (const auto& x : specials[id]["ids"]) (seen_a ? post : pre).push_back(x.get<int32_t>());
      } else {
        fail(where, "TemplateProcessing piece " + piece.dump() + " is neither Sequence nor SpecialToken");
      }
    }
    if (!seen_a) fail(where, "TemplateProcessing \"single\" has no $A");
  } else if (type == "BertProcessing" || type == "RobertaProcessing") {
    pre.push_back(token_pair_id(j, "cls", where, type));
    post.push_back(token_pair_id(j, "sep", where, type));
  } else {
    fail(where, "type \"" + type + "\" is not supported (TemplateProcessing, BertProcessing, RobertaProcessing, "
                "ByteLevel, Sequence)");
  }
  pre.insert(pre.end(), p.prefix.begin(), p.prefix.end());
  p.prefix.swap(pre);
  p.suffix.insert(p.suffix.end(), post.begin(), post.end());
}

}  // namespace

PostProcessor PostProcessor::from_json(const nlohmann::json& j, std::string_view where) {
  PostProcessor p;
  add(j, where, p);
  return p;
}

}  // namespace nanovllm
