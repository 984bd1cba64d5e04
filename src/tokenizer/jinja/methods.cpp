// The Python methods templates call on values: str (strip, split, startswith, ...), dict (items,
// keys, values, get) and list (count, index). Methods that modify a dict or list are refused as
// transformers' ImmutableSandboxedEnvironment refuses them: the attribute is an undefined value
// that fails when called.
#include <utf8proc.h>

#include <algorithm>

#include "tokenizer/jinja/access.h"
#include "tokenizer/jinja/builtins.h"
#include "tokenizer/jinja/error.h"
#include "tokenizer/jinja/format.h"
#include "tokenizer/jinja/operators.h"
#include "tokenizer/jinja/pystr.h"

namespace nanovllm::jinja {
namespace {

using Method = Value (*)(const Value& self, Args& args);

std::string arg_string(const Value* v, const char* what) {
  if (!v->is_string()) throw RenderError(std::string(what) + " must be str, not " + v->type_name());
  return v->as_string();
}

std::optional<std::string> optional_string(const Value* v, const char* what) {
  if (!v || v->is_none()) return std::nullopt;
  return arg_string(v, what);
}

int64_t optional_int(const Value* v, int64_t absent) {
  if (!v || v->is_none()) return absent;
  if (!v->is_int() && !v->is_bool()) throw RenderError(std::string("'") + v->type_name() + "' object cannot be interpreted as an integer");
  return v->as_int();
}

// The code points [start, end) of s, with Python's slice clamping, as a UTF-8 string and the
// code point offset it starts at.
std::pair<std::u32string, int64_t> window(const std::string& s, const Value* start, const Value* end) {
  std::u32string u = pystr::decode(s);
  const int64_t n = static_cast<int64_t>(u.size());
  auto clamp = [n](int64_t i) { return i < 0 ? std::max<int64_t>(i + n, 0) : std::min(i, n); };
  int64_t b = clamp(optional_int(start, 0)), e = clamp(optional_int(end, n));
  if (e < b) e = b;
  return {u.substr(b, e - b), b};
}

Value str_strip(const Value& s, Args& a, bool left, bool right) {
  auto p = bind("strip", a, {"chars"});
  return Value::string(pystr::strip(s.as_string(), optional_string(p[0], "strip arg"), left, right));
}
Value str_split(const Value& s, Args& a, bool from_right) {
  auto p = bind("split", a, {"sep", "maxsplit"});
  std::vector<Value> out;
  for (auto& piece : pystr::split(s.as_string(), optional_string(p[0], "sep"), optional_int(p[1], -1), from_right))
    out.push_back(Value::string(std::move(piece)));
  return Value::array(std::move(out));
}
Value str_affix(const Value& s, Args& a, bool at_start) {
  auto p = bind(at_start ? "startswith" : "endswith", a, {"prefix", "start", "end"});
  if (!p[0]) throw RenderError(std::string(at_start ? "startswith" : "endswith") + "() takes at least 1 argument (0 given)");
  std::vector<std::string> affixes;
  if (p[0]->is_array() && p[0]->as_array().is_tuple) {
    for (const Value& v : p[0]->as_array().items) affixes.push_back(arg_string(&v, "tuple item"));
  } else if (p[0]->is_string()) {
    affixes.push_back(p[0]->as_string());
  } else {
    throw RenderError(std::string(at_start ? "startswith" : "endswith") +
                      " first arg must be str or a tuple of str, not " + p[0]->type_name());
  }
  std::string w = pystr::encode(window(s.as_string(), p[1], p[2]).first);
  for (const std::string& x : affixes) {
    if (x.size() > w.size()) continue;
    if (at_start ? w.compare(0, x.size(), x) == 0 : w.compare(w.size() - x.size(), x.size(), x) == 0)
      return Value::boolean(true);
  }
  return Value::boolean(false);
}
Value str_find(const Value& s, Args& a, bool from_right, bool raise) {
  auto p = bind(from_right ? "rfind" : "find", a, {"sub", "start", "end"});
  if (!p[0]) throw RenderError("find() takes at least 1 argument (0 given)");
  auto [w, offset] = window(s.as_string(), p[1], p[2]);
  std::u32string sub = pystr::decode(arg_string(p[0], "sub"));
  size_t at = from_right ? w.rfind(sub) : w.find(sub);
  if (at == std::u32string::npos) {
    if (raise) throw RenderError("substring not found");
    return Value::integer(-1);
  }
  return Value::integer(static_cast<int64_t>(at) + offset);
}
Value str_count(const Value& s, Args& a) {
  auto p = bind("count", a, {"sub", "start", "end"});
  if (!p[0]) throw RenderError("count() takes at least 1 argument (0 given)");
  std::u32string w = window(s.as_string(), p[1], p[2]).first, sub = pystr::decode(arg_string(p[0], "sub"));
  if (sub.empty()) return Value::integer(static_cast<int64_t>(w.size()) + 1);
  int64_t n = 0;
  for (size_t at = w.find(sub); at != std::u32string::npos; at = w.find(sub, at + sub.size())) ++n;
  return Value::integer(n);
}
Value str_replace(const Value& s, Args& a) {
  auto p = bind("replace", a, {"old", "new", "count"});
  if (!p[0] || !p[1]) throw RenderError("replace() takes at least 2 arguments");
  return Value::string(pystr::replace(s.as_string(), arg_string(p[0], "replace() argument 1"),
                                      arg_string(p[1], "replace() argument 2"), optional_int(p[2], -1)));
}
Value str_join(const Value& s, Args& a) {
  auto p = bind("join", a, {"iterable"});
  if (!p[0]) throw RenderError("join() takes exactly one argument (0 given)");
  std::string out;
  size_t i = 0;
  for (const Value& v : iterate(*p[0])) {
    if (!v.is_string())
      throw RenderError("sequence item " + std::to_string(i) + ": expected str instance, " + v.type_name() + " found");
    if (i++) out += s.as_string();
    out += v.as_string();
  }
  return Value::string(std::move(out));
}
Value str_pad(const Value& s, Args& a, int where) {  // -1 ljust, 0 center, 1 rjust
  auto p = bind(where < 0 ? "ljust" : where == 0 ? "center" : "rjust", a, {"width", "fillchar"});
  int64_t width = optional_int(p[0], 0);
  std::u32string u = pystr::decode(s.as_string());
  std::u32string fill = p[1] ? pystr::decode(arg_string(p[1], "fillchar")) : U" ";
  if (fill.size() != 1) throw RenderError("The fill character must be exactly one character long");
  int64_t marg = width - static_cast<int64_t>(u.size());
  if (marg <= 0) return s;
  int64_t left = where < 0 ? 0 : where > 0 ? marg : marg / 2 + (marg & width & 1);  // CPython's split
  return Value::string(pystr::encode(std::u32string(left, fill[0]) + u + std::u32string(marg - left, fill[0])));
}
Value str_partition(const Value& s, Args& a, bool from_right) {
  auto p = bind("partition", a, {"sep"});
  if (!p[0]) throw RenderError("partition() takes exactly one argument (0 given)");
  std::string sep = arg_string(p[0], "sep");
  if (sep.empty()) throw RenderError("empty separator");
  const std::string& x = s.as_string();
  size_t at = from_right ? x.rfind(sep) : x.find(sep);
  std::vector<Value> parts;
  if (at == std::string::npos) {
    parts = from_right ? std::vector<Value>{Value::string(""), Value::string(""), s}
                       : std::vector<Value>{s, Value::string(""), Value::string("")};
  } else {
    parts = {Value::string(x.substr(0, at)), Value::string(sep), Value::string(x.substr(at + sep.size()))};
  }
  return Value::array(std::move(parts), true);
}
template <bool (*Pred)(char32_t)>
Value str_is(const Value& s, Args& a) {
  bind("is", a, {});
  std::u32string u = pystr::decode(s.as_string());
  if (u.empty()) return Value::boolean(false);
  return Value::boolean(std::all_of(u.begin(), u.end(), Pred));
}
// Python's isdigit / isalpha / isalnum by Unicode category (decimal digits; letters).
bool is_digit(char32_t c) { return utf8proc_category(static_cast<utf8proc_int32_t>(c)) == UTF8PROC_CATEGORY_ND; }
bool is_alpha(char32_t c) {
  auto k = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO;
}
bool is_alnum(char32_t c) { return is_digit(c) || is_alpha(c); }

Value no_args(const char* name, Args& a, Value v) {
  bind(name, a, {});
  return v;
}

Method str_method(const std::string& name) {
  static const std::pair<const char*, Method> kTable[] = {
      {"strip", [](const Value& s, Args& a) { return str_strip(s, a, true, true); }},
      {"lstrip", [](const Value& s, Args& a) { return str_strip(s, a, true, false); }},
      {"rstrip", [](const Value& s, Args& a) { return str_strip(s, a, false, true); }},
      {"split", [](const Value& s, Args& a) { return str_split(s, a, false); }},
      {"rsplit", [](const Value& s, Args& a) { return str_split(s, a, true); }},
      {"splitlines", [](const Value& s, Args& a) {
         auto p = bind("splitlines", a, {"keepends"});
         std::vector<Value> out;
         for (auto& line : pystr::splitlines(s.as_string(), p[0] && p[0]->truthy())) out.push_back(Value::string(line));
         return Value::array(std::move(out));
       }},
      {"startswith", [](const Value& s, Args& a) { return str_affix(s, a, true); }},
      {"endswith", [](const Value& s, Args& a) { return str_affix(s, a, false); }},
      {"find", [](const Value& s, Args& a) { return str_find(s, a, false, false); }},
      {"rfind", [](const Value& s, Args& a) { return str_find(s, a, true, false); }},
      {"index", [](const Value& s, Args& a) { return str_find(s, a, false, true); }},
      {"rindex", [](const Value& s, Args& a) { return str_find(s, a, true, true); }},
      {"count", str_count},
      {"replace", str_replace},
      {"join", str_join},
      {"format", [](const Value& s, Args& a) { return Value::string(brace_format(s.as_string(), a)); }},
      {"upper", [](const Value& s, Args& a) { return no_args("upper", a, Value::string(pystr::upper(s.as_string()))); }},
      {"lower", [](const Value& s, Args& a) { return no_args("lower", a, Value::string(pystr::lower(s.as_string()))); }},
      {"casefold", [](const Value& s, Args& a) { return no_args("casefold", a, Value::string(pystr::lower(s.as_string()))); }},
      {"title", [](const Value& s, Args& a) { return no_args("title", a, Value::string(pystr::title(s.as_string()))); }},
      {"capitalize", [](const Value& s, Args& a) { return no_args("capitalize", a, Value::string(pystr::capitalize(s.as_string()))); }},
      {"swapcase", [](const Value& s, Args& a) { return no_args("swapcase", a, Value::string(pystr::swapcase(s.as_string()))); }},
      {"islower", [](const Value& s, Args& a) { return no_args("islower", a, Value::boolean(pystr::is_lower(s.as_string()))); }},
      {"isupper", [](const Value& s, Args& a) { return no_args("isupper", a, Value::boolean(pystr::is_upper(s.as_string()))); }},
      {"isspace", str_is<pystr::is_space>},
      {"isdigit", str_is<is_digit>},
      {"isdecimal", str_is<is_digit>},
      {"isnumeric", str_is<is_digit>},
      {"isalpha", str_is<is_alpha>},
      {"isalnum", str_is<is_alnum>},
      {"ljust", [](const Value& s, Args& a) { return str_pad(s, a, -1); }},
      {"center", [](const Value& s, Args& a) { return str_pad(s, a, 0); }},
      {"rjust", [](const Value& s, Args& a) { return str_pad(s, a, 1); }},
      {"partition", [](const Value& s, Args& a) { return str_partition(s, a, false); }},
      {"rpartition", [](const Value& s, Args& a) { return str_partition(s, a, true); }},
      {"removeprefix", [](const Value& s, Args& a) {
         auto p = bind("removeprefix", a, {"prefix"});
         std::string x = p[0] ? arg_string(p[0], "prefix") : "";
         const std::string& v = s.as_string();
         return v.compare(0, x.size(), x) == 0 ? Value::string(v.substr(x.size())) : s;
       }},
      {"removesuffix", [](const Value& s, Args& a) {
         auto p = bind("removesuffix", a, {"suffix"});
         std::string x = p[0] ? arg_string(p[0], "suffix") : "";
         const std::string& v = s.as_string();
         return !x.empty() && v.size() >= x.size() && v.compare(v.size() - x.size(), x.size(), x) == 0
                    ? Value::string(v.substr(0, v.size() - x.size()))
                    : s;
       }},
  };
  for (const auto& [n, m] : kTable)
    if (name == n) return m;
  return nullptr;
}

Value dict_items(const Value& d, Args& a) {
  bind("items", a, {});
  std::vector<Value> out;
  for (const auto& [k, v] : d.as_object().items) out.push_back(Value::array({Value::string(k), v}, true));
  return Value::array(std::move(out));
}

Method dict_method(const std::string& name) {
  static const std::pair<const char*, Method> kTable[] = {
      {"items", dict_items},
      {"keys", [](const Value& d, Args& a) {
         bind("keys", a, {});
         std::vector<Value> out;
         for (const auto& kv : d.as_object().items) out.push_back(Value::string(kv.first));
         return Value::array(std::move(out));
       }},
      {"values", [](const Value& d, Args& a) {
         bind("values", a, {});
         std::vector<Value> out;
         for (const auto& kv : d.as_object().items) out.push_back(kv.second);
         return Value::array(std::move(out));
       }},
      {"get", [](const Value& d, Args& a) {
         auto p = bind("get", a, {"key", "default"});
         if (!p[0]) throw RenderError("get expected at least 1 argument, got 0");
         const Value* v = p[0]->is_string() ? d.as_object().find(p[0]->as_string()) : nullptr;
         return v ? *v : p[1] ? *p[1] : Value::none();
       }},
      {"copy", [](const Value& d, Args& a) { return no_args("copy", a, d); }},
  };
  for (const auto& [n, m] : kTable)
    if (name == n) return m;
  return nullptr;
}

Method list_method(const std::string& name) {
  static const std::pair<const char*, Method> kTable[] = {
      {"count", [](const Value& l, Args& a) {
         auto p = bind("count", a, {"value"});
         if (!p[0]) throw RenderError("count() takes exactly one argument (0 given)");
         int64_t n = 0;
         for (const Value& v : l.as_array().items) n += equals(v, *p[0]);
         return Value::integer(n);
       }},
      {"index", [](const Value& l, Args& a) {
         auto p = bind("index", a, {"value"});
         if (!p[0]) throw RenderError("index expected at least 1 argument, got 0");
         const auto& items = l.as_array().items;
         for (size_t i = 0; i < items.size(); ++i)
           if (equals(items[i], *p[0])) return Value::integer(static_cast<int64_t>(i));
         throw RenderError(p[0]->repr() + " is not in list");
       }},
      {"copy", [](const Value& l, Args& a) { return no_args("copy", a, l); }},
  };
  for (const auto& [n, m] : kTable)
    if (name == n) return m;
  return nullptr;
}

bool is_mutator(const Value& obj, const std::string& name) {
  static const char* const kDict[] = {"clear", "pop", "popitem", "setdefault", "update"};
  static const char* const kList[] = {"append", "extend", "insert", "pop", "remove", "reverse", "sort", "clear"};
  if (obj.is_object()) return std::find(std::begin(kDict), std::end(kDict), name) != std::end(kDict);
  if (obj.is_array() && !obj.as_array().is_tuple) return std::find(std::begin(kList), std::end(kList), name) != std::end(kList);
  return false;
}

}  // namespace

std::optional<Value> method(const Value& obj, const std::string& name) {
  if (is_mutator(obj, name))
    return Value::undefined("access to attribute '" + name + "' of '" + obj.type_name() + "' object is unsafe.");
  Method m = obj.is_string() ? str_method(name)
             : obj.is_object() ? dict_method(name)
             : obj.is_array() ? list_method(name)
                              : nullptr;
  if (!m) return std::nullopt;
  std::string qualified = std::string(obj.type_name()) + "." + name;
  return Value::function(qualified, [obj, m](Args& a) { return m(obj, a); });
}

}  // namespace nanovllm::jinja
