// Jinja2 3.1's builtin filters (jinja2/filters.py) that chat templates use, with transformers'
// tojson. Filters that print a value use Python's str() of it; "case_sensitive=False" sorts and
// compares lowercased strings, as Jinja2 does.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "tokenizer/jinja/access.h"
#include "tokenizer/jinja/builtins.h"
#include "tokenizer/jinja/error.h"
#include "tokenizer/jinja/format.h"
#include "tokenizer/jinja/json.h"
#include "tokenizer/jinja/operators.h"
#include "tokenizer/jinja/pystr.h"

namespace nanovllm::jinja {
namespace {

bool flag(const Value* v, bool absent) { return v ? v->truthy() : absent; }

int64_t int_arg(const Value* v, int64_t absent, const char* what) {
  if (!v) return absent;
  if (!v->is_int() && !v->is_bool()) throw RenderError(std::string(what) + " must be an integer, not " + v->type_name());
  return v->as_int();
}

// Jinja2's make_attrgetter: "a.b.0" read with obj[...] one part at a time; `fallback` replaces
// an undefined result.
Value attribute_of(const Value& item, const Value& attribute, const Value* fallback = nullptr) {
  Value v = item;
  if (attribute.is_int()) {
    v = get_item(v, attribute);
  } else {
    for (const std::string& part : pystr::split(attribute.str(), std::string("."), -1, false)) {
      bool digits = !part.empty() && std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; });
      v = get_item(v, digits ? Value::integer(std::stoll(part)) : Value::string(part));
      if (fallback && v.is_undefined()) v = *fallback;
    }
  }
  return v;
}

// The sort key: the attribute (when given), lowercased when not case sensitive.
Value sort_key(const Value& item, const Value* attribute, bool case_sensitive) {
  Value v = attribute && !attribute->is_none() ? attribute_of(item, *attribute) : item;
  if (!case_sensitive && v.is_string()) return Value::string(pystr::lower(v.as_string()));
  return v;
}

bool less(const Value& a, const Value& b) { return compare("<", a, b); }

Value f_abs(const Value& v, Args& a) {
  bind("abs", a, {});
  if (!v.is_number()) throw RenderError(std::string("bad operand type for abs(): '") + v.type_name() + "'");
  return v.is_float() ? Value::floating(std::fabs(v.as_float())) : Value::integer(std::llabs(v.as_int()));
}

Value f_attr(const Value& v, Args& a) {
  auto p = bind("attr", a, {"name"});
  if (!p[0]) throw RenderError("attr() missing 1 required positional argument: 'name'");
  if (auto m = method(v, p[0]->str())) return *m;
  if (v.is_ns())
    if (const Value* x = v.as_object().find(p[0]->str())) return *x;
  std::string hint = "'";
  hint += v.type_name();
  hint += " object' has no attribute " + pystr::repr(p[0]->str());
  return Value::undefined(std::move(hint));
}

Value f_capitalize(const Value& v, Args& a) {
  bind("capitalize", a, {});
  return Value::string(pystr::capitalize(v.str()));
}

Value f_center(const Value& v, Args& a) {
  auto p = bind("center", a, {"width"});
  Args args;
  args.positional.push_back(Value::integer(int_arg(p[0], 80, "width")));
  return get_attr(Value::string(v.str()), "center").as_function().call(args);
}

Value f_default(const Value& v, Args& a) {
  auto p = bind("default", a, {"default_value", "boolean"});
  if (v.is_undefined() || (flag(p[1], false) && !v.truthy())) return p[0] ? *p[0] : Value::string("");
  return v;
}

Value f_dictsort(const Value& v, Args& a) {
  auto p = bind("dictsort", a, {"case_sensitive", "by", "reverse"});
  if (!v.is_object()) throw RenderError("dictsort: can only sort a mapping, not " + std::string(v.type_name()));
  const bool case_sensitive = flag(p[0], false), reverse = flag(p[2], false);
  std::string by = p[1] ? p[1]->str() : "key";
  if (by != "key" && by != "value") throw RenderError("You can only sort by either 'key' or 'value'");
  std::vector<Value> items;
  for (const auto& [k, x] : v.as_object().items) items.push_back(Value::array({Value::string(k), x}, true));
  const size_t pos = by == "key" ? 0 : 1;
  std::stable_sort(items.begin(), items.end(), [&](const Value& x, const Value& y) {
    Value kx = sort_key(x.as_array().items[pos], nullptr, case_sensitive);
    Value ky = sort_key(y.as_array().items[pos], nullptr, case_sensitive);
    return reverse ? less(ky, kx) : less(kx, ky);
  });
  return Value::array(std::move(items));
}

