// Tokens to statements and expressions, with Jinja2's grammar and precedence:
//   a if b else c  <  or  <  and  <  not  <  comparisons, in, not in (chained)  <  + -  <  ~
//   <  * / // %  <  **  <  unary - +  <  primary with .attr [index] (call) | filter  is test
// Unknown tags, filters and tests are errors here, as in Jinja2, each naming its line.
#pragma once
#include <string>
#include <vector>

#include "tokenizer/jinja/ast.h"
#include "tokenizer/jinja/lexer.h"

namespace nanovllm::jinja {

Body parse(const std::vector<Token>& tokens, const std::string& name);

}  // namespace nanovllm::jinja
