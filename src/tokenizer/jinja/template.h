// A Jinja template as transformers renders chat templates: parsed once, rendered with a dict of
// variables. The engine behind ChatTemplate; see docs/tokenizer.md for what it supports.
#pragma once
#include <memory>
#include <string>
#include <string_view>

#include "tokenizer/jinja/ast.h"
#include "tokenizer/jinja/error.h"
#include "tokenizer/jinja/value.h"

namespace nanovllm::jinja {

class Template {
 public:
  // `name` says where the text came from, in errors ("models/x/chat_template.jinja").
  // Throws TemplateError on a syntax error, naming the line.
  Template(std::string_view source, std::string name);

  // Throws TemplateError naming the line (raise_exception's message, undefined values used,
  // type errors). Const and stateless between calls: safe to call from several threads.
  std::string render(const Object& variables) const;

  const std::string& name() const { return name_; }

 private:
  std::string name_;
  Body body_;
};

}  // namespace nanovllm::jinja