Value f_escape(const Value& v, Args& a) {
  bind("escape", a, {});
  std::string out;
  for (char c : v.str()) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return Value::string(std::move(out));
}

Value f_first(const Value& v, Args& a) {
  bind("first", a, {});
  std::vector<Value> items = iterate(v);
  if (!items.empty()) return items.front();
  return Value::undefined("No first item, sequence was empty.");
}

Value f_last(const Value& v, Args& a) {
  bind("last", a, {});
  if (v.is_undefined()) v.fail_undefined();
  std::vector<Value> items = iterate(v);
  if (!items.empty()) return items.back();
  return Value::undefined("No last item, sequence was empty.");
}

// Python's float(str): surrounding whitespace allowed, the whole rest must be the number.
std::optional<double> parse_float(const std::string& s) {
  std::string t = pystr::strip(s, std::nullopt, true, true);
  std::erase(t, '_');
  if (t.empty() || t.find_first_of("xXpP") != std::string::npos) return std::nullopt;
  char* end = nullptr;
  double d = std::strtod(t.c_str(), &end);
  if (end != t.c_str() + t.size()) return std::nullopt;
  return d;
}

// Python's int(str, base): whitespace, sign, a 0x/0o/0b prefix matching base (or any, base 0).
std::optional<int64_t> parse_int(const std::string& s, int base) {
  std::string t = pystr::strip(s, std::nullopt, true, true);
  size_t i = 0;
  bool neg = false;
  if (i < t.size() && (t[i] == '+' || t[i] == '-')) neg = t[i++] == '-';
  auto prefix = [&](char c) { return i + 1 < t.size() && t[i] == '0' && std::tolower(t[i + 1]) == c; };
  if ((base == 16 || base == 0) && prefix('x')) base = 16, i += 2;
  else if ((base == 8 || base == 0) && prefix('o')) base = 8, i += 2;
  else if ((base == 2 || base == 0) && prefix('b')) base = 2, i += 2;
  else if (base == 0) base = 10;
  if (i >= t.size()) return std::nullopt;
  int64_t v = 0;
  bool digit_before = false;
  for (; i < t.size(); ++i) {
    char c = static_cast<char>(std::tolower(static_cast<unsigned char>(t[i])));
    if (c == '_' && digit_before && i + 1 < t.size() && t[i + 1] != '_') continue;
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'z' ? c - 'a' + 10 : 99;
    if (d >= base) return std::nullopt;
    v = v * base + d;
    digit_before = true;
  }
  return neg ? -v : v;
}

Value f_int(const Value& v, Args& a) {
  auto p = bind("int", a, {"default", "base"});
  Value fallback = p[0] ? *p[0] : Value::integer(0);
  if (v.is_int() || v.is_bool()) return Value::integer(v.as_int());
  if (v.is_float()) return std::isfinite(v.as_float()) ? Value::integer(static_cast<int64_t>(v.as_float())) : fallback;
  if (v.is_string()) {
    if (auto i = parse_int(v.as_string(), static_cast<int>(int_arg(p[1], 10, "base")))) return Value::integer(*i);
    if (auto d = parse_float(v.as_string()); d && std::isfinite(*d)) return Value::integer(static_cast<int64_t>(*d));
  }
  return fallback;
}

Value f_float(const Value& v, Args& a) {
  auto p = bind("float", a, {"default"});
  if (v.is_number()) return Value::floating(v.as_float());
  if (v.is_string())
    if (auto d = parse_float(v.as_string())) return Value::floating(*d);
  return p[0] ? *p[0] : Value::floating(0.0);
}

Value f_format(const Value& v, Args& a) {
  if (!a.positional.empty() && !a.keyword.empty())
    throw RenderError("format: can't handle positional and keyword arguments at the same time");
  if (!a.keyword.empty()) {
    Object o;
    for (auto& [k, x] : a.keyword) o.set(k, x);
    return Value::string(percent_format(v.str(), Value::object(std::move(o))));
  }
  return Value::string(percent_format(v.str(), Value::array(a.positional, true)));
}

