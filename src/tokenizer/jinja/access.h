// Reading values as Jinja2's sandboxed environment does: `obj.name` tries the Python attribute
// (a str, dict or list method) before the dict key, `obj[key]` the key before the attribute;
// a missing one is an undefined value saying what was missing. Methods that would modify a list
// or dict are refused as transformers' ImmutableSandboxedEnvironment refuses them.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "tokenizer/jinja/value.h"

namespace nanovllm::jinja {

Value get_attr(const Value& obj, const std::string& name);  // obj.name
Value get_item(const Value& obj, const Value& key);         // obj[key]
// obj[start:stop:step] on a list or string (Python's slice rules); null bounds are absent.
Value get_slice(const Value& obj, const Value* start, const Value* stop, const Value* step);
// What `for x in v` visits: list items, dict keys, string characters; nothing for undefined.
std::vector<Value> iterate(const Value& v);
// A bound str/dict/list method (`'a b'.split`), or nothing when the type has no such method.
std::optional<Value> method(const Value& obj, const std::string& name);

}  // namespace nanovllm::jinja
