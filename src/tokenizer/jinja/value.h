// Value: what Jinja expressions evaluate to, with Python's semantics (transformers renders chat
// templates with Python's Jinja2, so truthiness, str(), repr() and equality are Python's).
// Lists and dicts are immutable once built (transformers' sandbox forbids append, update, ...),
// so they are shared, not copied; a namespace() is the one mutable value and is shared by
// reference, as in Python.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace nanovllm::jinja {

class Value;

// Python's list, or a tuple (`(a, b)`, dict items): the same but for repr() and ==.
struct Array {
  std::vector<Value> items;
  bool is_tuple = false;
};

// Python's dict with string keys, in insertion order (tojson prints keys in that order).
struct Object {
  std::vector<std::pair<std::string, Value>> items;
  const Value* find(std::string_view key) const;
  Value* find(std::string_view key);
  void set(std::string key, Value value);  // replaces, or appends a new key
};

// A call's arguments, positional then keyword, as written.
struct Args {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
};

struct Function {
  std::string name;  // in errors: "raise_exception", "macro 'render_tool'", "str.split"
  std::function<Value(Args&)> call;
};

class Value {
 public:
  enum class Kind : uint8_t { undefined, none, boolean, integer, floating, string, array, object, ns, function };

  Value() = default;  // undefined without a hint
  // Jinja's Undefined: renders as "", is falsy, iterates as empty; any other use throws `hint`
  // ("'x' is undefined", "'dict object' has no attribute 'y'").
  static Value undefined(std::string hint);
  static Value none();
  static Value boolean(bool b);
  static Value integer(int64_t i);
  static Value floating(double d);
  static Value string(std::string s);
  static Value array(std::vector<Value> items, bool is_tuple = false);
  static Value object(Object o);
  static Value ns(Object o);  // namespace(...)
  static Value function(std::string name, std::function<Value(Args&)> call);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::undefined; }
  bool is_none() const { return kind_ == Kind::none; }
  bool is_bool() const { return kind_ == Kind::boolean; }
  bool is_int() const { return kind_ == Kind::integer; }
  bool is_float() const { return kind_ == Kind::floating; }
  bool is_number() const { return kind_ == Kind::integer || kind_ == Kind::floating || kind_ == Kind::boolean; }
  bool is_string() const { return kind_ == Kind::string; }
  bool is_array() const { return kind_ == Kind::array; }
  bool is_object() const { return kind_ == Kind::object; }
  bool is_ns() const { return kind_ == Kind::ns; }
  bool is_function() const { return kind_ == Kind::function; }

  bool as_bool() const { return std::get<bool>(data_); }
  int64_t as_int() const;   // integer or boolean
  double as_float() const;  // any number
  const std::string& as_string() const { return std::get<std::string>(data_); }
  const Array& as_array() const { return *std::get<std::shared_ptr<const Array>>(data_); }
  const Object& as_object() const { return *std::get<std::shared_ptr<Object>>(data_); }  // dict or namespace
  Object& ns_object() const { return *std::get<std::shared_ptr<Object>>(data_); }        // namespace only
  const Function& as_function() const { return *std::get<std::shared_ptr<const Function>>(data_); }
  const std::string& undefined_hint() const;

  bool truthy() const;            // Python's bool()
  std::string str() const;        // Python's str(): what {{ }} prints ("" for undefined)
  std::string repr() const;       // Python's repr(), as inside a printed list or dict
  const char* type_name() const;  // Python's name of the type, for errors: 'str', 'NoneType', ...
  [[noreturn]] void fail_undefined() const;  // throws RenderError(hint)
  bool same(const Value& other) const;        // Python's `is`

 private:
  Kind kind_ = Kind::undefined;
  std::variant<std::monostate, bool, int64_t, double, std::string, std::shared_ptr<const Array>,
               std::shared_ptr<Object>, std::shared_ptr<const Function>>
      data_;
};

}  // namespace nanovllm::jinja