Value f_indent(const Value& v, Args& a) {
  auto p = bind("indent", a, {"width", "first", "blank"});
  std::string indention = p[0] && p[0]->is_string() ? p[0]->as_string() : std::string(int_arg(p[0], 4, "width"), ' ');
  std::vector<std::string> lines = pystr::splitlines(v.str() + "\n", false);
  std::string rv;
  if (flag(p[2], false)) {
    for (size_t i = 0; i < lines.size(); ++i) {
      if (i) rv += "\n" + indention;
      rv += lines[i];
    }
  } else {
    rv = lines.empty() ? "" : lines[0];
    for (size_t i = 1; i < lines.size(); ++i) {
      rv += '\n';
      if (!lines[i].empty()) rv += indention + lines[i];
    }
  }
  if (flag(p[1], false)) rv = indention + rv;
  return Value::string(std::move(rv));
}

Value f_items(const Value& v, Args& a) {
  bind("items", a, {});
  if (v.is_undefined()) return Value::array({});
  if (!v.is_object()) throw RenderError("Can only get item pairs from a mapping.");
  std::vector<Value> out;
  for (const auto& [k, x] : v.as_object().items) out.push_back(Value::array({Value::string(k), x}, true));
  return Value::array(std::move(out));
}

Value f_join(const Value& v, Args& a) {
  auto p = bind("join", a, {"d", "attribute"});
  std::string sep = p[0] ? p[0]->str() : "", out;
  size_t i = 0;
  for (const Value& item : iterate(v)) {
    if (i++) out += sep;
    out += (p[1] && !p[1]->is_none() ? attribute_of(item, *p[1]) : item).str();
  }
  return Value::string(std::move(out));
}

Value f_length(const Value& v, Args& a) {
  bind("length", a, {});
  switch (v.kind()) {
    case Value::Kind::undefined: return Value::integer(0);
    case Value::Kind::string: return Value::integer(static_cast<int64_t>(pystr::length(v.as_string())));
    case Value::Kind::array: return Value::integer(static_cast<int64_t>(v.as_array().items.size()));
    case Value::Kind::object: return Value::integer(static_cast<int64_t>(v.as_object().items.size()));
    default: throw RenderError(std::string("object of type '") + v.type_name() + "' has no len()");
  }
}

Value f_list(const Value& v, Args& a) {
  bind("list", a, {});
  return Value::array(iterate(v));
}

Value f_lower(const Value& v, Args& a) {
  bind("lower", a, {});
  return Value::string(pystr::lower(v.str()));
}

Value f_upper(const Value& v, Args& a) {
  bind("upper", a, {});
  return Value::string(pystr::upper(v.str()));
}

Value f_map(const Value& v, Args& a) {
  std::vector<Value> out;
  if (a.positional.empty()) {
    auto p = bind("map", a, {"attribute", "default"});
    if (!p[0]) throw RenderError("map requires a filter argument");
    for (const Value& item : iterate(v)) out.push_back(attribute_of(item, *p[0], p[1] && !p[1]->is_none() ? p[1] : nullptr));
    return Value::array(std::move(out));
  }
  std::string name = a.positional[0].str();
  FilterFn f = find_filter(name);
  if (!f) throw RenderError("No filter named '" + name + "'.");
  for (const Value& item : iterate(v)) {
    Args rest{std::vector<Value>(a.positional.begin() + 1, a.positional.end()), a.keyword};
    out.push_back(f(item, rest));
  }
  return Value::array(std::move(out));
}

Value min_max(const Value& v, Args& a, bool want_max) {
  auto p = bind(want_max ? "max" : "min", a, {"case_sensitive", "attribute"});
  std::vector<Value> items = iterate(v);
  if (items.empty()) return Value::undefined("No aggregated item, sequence was empty.");
  const bool cs = flag(p[0], false);
  size_t best = 0;
  Value best_key = sort_key(items[0], p[1], cs);
  for (size_t i = 1; i < items.size(); ++i) {
    Value k = sort_key(items[i], p[1], cs);
    if (want_max ? less(best_key, k) : less(k, best_key)) best = i, best_key = k;
  }
  return items[best];
}
Value f_max(const Value& v, Args& a) { return min_max(v, a, true); }
Value f_min(const Value& v, Args& a) { return min_max(v, a, false); }

Value f_replace(const Value& v, Args& a) {
  auto p = bind("replace", a, {"old", "new", "count"});
  if (!p[0] || !p[1]) throw RenderError("replace() missing required arguments 'old' and 'new'");
  int64_t count = p[2] && !p[2]->is_none() ? int_arg(p[2], -1, "count") : -1;
  return Value::string(pystr::replace(v.str(), p[0]->str(), p[1]->str(), count));
}

