// The parsed template: statements (text, {{ output }}, if, for, set, macro, ...) holding
// expressions. Every node keeps the line it starts on, for errors.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tokenizer/jinja/value.h"

namespace nanovllm::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    literal,  // value
    name,     // name
    list,     // items
    tuple,    // items
    dict,     // items: key, value, key, value, ...
    getattr,  // a.name
    getitem,  // a[b]
    slice,    // a[items[0]:items[1]:items[2]] (each may be null)
    call,     // a(items..., kwargs..., *star, **star_star)
    filter,   // a | name(items..., kwargs...); a is null in {% filter %} and {% set x | f %}
    test,     // a is name(items..., kwargs...)
    unary,    // name ("-", "+", "not") a
    binary,   // a name b: + - * / // % ** ~
    compare,  // items[0] ops[0] items[1] ops[1] items[2] ... (chained, as Python)
    and_,     // a and b
    or_,      // a or b
    cond,     // a if b else c (c may be null: undefined when b is false)
  };
  Kind kind;
  int line;
  Value value;
  std::string name;
  ExprPtr a, b, c;
  std::vector<ExprPtr> items;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  ExprPtr star, star_star;
  std::vector<std::string> ops;

  Expr(Kind k, int l) : kind(k), line(l) {}
};

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

// A macro's (or call block's) parameter: a name and an optional default.
struct Param {
  std::string name;
  ExprPtr default_value;
};

struct Stmt {
  enum class Kind {
    text,          // text
    output,        // {{ expr }}
    if_,           // if expr: body else else_body (an elif is an if_ alone in else_body)
    for_,          // for target in expr [if filter]: body, else else_body
    set,           // set target = expr (target: a name, a tuple of names, or ns.attr)
    set_block,     // set target [| filter] %}body{% endset
    macro,         // macro name(params): body
    call_block,    // call(params) expr: body, seen by the callee as caller()
    filter_block,  // filter filter %}body{% endfilter
    with,          // with targets = values: body
    break_,
    continue_,
    block,         // a body rendered as is: {% generation %} (transformers' assistant-mask tag)
  };
  Kind kind;
  int line;
  std::string text;  // text; the macro's name
  ExprPtr expr, target, filter;
  Body body, else_body;
  std::vector<Param> params;
  std::vector<std::pair<ExprPtr, ExprPtr>> assignments;  // with
  bool uses_varargs = false, uses_kwargs = false, uses_caller = false;  // macro

  Stmt(Kind k, int l) : kind(k), line(l) {}
};

}  // namespace nanovllm::jinja
