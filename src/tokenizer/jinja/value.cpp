// Value's Python behaviour: truthiness, str(), repr(), type names (see value.h).
#include "tokenizer/jinja/value.h"

#include "tokenizer/jinja/error.h"
#include "tokenizer/jinja/pystr.h"

namespace nanovllm::jinja {

const Value* Object::find(std::string_view key) const {
  for (const auto& [k, v] : items)
    if (k == key) return &v;
  return nullptr;
}

Value* Object::find(std::string_view key) {
  for (auto& [k, v] : items)
    if (k == key) return &v;
  return nullptr;
}

void Object::set(std::string key, Value value) {
  if (Value* v = find(key)) {
    *v = std::move(value);
    return;
  }
  items.emplace_back(std::move(key), std::move(value));
}

Value Value::undefined(std::string hint) {
  Value v;
  v.data_ = std::move(hint);
  return v;
}
Value Value::none() {
  Value v;
  v.kind_ = Kind::none;
  return v;
}
Value Value::boolean(bool b) {
  Value v;
  v.kind_ = Kind::boolean;
  v.data_ = b;
  return v;
}
Value Value::integer(int64_t i) {
  Value v;
  v.kind_ = Kind::integer;
  v.data_ = i;
  return v;
}
Value Value::floating(double d) {
  Value v;
  v.kind_ = Kind::floating;
  v.data_ = d;
  return v;
}
Value Value::string(std::string s) {
  Value v;
  v.kind_ = Kind::string;
  v.data_ = std::move(s);
  return v;
}
Value Value::array(std::vector<Value> items, bool is_tuple) {
  Value v;
  v.kind_ = Kind::array;
  v.data_ = std::shared_ptr<const Array>(std::make_shared<Array>(Array{std::move(items), is_tuple}));
  return v;
}
Value Value::object(Object o) {
  Value v;
  v.kind_ = Kind::object;
  v.data_ = std::make_shared<Object>(std::move(o));
  return v;
}
Value Value::ns(Object o) {
  Value v = object(std::move(o));
  v.kind_ = Kind::ns;
  return v;
}
Value Value::function(std::string name, std::function<Value(Args&)> call) {
  Value v;
  v.kind_ = Kind::function;
  v.data_ = std::shared_ptr<const Function>(std::make_shared<Function>(Function{std::move(name), std::move(call)}));
  return v;
}

int64_t Value::as_int() const { return kind_ == Kind::boolean ? std::get<bool>(data_) : std::get<int64_t>(data_); }

double Value::as_float() const {
  return kind_ == Kind::floating ? std::get<double>(data_) : static_cast<double>(as_int());
}

const std::string& Value::undefined_hint() const {
  static const std::string kNoHint = "value is undefined";
  const std::string* s = std::get_if<std::string>(&data_);
  return s && !s->empty() ? *s : kNoHint;
}

void Value::fail_undefined() const { throw RenderError(undefined_hint()); }

bool Value::truthy() const {
  switch (kind_) {
    case Kind::undefined: case Kind::none: return false;
    case Kind::boolean: return as_bool();
    case Kind::integer: return as_int() != 0;
    case Kind::floating: return as_float() != 0.0;
    case Kind::string: return !as_string().empty();
    case Kind::array: return !as_array().items.empty();
    case Kind::object: return !as_object().items.empty();
    case Kind::ns: case Kind::function: return true;
  }
  return false;
}

std::string Value::str() const {
  switch (kind_) {
    case Kind::undefined: return "";
    case Kind::string: return as_string();
    default: return repr();
  }
}

std::string Value::repr() const {
  switch (kind_) {
    case Kind::undefined: return "Undefined";
    case Kind::none: return "None";
    case Kind::boolean: return as_bool() ? "True" : "False";
    case Kind::integer: return std::to_string(as_int());
    case Kind::floating: return pystr::float_repr(as_float());
    case Kind::string: return pystr::repr(as_string());
    case Kind::array: {
      const Array& a = as_array();
      std::string out = a.is_tuple ? "(" : "[";
      for (size_t i = 0; i < a.items.size(); ++i) out += (i ? ", " : "") + a.items[i].repr();
      if (a.is_tuple && a.items.size() == 1) out += ",";
      return out + (a.is_tuple ? ")" : "]");
    }
    case Kind::object: case Kind::ns: {
      std::string out = kind_ == Kind::ns ? "<Namespace {" : "{";
      const Object& o = as_object();
      for (size_t i = 0; i < o.items.size(); ++i)
        out += (i ? ", " : "") + pystr::repr(o.items[i].first) + ": " + o.items[i].second.repr();
      return out + (kind_ == Kind::ns ? "}>" : "}");
    }
    case Kind::function: return "<function " + as_function().name + ">";
  }
  return "";
}

const char* Value::type_name() const {
  switch (kind_) {
    case Kind::undefined: return "Undefined";
    case Kind::none: return "NoneType";
    case Kind::boolean: return "bool";
    case Kind::integer: return "int";
    case Kind::floating: return "float";
    case Kind::string: return "str";
    case Kind::array: return as_array().is_tuple ? "tuple" : "list";
    case Kind::object: return "dict";
    case Kind::ns: return "Namespace";
    case Kind::function: return "function";
  }
  return "?";
}

bool Value::same(const Value& o) const {
  if (kind_ != o.kind_) return false;
  switch (kind_) {
    case Kind::undefined: case Kind::none: return true;
    case Kind::boolean: return as_bool() == o.as_bool();
    case Kind::integer: return as_int() == o.as_int();  // CPython caches small ints; close enough
    case Kind::floating: return false;
    case Kind::string: return as_string() == o.as_string();
    case Kind::array: return &as_array() == &o.as_array();
    case Kind::object: case Kind::ns: return &as_object() == &o.as_object();
    case Kind::function: return &as_function() == &o.as_function();
  }
  return false;
}

}  // namespace nanovllm::jinja