Value f_reverse(const Value& v, Args& a) {
  bind("reverse", a, {});
  if (v.is_string()) {
    std::u32string u = pystr::decode(v.as_string());
    std::reverse(u.begin(), u.end());
    return Value::string(pystr::encode(u));
  }
  std::vector<Value> items = iterate(v);
  std::reverse(items.begin(), items.end());
  return Value::array(std::move(items));
}

// Python's round(x, n): correctly rounded, ties to even on the exact binary value.
double round_to(double x, int64_t n) {
  if (n >= 0) {
    char buf[512];
    std::snprintf(buf, sizeof buf, "%.*f", static_cast<int>(std::min<int64_t>(n, 300)), x);
    return std::strtod(buf, nullptr);
  }
  double scale = std::pow(10.0, static_cast<double>(-n));
  return std::nearbyint(x / scale) * scale;
}

Value f_round(const Value& v, Args& a) {
  auto p = bind("round", a, {"precision", "method"});
  int64_t precision = int_arg(p[0], 0, "precision");
  std::string m = p[1] ? p[1]->str() : "common";
  if (m != "common" && m != "ceil" && m != "floor") throw RenderError("method must be common, ceil or floor");
  if (!v.is_number()) throw RenderError(std::string("type ") + v.type_name() + " doesn't define __round__ method");
  if (m == "common") {
    if (!v.is_float()) return Value::integer(v.as_int());  // round(int, n) stays an int
    return Value::floating(round_to(v.as_float(), precision));
  }
  double scale = std::pow(10.0, static_cast<double>(precision));
  double x = v.as_float() * scale;
  return Value::floating((m == "ceil" ? std::ceil(x) : std::floor(x)) / scale);
}

Value select_like(const Value& v, Args& a, bool select, bool by_attribute) {
  const char* fn = select ? (by_attribute ? "selectattr" : "select") : (by_attribute ? "rejectattr" : "reject");
  std::vector<Value> args = a.positional;
  Value attribute;
  if (by_attribute) {
    if (args.empty()) throw RenderError(std::string(fn) + "() missing the attribute argument");
    attribute = args.front();
    args.erase(args.begin());
  }
  TestFn test = nullptr;
  if (!args.empty()) {
    std::string name = args.front().str();
    test = find_test(name);
    if (!test) throw RenderError("No test named '" + name + "'.");
    args.erase(args.begin());
  }
  std::vector<Value> out;
  for (const Value& item : iterate(v)) {
    Value x = by_attribute ? attribute_of(item, attribute) : item;
    Args targs{args, a.keyword};
    bool ok = test ? test(x, targs) : x.truthy();
    if (ok == select) out.push_back(item);
  }
  return Value::array(std::move(out));
}
Value f_select(const Value& v, Args& a) { return select_like(v, a, true, false); }
Value f_reject(const Value& v, Args& a) { return select_like(v, a, false, false); }
Value f_selectattr(const Value& v, Args& a) { return select_like(v, a, true, true); }
Value f_rejectattr(const Value& v, Args& a) { return select_like(v, a, false, true); }

Value f_safe(const Value& v, Args& a) {
  bind("safe", a, {});
  return Value::string(v.str());
}

Value f_sort(const Value& v, Args& a) {
  auto p = bind("sort", a, {"reverse", "case_sensitive", "attribute"});
  const bool reverse = flag(p[0], false), cs = flag(p[1], false);
  std::vector<Value> items = iterate(v);
  std::vector<std::pair<Value, Value>> keyed;  // (key, item)
  for (Value& item : items) keyed.emplace_back(sort_key(item, p[2], cs), std::move(item));
  std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& x, const auto& y) {
    return reverse ? less(y.first, x.first) : less(x.first, y.first);
  });
  std::vector<Value> out;
  for (auto& kv : keyed) out.push_back(std::move(kv.second));
  return Value::array(std::move(out));
}

Value f_string(const Value& v, Args& a) {
  bind("string", a, {});
  return Value::string(v.str());
}

Value f_sum(const Value& v, Args& a) {
  auto p = bind("sum", a, {"attribute", "start"});
  Value total = p[1] ? *p[1] : Value::integer(0);
  for (const Value& item : iterate(v)) total = binary_op("+", total, p[0] && !p[0]->is_none() ? attribute_of(item, *p[0]) : item);
  return total;
}

