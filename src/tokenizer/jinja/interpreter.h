// Rendering a parsed template: statements write text, expressions evaluate to Values. Scopes
// follow Jinja2's: a for loop's body (each iteration afresh), a macro's body and a with block
// have their own, so `set` inside them is not seen outside (hence namespace()); if blocks do not.
#pragma once
#include <string>

#include "tokenizer/jinja/ast.h"
#include "tokenizer/jinja/value.h"

namespace nanovllm::jinja {

// Renders `body` with `variables` over the globals (make_globals()). Throws TemplateError naming
// `name` and the line of the statement or expression that failed.
std::string render(const Body& body, const Object& variables, const std::string& name);

}  // namespace nanovllm::jinja
