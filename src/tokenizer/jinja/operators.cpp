// Python's operator semantics over Value (see operators.h).
#include "tokenizer/jinja/operators.h"

#include <cmath>
#include <string>

#include "tokenizer/jinja/error.h"
#include "tokenizer/jinja/format.h"

namespace nanovllm::jinja {
namespace {

std::string quoted(const Value& v) { return std::string("'") + v.type_name() + "'"; }

[[noreturn]] void unsupported(std::string_view op, const Value& a, const Value& b) {
  throw RenderError("unsupported operand type(s) for " + std::string(op) + ": " + quoted(a) + " and " + quoted(b));
}

void check_defined(const Value& a, const Value& b) {
  if (a.is_undefined()) a.fail_undefined();
  if (b.is_undefined()) b.fail_undefined();
}

bool both_int(const Value& a, const Value& b) { return !a.is_float() && !b.is_float(); }

// Python's floor division and modulo: the quotient rounds down, the remainder takes the sign of b.
int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}
double float_mod(double a, double b) {
  double m = std::fmod(a, b);
  if (m != 0 && ((m < 0) != (b < 0))) m += b;
  return m;
}

Value repeat(const Value& seq, int64_t n) {
  if (seq.is_string()) {
    std::string out;
    for (int64_t i = 0; i < n; ++i) out += seq.as_string();
    return Value::string(std::move(out));
  }
  std::vector<Value> out;
  for (int64_t i = 0; i < n; ++i) out.insert(out.end(), seq.as_array().items.begin(), seq.as_array().items.end());
  return Value::array(std::move(out), seq.as_array().is_tuple);
}

Value power(const Value& a, const Value& b) {
  if (both_int(a, b) && b.as_int() >= 0) {
    int64_t base = a.as_int(), result = 1;
    for (int64_t e = b.as_int(); e > 0; e >>= 1, base *= base)
      if (e & 1) result *= base;
    return Value::integer(result);
  }
  if (a.as_float() == 0 && b.as_float() < 0) throw RenderError("0.0 cannot be raised to a negative power");
  return Value::floating(std::pow(a.as_float(), b.as_float()));
}

bool less(const Value& a, const Value& b, std::string_view op) {
  if (a.is_undefined()) a.fail_undefined();
  if (b.is_undefined()) b.fail_undefined();
  if (a.is_number() && b.is_number()) return both_int(a, b) ? a.as_int() < b.as_int() : a.as_float() < b.as_float();
  if (a.is_string() && b.is_string()) return a.as_string() < b.as_string();  // UTF-8 order is code point order
  if (a.is_array() && b.is_array() && a.as_array().is_tuple == b.as_array().is_tuple) {
    const auto &x = a.as_array().items, &y = b.as_array().items;
    for (size_t i = 0; i < x.size() && i < y.size(); ++i)
      if (!equals(x[i], y[i])) return less(x[i], y[i], op);
    return x.size() < y.size();
  }
  throw RenderError("'" + std::string(op) + "' not supported between instances of " + quoted(a) + " and " + quoted(b));
}

}  // namespace

bool equals(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) return both_int(a, b) ? a.as_int() == b.as_int() : a.as_float() == b.as_float();
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case Value::Kind::undefined: case Value::Kind::none: return true;  // Jinja: Undefined == Undefined
    case Value::Kind::string: return a.as_string() == b.as_string();
    case Value::Kind::array: {
      const Array &x = a.as_array(), &y = b.as_array();
      if (x.is_tuple != y.is_tuple || x.items.size() != y.items.size()) return false;
      for (size_t i = 0; i < x.items.size(); ++i)
        if (!equals(x.items[i], y.items[i])) return false;
      return true;
    }
    case Value::Kind::object: {
      const Object &x = a.as_object(), &y = b.as_object();
      if (x.items.size() != y.items.size()) return false;
      for (const auto& [k, v] : x.items) {
        const Value* w = y.find(k);
        if (!w || !equals(v, *w)) return false;
      }
      return true;
    }
    default: return a.same(b);
  }
}

