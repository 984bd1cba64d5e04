// Jinja2 3.1's builtin tests (jinja2/tests.py): `x is defined`, `x is string`, ... with Python's
// notion of types (a bool is a number but not an integer; an undefined value is iterable).
#include "tokenizer/jinja/builtins.h"
#include "tokenizer/jinja/error.h"
#include "tokenizer/jinja/operators.h"
#include "tokenizer/jinja/pystr.h"

namespace nanovllm::jinja {
namespace {

const Value& other(const char* test, Args& a) {
  auto p = bind(test, a, {"other"});
  if (!p[0]) throw RenderError(std::string(test) + "() missing 1 required positional argument");
  return *p[0];
}

bool no_args(const char* test, Args& a) {
  bind(test, a, {});
  return true;
}

int64_t int_operand(const char* test, const Value& v) {
  if (v.is_undefined()) v.fail_undefined();
  if (!v.is_number()) throw RenderError(std::string("test '") + test + "' needs a number, not " + v.type_name());
  return v.is_float() ? static_cast<int64_t>(v.as_float()) : v.as_int();
}

const std::pair<const char*, TestFn> kTests[] = {
    {"defined", [](const Value& v, Args& a) { return no_args("defined", a) && !v.is_undefined(); }},
    {"undefined", [](const Value& v, Args& a) { return no_args("undefined", a) && v.is_undefined(); }},
    {"none", [](const Value& v, Args& a) { return no_args("none", a) && v.is_none(); }},
    {"boolean", [](const Value& v, Args& a) { return no_args("boolean", a) && v.is_bool(); }},
    {"false", [](const Value& v, Args& a) { return no_args("false", a) && v.is_bool() && !v.as_bool(); }},
    {"true", [](const Value& v, Args& a) { return no_args("true", a) && v.is_bool() && v.as_bool(); }},
    {"integer", [](const Value& v, Args& a) { return no_args("integer", a) && v.is_int(); }},
    {"float", [](const Value& v, Args& a) { return no_args("float", a) && v.is_float(); }},
    {"number", [](const Value& v, Args& a) { return no_args("number", a) && v.is_number(); }},
    {"string", [](const Value& v, Args& a) { return no_args("string", a) && v.is_string(); }},
    {"mapping", [](const Value& v, Args& a) { return no_args("mapping", a) && v.is_object(); }},
    {"iterable", [](const Value& v, Args& a) {
       return no_args("iterable", a) && (v.is_undefined() || v.is_array() || v.is_object() || v.is_string());
     }},
    {"sequence", [](const Value& v, Args& a) {
       return no_args("sequence", a) && (v.is_undefined() || v.is_array() || v.is_object() || v.is_string());
     }},
    {"callable", [](const Value& v, Args& a) { return no_args("callable", a) && v.is_function(); }},
    {"escaped", [](const Value&, Args& a) { return no_args("escaped", a) && false; }},
    {"lower", [](const Value& v, Args& a) { return no_args("lower", a) && pystr::is_lower(v.str()); }},
    {"upper", [](const Value& v, Args& a) { return no_args("upper", a) && pystr::is_upper(v.str()); }},
    {"odd", [](const Value& v, Args& a) { return no_args("odd", a) && (int_operand("odd", v) % 2 != 0); }},
    {"even", [](const Value& v, Args& a) { return no_args("even", a) && (int_operand("even", v) % 2 == 0); }},
    {"divisibleby", [](const Value& v, Args& a) {
       const Value& n = other("divisibleby", a);
       return equals(binary_op("%", v, n), Value::integer(0));
     }},
    {"sameas", [](const Value& v, Args& a) { return v.same(other("sameas", a)); }},
    {"in", [](const Value& v, Args& a) { return contains(other("in", a), v); }},
    {"eq", [](const Value& v, Args& a) { return compare("==", v, other("eq", a)); }},
    {"equalto", [](const Value& v, Args& a) { return compare("==", v, other("equalto", a)); }},
    {"==", [](const Value& v, Args& a) { return compare("==", v, other("==", a)); }},
    {"ne", [](const Value& v, Args& a) { return compare("!=", v, other("ne", a)); }},
    {"!=", [](const Value& v, Args& a) { return compare("!=", v, other("!=", a)); }},
    {"lt", [](const Value& v, Args& a) { return compare("<", v, other("lt", a)); }},
    {"lessthan", [](const Value& v, Args& a) { return compare("<", v, other("lessthan", a)); }},
    {"<", [](const Value& v, Args& a) { return compare("<", v, other("<", a)); }},
    {"le", [](const Value& v, Args& a) { return compare("<=", v, other("le", a)); }},
    {"<=", [](const Value& v, Args& a) { return compare("<=", v, other("<=", a)); }},
    {"gt", [](const Value& v, Args& a) { return compare(">", v, other("gt", a)); }},
    {"greaterthan", [](const Value& v, Args& a) { return compare(">", v, other("greaterthan", a)); }},
    {">", [](const Value& v, Args& a) { return compare(">", v, other(">", a)); }},
    {"ge", [](const Value& v, Args& a) { return compare(">=", v, other("ge", a)); }},
    {">=", [](const Value& v, Args& a) { return compare(">=", v, other(">=", a)); }},
    {"filter", [](const Value& v, Args& a) { return no_args("filter", a) && v.is_string() && find_filter(v.as_string()); }},
    {"test", [](const Value& v, Args& a) { return no_args("test", a) && v.is_string() && find_test(v.as_string()); }},
};

}  // namespace

TestFn find_test(std::string_view name) {
  for (const auto& [n, t] : kTests)
    if (name == n) return t;
  return nullptr;
}

}  // namespace nanovllm::jinja
