// Template text to tokens, with Jinja2's whitespace rules as transformers configures them
// (trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False): the first newline after
// a block or comment tag is dropped; spaces and tabs before a block or comment tag that starts
// its line are dropped; `{%-` / `-%}` strip all whitespace on that side; `{%+` / `+%}` turn the
// two options off for that tag; "\r\n" and "\r" read as "\n"; one trailing newline is dropped.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace nanovllm::jinja {

enum class Tok { text, var_begin, var_end, block_begin, block_end, name, string, integer, floating, op, eof };

struct Token {
  Tok type;
  std::string value;  // text, name, decoded string, number's digits, or the operator
  int line;           // 1-based line where the token starts
};

// Throws TemplateError(name, line, ...) on an unterminated tag, comment or string, or a
// character that starts no token.
std::vector<Token> tokenize(std::string_view source, const std::string& name);

}  // namespace nanovllm::jinja
