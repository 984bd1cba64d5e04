// The two errors of the Jinja engine: TemplateError (what callers see: syntax and render errors,
// naming the template and the line) and RenderError (thrown by values and builtins, which do not
// know the line; the interpreter turns it into a TemplateError at the node being evaluated).
#pragma once
#include <stdexcept>
#include <string>

namespace nanovllm::jinja {

class TemplateError : public std::runtime_error {
 public:
  TemplateError(const std::string& name, int line, const std::string& message)
      : std::runtime_error(name + ", line " + std::to_string(line) + ": " + message),
        name_(name), line_(line), message_(message) {}
  const std::string& name() const { return name_; }  // the template's file (or a description)
  int line() const { return line_; }                  // 1-based line in the template's text
  const std::string& message() const { return message_; }

 private:
  std::string name_;
  int line_;
  std::string message_;
};

class RenderError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace nanovllm::jinja
