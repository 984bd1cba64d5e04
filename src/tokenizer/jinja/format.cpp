// Python's `%` string formatting and str.format() (see format.h).
#include "tokenizer/jinja/format.h"

#include <cctype>
#include <cstdio>
#include <string>

#include "tokenizer/jinja/error.h"
#include "tokenizer/jinja/pystr.h"

namespace nanovllm::jinja {
namespace {

// Pads s (counted in code points, as Python counts) to `width`.
std::string pad(std::string s, int width, bool left_align) {
  size_t n = pystr::length(s);
  if (width <= 0 || n >= static_cast<size_t>(width)) return s;
  std::string fill(width - n, ' ');
  return left_align ? s + fill : fill + s;
}

std::string c_format(const std::string& spec, char type, double d) {
  char buf[512];
  std::snprintf(buf, sizeof buf, ("%" + spec + type).c_str(), d);
  return buf;
}
std::string c_format(const std::string& spec, char type, long long i) {
  char buf[512];
  std::snprintf(buf, sizeof buf, ("%" + spec + "ll" + type).c_str(), i);
  return buf;
}

const Value& number_arg(const Value& v, char type) {
  if (!v.is_number())
    throw RenderError(std::string("%") + type + " format: a real number is required, not " + v.type_name());
  return v;
}

}  // namespace

std::string percent_format(const std::string& fmt, const Value& args) {
  std::vector<Value> positional;
  const Object* mapping = args.is_object() ? &args.as_object() : nullptr;
  if (args.is_array() && args.as_array().is_tuple) positional = args.as_array().items;
  else if (!mapping) positional.push_back(args);
  size_t next = 0;
  auto take = [&]() -> const Value& {
    if (next >= positional.size()) throw RenderError("not enough arguments for format string");
    return positional[next++];
  };

  std::string out;
  for (size_t i = 0; i < fmt.size(); ++i) {
    if (fmt[i] != '%') {
      out += fmt[i];
      continue;
    }
    if (++i >= fmt.size()) throw RenderError("incomplete format");
    const Value* arg = nullptr;
    if (fmt[i] == '(') {
      size_t close = fmt.find(')', i);
      if (close == std::string::npos) throw RenderError("incomplete format key");
      if (!mapping) throw RenderError("format requires a mapping");
      std::string key = fmt.substr(i + 1, close - i - 1);
      arg = mapping->find(key);
      if (!arg) throw RenderError("KeyError: " + pystr::repr(key));
      i = close + 1;
    }
    std::string flags;
    while (i < fmt.size() && std::string_view("#0- +").find(fmt[i]) != std::string_view::npos) flags += fmt[i++];
    auto read_number = [&](std::string& into) {
      if (i < fmt.size() && fmt[i] == '*') {
        into = std::to_string(take().as_int());
        ++i;
        return;
      }
      while (i < fmt.size() && std::isdigit(static_cast<unsigned char>(fmt[i]))) into += fmt[i++];
    };
    std::string width, precision;
    read_number(width);
    bool has_precision = i < fmt.size() && fmt[i] == '.';
    if (has_precision) {
      ++i;
      read_number(precision);
      if (precision.empty()) precision = "0";
    }
    while (i < fmt.size() && (fmt[i] == 'h' || fmt[i] == 'l' || fmt[i] == 'L')) ++i;
    if (i >= fmt.size()) throw RenderError("incomplete format");
    char type = fmt[i];
    if (type == '%') {
      out += '%';
      continue;
    }
    const Value& v = arg ? *arg : take();
    std::string spec = flags + width + (has_precision ? "." + precision : "");
    bool left = flags.find('-') != std::string::npos;
    switch (type) {
      case 's': case 'r': case 'a': {
        std::string s = type == 's' ? v.str() : v.repr();
        if (has_precision) s = pystr::encode(pystr::decode(s).substr(0, std::stoul(precision)));
        out += pad(s, width.empty() ? 0 : std::stoi(width), left);
        break;
      }
      case 'd': case 'i': case 'u': case 'o': case 'x': case 'X': {
        const Value& n = number_arg(v, type);
        long long x = n.is_float() ? static_cast<long long>(n.as_float()) : n.as_int();
        out += c_format(spec, type == 'i' || type == 'u' ? 'd' : type, x);
        break;
      }
      case 'e': case 'E': case 'f': case 'F': case 'g': case 'G':
        out += c_format(spec, type, number_arg(v, type).as_float());
        break;
      case 'c': {
        std::string s = v.is_string() ? v.as_string() : pystr::encode(std::u32string(1, static_cast<char32_t>(v.as_int())));
        out += pad(s, width.empty() ? 0 : std::stoi(width), left);
        break;
      }
      default:
        throw RenderError(std::string("unsupported format character '") + type + "'");
    }
  }
  if (!mapping && next < positional.size()) throw RenderError("not all arguments converted during string formatting");
  return out;
}

std::string brace_format(const std::string& fmt, const Args& args) {
  std::string out;
  size_t auto_index = 0;
  for (size_t i = 0; i < fmt.size(); ++i) {
    char c = fmt[i];
    if (c == '}') {
      if (i + 1 < fmt.size() && fmt[i + 1] == '}') ++i;
      else throw RenderError("Single '}' encountered in format string");
      out += '}';
      continue;
    }
    if (c != '{') {
      out += c;
      continue;
    }
    if (i + 1 < fmt.size() && fmt[i + 1] == '{') {
      out += '{';
      ++i;
      continue;
    }
    size_t close = fmt.find('}', i);
    if (close == std::string::npos) throw RenderError("Single '{' encountered in format string");
    std::string field = fmt.substr(i + 1, close - i - 1);
    i = close;
    char conversion = 's';
    if (size_t colon = field.find(':'); colon != std::string::npos) {
      if (colon + 1 < field.size()) throw RenderError("str.format(): format specs ('" + field + "') are not supported");
      field.resize(colon);
    }
    if (size_t bang = field.find('!'); bang != std::string::npos) {
      if (bang + 2 != field.size()) throw RenderError("str.format(): bad conversion in '{" + field + "}'");
      conversion = field[bang + 1];
      field.resize(bang);
    }
    const Value* v = nullptr;
    if (field.empty() || std::isdigit(static_cast<unsigned char>(field[0]))) {
      size_t index = field.empty() ? auto_index++ : std::stoul(field);
      if (index >= args.positional.size()) throw RenderError("str.format(): replacement index " + std::to_string(index) + " out of range");
      v = &args.positional[index];
    } else {
      for (const auto& [k, val] : args.keyword)
        if (k == field) v = &val;
      if (!v) throw RenderError("str.format(): KeyError: " + pystr::repr(field));
    }
    out += conversion == 'r' ? v->repr() : v->str();
  }
  return out;
}

}  // namespace nanovllm::jinja
