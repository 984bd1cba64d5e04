// Attribute, item and slice access, and iteration (see access.h).
#include "tokenizer/jinja/access.h"

#include "tokenizer/jinja/error.h"
#include "tokenizer/jinja/pystr.h"

namespace nanovllm::jinja {
namespace {

// Jinja2's object_type_repr(): how undefined values name the object they came from.
std::string object_type(const Value& v) {
  if (v.is_none()) return "None";
  if (v.is_ns()) return "jinja2.utils.Namespace object";
  return std::string(v.type_name()) + " object";
}

Value no_attribute(const Value& obj, const std::string& name) {
  return Value::undefined(pystr::repr(object_type(obj)) + " has no attribute " + pystr::repr(name));
}

Value no_element(const Value& obj, const Value& key) {
  return Value::undefined(object_type(obj) + " has no element " + key.repr());
}

// Python's index of a sequence of n items, or -1 when out of range.
int64_t resolve_index(int64_t i, size_t n) {
  if (i < 0) i += static_cast<int64_t>(n);
  return i >= 0 && i < static_cast<int64_t>(n) ? i : -1;
}

}  // namespace

Value get_attr(const Value& obj, const std::string& name) {
  switch (obj.kind()) {
    case Value::Kind::undefined: obj.fail_undefined();
    case Value::Kind::ns:
      if (const Value* v = obj.as_object().find(name)) return *v;
      return no_attribute(obj, name);
    case Value::Kind::object:
      if (auto m = method(obj, name)) return *m;  // d.items is the method even with an "items" key
      if (const Value* v = obj.as_object().find(name)) return *v;
      return no_attribute(obj, name);
    default:
      if (auto m = method(obj, name)) return *m;
      return no_attribute(obj, name);
  }
}

Value get_item(const Value& obj, const Value& key) {
  switch (obj.kind()) {
    case Value::Kind::undefined: obj.fail_undefined();
    case Value::Kind::object: case Value::Kind::ns:
      if (key.is_string()) {
        if (const Value* v = obj.as_object().find(key.as_string())) return *v;
        if (obj.is_object())
          if (auto m = method(obj, key.as_string())) return *m;
        return no_attribute(obj, key.as_string());
      }
      return no_element(obj, key);
    case Value::Kind::array:
      if (key.is_int() || key.is_bool()) {
        const auto& items = obj.as_array().items;
        int64_t i = resolve_index(key.as_int(), items.size());
        return i < 0 ? no_element(obj, key) : items[i];
      }
      break;
    case Value::Kind::string:
      if (key.is_int() || key.is_bool()) {
        std::u32string u = pystr::decode(obj.as_string());
        int64_t i = resolve_index(key.as_int(), u.size());
        return i < 0 ? no_element(obj, key) : Value::string(pystr::encode(u.substr(i, 1)));
      }
      break;
    default: break;
  }
  if (key.is_string()) {  // Jinja2 falls back to the attribute: 'abc'['upper']
    if (auto m = method(obj, key.as_string())) return *m;
    return no_attribute(obj, key.as_string());
  }
  return no_element(obj, key);
}

Value get_slice(const Value& obj, const Value* start, const Value* stop, const Value* step) {
  if (obj.is_undefined()) obj.fail_undefined();
  auto bound = [](const Value* v, int64_t absent) -> int64_t {
    if (!v || v->is_none()) return absent;
    if (v->is_undefined()) v->fail_undefined();
    if (!v->is_int() && !v->is_bool())
      throw RenderError("slice indices must be integers or None or have an __index__ method");
    return v->as_int();
  };
  int64_t st = bound(step, 1);
  if (st == 0) throw RenderError("slice step cannot be zero");
  std::u32string chars;
  size_t n;
  if (obj.is_string()) chars = pystr::decode(obj.as_string()), n = chars.size();
  else if (obj.is_array()) n = obj.as_array().items.size();
  else return Value::undefined(object_type(obj) + " cannot be sliced");
  const int64_t len = static_cast<int64_t>(n);
  // Python's PySlice_AdjustIndices.
  auto adjust = [&](int64_t i) {
    if (i < 0) {
      i += len;
      if (i < 0) i = st < 0 ? -1 : 0;
    } else if (i >= len) {
      i = st < 0 ? len - 1 : len;
    }
    return i;
  };
  int64_t b = start && !start->is_none() ? adjust(bound(start, 0)) : (st < 0 ? len - 1 : 0);
  int64_t e = stop && !stop->is_none() ? adjust(bound(stop, 0)) : (st < 0 ? -1 : len);
  std::vector<size_t> picked;
  for (int64_t i = b; st > 0 ? i < e : i > e; i += st) picked.push_back(static_cast<size_t>(i));
  if (obj.is_string()) {
    std::u32string out;
    for (size_t i : picked) out += chars[i];
    return Value::string(pystr::encode(out));
  }
  std::vector<Value> out;
  for (size_t i : picked) out.push_back(obj.as_array().items[i]);
  return Value::array(std::move(out), obj.as_array().is_tuple);
}

std::vector<Value> iterate(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::undefined: return {};
    case Value::Kind::array: return v.as_array().items;
    case Value::Kind::object: {
      std::vector<Value> keys;
      for (const auto& kv : v.as_object().items) keys.push_back(Value::string(kv.first));
      return keys;
    }
    case Value::Kind::string: {
      std::vector<Value> chars;
      for (char32_t c : pystr::decode(v.as_string())) chars.push_back(Value::string(pystr::encode(std::u32string(1, c))));
      return chars;
    }
    default: throw RenderError(std::string("'") + v.type_name() + "' object is not iterable");
  }
}

}  // namespace nanovllm::jinja
