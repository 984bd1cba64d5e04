// Jinja's builtin filters and tests, and the global functions of transformers' environment
// (range, dict, namespace, raise_exception, strftime_now). Each follows Jinja2 3.1's definition,
// with transformers' own tojson.
#pragma once
#include <string_view>

#include "tokenizer/jinja/value.h"

namespace nanovllm::jinja {

using FilterFn = Value (*)(const Value& value, Args& args);
using TestFn = bool (*)(const Value& value, Args& args);

FilterFn find_filter(std::string_view name);  // nullptr when there is no such filter
TestFn find_test(std::string_view name);
Object make_globals();

// Binds a call's arguments to named parameters as Python does; a parameter not given is null.
// Throws "name() got an unexpected keyword argument 'x'" and the like.
std::vector<const Value*> bind(const char* fn, const Args& args, std::initializer_list<const char*> params);

}  // namespace nanovllm::jinja