bool compare(std::string_view op, const Value& a, const Value& b) {
  if (op == "==") return equals(a, b);
  if (op == "!=") return !equals(a, b);
  if (op == "<") return less(a, b, op);
  if (op == ">") return less(b, a, op);
  if (op == "<=") return less(a, b, op) || equals(a, b);
  if (op == ">=") return less(b, a, op) || equals(a, b);
  throw RenderError("unknown comparison " + std::string(op));
}

bool contains(const Value& c, const Value& item) {
  switch (c.kind()) {
    case Value::Kind::undefined: return false;  // Jinja's Undefined iterates as empty
    case Value::Kind::string:
      if (!item.is_string())
        throw RenderError(std::string("'in <string>' requires string as left operand, not ") + item.type_name());
      return c.as_string().find(item.as_string()) != std::string::npos;
    case Value::Kind::array:
      for (const Value& v : c.as_array().items)
        if (equals(v, item)) return true;
      return false;
    case Value::Kind::object:
      return item.is_string() && c.as_object().find(item.as_string()) != nullptr;
    default:
      throw RenderError(std::string("argument of type ") + quoted(c) + " is not iterable");
  }
}

Value binary_op(std::string_view op, const Value& a, const Value& b) {
  if (op == "~") return Value::string(a.str() + b.str());
  check_defined(a, b);
  const bool numbers = a.is_number() && b.is_number();
  if (op == "+") {
    if (numbers)
      return both_int(a, b) ? Value::integer(a.as_int() + b.as_int()) : Value::floating(a.as_float() + b.as_float());
    if (a.is_string() && b.is_string()) return Value::string(a.as_string() + b.as_string());
    if (a.is_string())
      throw RenderError(std::string("can only concatenate str (not \"") + b.type_name() + "\") to str");
    if (a.is_array() && b.is_array() && a.as_array().is_tuple == b.as_array().is_tuple) {
      std::vector<Value> out = a.as_array().items;
      out.insert(out.end(), b.as_array().items.begin(), b.as_array().items.end());
      return Value::array(std::move(out), a.as_array().is_tuple);
    }
    if (a.is_array())
      throw RenderError(std::string("can only concatenate ") + a.type_name() + " (not \"" + b.type_name() + "\") to " +
                        a.type_name());
    unsupported(op, a, b);
  }
  if (op == "*") {
    if (numbers)
      return both_int(a, b) ? Value::integer(a.as_int() * b.as_int()) : Value::floating(a.as_float() * b.as_float());
    if ((a.is_string() || a.is_array()) && (b.is_int() || b.is_bool())) return repeat(a, b.as_int());
    if ((b.is_string() || b.is_array()) && (a.is_int() || a.is_bool())) return repeat(b, a.as_int());
    unsupported(op, a, b);
  }
  if (op == "%" && a.is_string()) return Value::string(percent_format(a.as_string(), b));
  if (!numbers) unsupported(op, a, b);
  if (op == "-")
    return both_int(a, b) ? Value::integer(a.as_int() - b.as_int()) : Value::floating(a.as_float() - b.as_float());
  if (op == "**") return power(a, b);
  if (b.as_float() == 0) {
    if (op == "/") throw RenderError("division by zero");
    throw RenderError(both_int(a, b) ? "integer division or modulo by zero" : "float division by zero");
  }
  if (op == "/") return Value::floating(a.as_float() / b.as_float());
  if (op == "//")
    return both_int(a, b) ? Value::integer(floor_div(a.as_int(), b.as_int()))
                          : Value::floating(std::floor(a.as_float() / b.as_float()));
  if (op == "%")
    return both_int(a, b) ? Value::integer(a.as_int() - floor_div(a.as_int(), b.as_int()) * b.as_int())
                          : Value::floating(float_mod(a.as_float(), b.as_float()));
  throw RenderError("unknown operator " + std::string(op));
}

Value unary_op(char op, const Value& a) {
  if (a.is_undefined()) a.fail_undefined();
  if (!a.is_number())
    throw RenderError(std::string("bad operand type for unary ") + op + ": " + quoted(a));
  if (a.is_float()) return Value::floating(op == '-' ? -a.as_float() : a.as_float());
  return Value::integer(op == '-' ? -a.as_int() : a.as_int());
}

}  // namespace nanovllm::jinja
