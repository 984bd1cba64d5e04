// Jinja's operators with Python's semantics: == and < across types, arithmetic with int/float
// promotion, string and list concatenation and repetition, `in`, and `~` (str() both sides).
// Errors read as Python's ("can only concatenate str (not "int") to str").
#pragma once
#include <string_view>

#include "tokenizer/jinja/value.h"

namespace nanovllm::jinja {

bool equals(const Value& a, const Value& b);                   // Python's ==
bool compare(std::string_view op, const Value& a, const Value& b);  // == != < <= > >=
bool contains(const Value& container, const Value& item);       // `item in container`
Value binary_op(std::string_view op, const Value& a, const Value& b);  // + - * / // % ** ~
Value unary_op(char op, const Value& a);                          // '-' or '+'

}  // namespace nanovllm::jinja
