// Template: lexer, parser and interpreter put together (see template.h).
#include "tokenizer/jinja/template.h"

#include "tokenizer/jinja/interpreter.h"
#include "tokenizer/jinja/lexer.h"
#include "tokenizer/jinja/parser.h"

namespace nanovllm::jinja {

Template::Template(std::string_view source, std::string name)
    : name_(std::move(name)), body_(parse(tokenize(source, name_), name_)) {}

std::string Template::render(const Object& variables) const { return jinja::render(body_, variables, name_); }

}  // namespace nanovllm::jinja