// Jinja2's title filter: each run after one of "-", whitespace, "(", "{", "[", "<" starts upper.
Value f_title(const Value& v, Args& a) {
  bind("title", a, {});
  std::u32string u = pystr::decode(v.str());
  auto sep = [](char32_t c) { return c == '-' || c == '(' || c == '{' || c == '[' || c == '<' || pystr::is_space(c); };
  std::string out;
  for (size_t i = 0; i < u.size();) {
    size_t j = i;
    if (sep(u[i])) {
      while (j < u.size() && sep(u[j])) ++j;
      out += pystr::encode(u.substr(i, j - i));
    } else {
      while (j < u.size() && !sep(u[j])) ++j;
      out += pystr::upper(pystr::encode(u.substr(i, 1))) + pystr::lower(pystr::encode(u.substr(i + 1, j - i - 1)));
    }
    i = j;
  }
  return Value::string(std::move(out));
}

// transformers' tojson: json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False).
Value f_tojson(const Value& v, Args& a) {
  auto p = bind("tojson", a, {"ensure_ascii", "indent", "separators", "sort_keys"});
  JsonOptions o;
  o.ensure_ascii = flag(p[0], false);
  if (p[1] && !p[1]->is_none()) o.indent = p[1]->is_string() ? p[1]->as_string() : std::string(std::max<int64_t>(int_arg(p[1], 0, "indent"), 0), ' ');
  if (p[2] && !p[2]->is_none()) {
    if (!p[2]->is_array() || p[2]->as_array().items.size() != 2) throw RenderError("tojson: separators must be a pair of strings");
    o.item_separator = p[2]->as_array().items[0].str();
    o.key_separator = p[2]->as_array().items[1].str();
  }
  o.sort_keys = flag(p[3], false);
  return Value::string(to_json(v, o));
}

Value f_trim(const Value& v, Args& a) {
  auto p = bind("trim", a, {"chars"});
  std::optional<std::string> chars;
  if (p[0] && !p[0]->is_none()) chars = p[0]->str();
  return Value::string(pystr::strip(v.str(), chars, true, true));
}

Value f_unique(const Value& v, Args& a) {
  auto p = bind("unique", a, {"case_sensitive", "attribute"});
  const bool cs = flag(p[0], false);
  std::vector<Value> out, seen;
  for (const Value& item : iterate(v)) {
    Value k = sort_key(item, p[1], cs);
    if (std::none_of(seen.begin(), seen.end(), [&](const Value& s) { return equals(s, k); })) {
      seen.push_back(k);
      out.push_back(item);
    }
  }
  return Value::array(std::move(out));
}

Value f_wordcount(const Value& v, Args& a) {
  bind("wordcount", a, {});
  int64_t n = 0;
  bool in_word = false;
  for (char32_t c : pystr::decode(v.str())) {
    bool w = c == '_' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c > 0x7f;
    if (w && !in_word) ++n;
    in_word = w;
  }
  return Value::integer(n);
}

const std::pair<const char*, FilterFn> kFilters[] = {
    {"abs", f_abs}, {"attr", f_attr}, {"capitalize", f_capitalize}, {"center", f_center}, {"count", f_length},
    {"d", f_default}, {"default", f_default}, {"dictsort", f_dictsort}, {"e", f_escape}, {"escape", f_escape},
    {"first", f_first}, {"float", f_float}, {"format", f_format}, {"indent", f_indent}, {"int", f_int},
    {"items", f_items}, {"join", f_join}, {"last", f_last}, {"length", f_length}, {"list", f_list},
    {"lower", f_lower}, {"map", f_map}, {"max", f_max}, {"min", f_min}, {"reject", f_reject},
    {"rejectattr", f_rejectattr}, {"replace", f_replace}, {"reverse", f_reverse}, {"round", f_round},
    {"safe", f_safe}, {"select", f_select}, {"selectattr", f_selectattr}, {"sort", f_sort}, {"string", f_string},
    {"sum", f_sum}, {"title", f_title}, {"tojson", f_tojson}, {"trim", f_trim}, {"unique", f_unique},
    {"upper", f_upper}, {"wordcount", f_wordcount},
};

}  // namespace

FilterFn find_filter(std::string_view name) {
  for (const auto& [n, f] : kFilters)
    if (name == n) return f;
  return nullptr;
}

}  // namespace nanovllm::jinja
