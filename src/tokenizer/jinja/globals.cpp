// The global functions of transformers' Jinja environment: Jinja2's range, dict and namespace
// (range capped as the sandbox caps it), and transformers' raise_exception and strftime_now.
// Also bind(), which matches a call's arguments to a builtin's parameters.
#include <ctime>

#include "tokenizer/jinja/access.h"
#include "tokenizer/jinja/builtins.h"
#include "tokenizer/jinja/error.h"

namespace nanovllm::jinja {

std::vector<const Value*> bind(const char* fn, const Args& args, std::initializer_list<const char*> params) {
  std::vector<const Value*> out(params.size(), nullptr);
  if (args.positional.size() > params.size())
    throw RenderError(std::string(fn) + "() takes at most " + std::to_string(params.size()) + " argument(s) (" +
                      std::to_string(args.positional.size()) + " given)");
  for (size_t i = 0; i < args.positional.size(); ++i) out[i] = &args.positional[i];
  for (const auto& [key, value] : args.keyword) {
    size_t i = 0;
    for (const char* p : params) {
      if (key == p) break;
      ++i;
    }
    if (i == params.size()) throw RenderError(std::string(fn) + "() got an unexpected keyword argument '" + key + "'");
    if (out[i]) throw RenderError(std::string(fn) + "() got multiple values for argument '" + key + "'");
    out[i] = &value;
  }
  return out;
}

namespace {

// Jinja2's sandbox refuses ranges longer than this.
constexpr int64_t kMaxRange = 100000;

Value range(Args& a) {
  if (!a.keyword.empty()) throw RenderError("range() takes no keyword arguments");
  std::vector<int64_t> n;
  for (const Value& v : a.positional) {
    if (v.is_undefined()) v.fail_undefined();
    if (!v.is_int() && !v.is_bool())
      throw RenderError(std::string("'") + v.type_name() + "' object cannot be interpreted as an integer");
    n.push_back(v.as_int());
  }
  if (n.empty() || n.size() > 3) throw RenderError("range expected 1 to 3 arguments, got " + std::to_string(n.size()));
  int64_t start = n.size() > 1 ? n[0] : 0, stop = n.size() > 1 ? n[1] : n[0], step = n.size() > 2 ? n[2] : 1;
  if (step == 0) throw RenderError("range() arg 3 must not be zero");
  int64_t count = step > 0 ? (stop > start ? (stop - start + step - 1) / step : 0)
                           : (start > stop ? (start - stop - step - 1) / -step : 0);
  if (count > kMaxRange)
    throw RenderError("Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
  std::vector<Value> out;
  for (int64_t i = 0; i < count; ++i) out.push_back(Value::integer(start + i * step));
  return Value::array(std::move(out));
}

// dict(mapping_or_pairs, **kwargs) and namespace(...) take the same arguments.
Object mapping_from(const char* fn, Args& a) {
  if (a.positional.size() > 1)
    throw RenderError(std::string(fn) + " expected at most 1 argument, got " + std::to_string(a.positional.size()));
  Object o;
  if (!a.positional.empty()) {
    const Value& src = a.positional[0];
    if (src.is_object() || src.is_ns()) {
      o = src.as_object();
    } else {
      for (const Value& pair : iterate(src)) {
        if (!pair.is_array() || pair.as_array().items.size() != 2)
          throw RenderError(std::string(fn) + ": each element must be a (key, value) pair");
        const Value& key = pair.as_array().items[0];
        if (!key.is_string()) throw RenderError(std::string(fn) + ": keys must be strings");
        o.set(key.as_string(), pair.as_array().items[1]);
      }
    }
  }
  for (auto& [k, v] : a.keyword) o.set(k, v);
  return o;
}

Value raise_exception(Args& a) {
  auto p = bind("raise_exception", a, {"message"});
  throw RenderError(p[0] ? p[0]->str() : "raise_exception() called");
}

// datetime.now().strftime(format): local time, through C's strftime as CPython does on Linux.
Value strftime_now(Args& a) {
  auto p = bind("strftime_now", a, {"format"});
  if (!p[0] || !p[0]->is_string()) throw RenderError("strftime_now() needs a format string");
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  localtime_r(&t, &tm);
  const std::string& fmt = p[0]->as_string();
  if (fmt.empty()) return Value::string("");
  std::string buf(256 + fmt.size() * 8, '\0');
  size_t n = std::strftime(buf.data(), buf.size(), fmt.c_str(), &tm);
  buf.resize(n);
  return Value::string(std::move(buf));
}

}  // namespace

Object make_globals() {
  Object g;
  g.set("range", Value::function("range", range));
  g.set("dict", Value::function("dict", [](Args& a) { return Value::object(mapping_from("dict", a)); }));
  g.set("namespace", Value::function("namespace", [](Args& a) { return Value::ns(mapping_from("namespace", a)); }));
  g.set("raise_exception", Value::function("raise_exception", raise_exception));
  g.set("strftime_now", Value::function("strftime_now", strftime_now));
  return g;
}

}  // namespace nanovllm::jinja
