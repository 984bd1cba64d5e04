// Python's string formatting as templates reach it: `fmt % args` (and Jinja's `format` filter,
// which is the same thing) and str.format().
#pragma once
#include <string>

#include "tokenizer/jinja/value.h"

namespace nanovllm::jinja {

// printf-style: %s %r %d %i %f %F %e %E %g %G %x %X %o %c %% with flags, width and precision;
// `args` is a tuple (one value per conversion), a dict (for %(name)s) or a single value.
std::string percent_format(const std::string& fmt, const Value& args);

// str.format(): {} {0} {name} {{ }}, with !s / !r; format specs are refused by name.
std::string brace_format(const std::string& fmt, const Args& args);

}  // namespace nanovllm::jinja
