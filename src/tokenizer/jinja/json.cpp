// JSON in and out of Value (see json.h).
#include "tokenizer/jinja/json.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "tokenizer/jinja/error.h"
#include "tokenizer/jinja/pystr.h"
#include "tokenizer/utf8.h"

namespace nanovllm::jinja {
namespace {

template <class Json>
Value convert(const Json& j) {
  switch (j.type()) {
    case nlohmann::json::value_t::null: return Value::none();
    case nlohmann::json::value_t::boolean: return Value::boolean(j.template get<bool>());
    case nlohmann::json::value_t::number_integer: return Value::integer(j.template get<int64_t>());
    case nlohmann::json::value_t::number_unsigned: return Value::integer(static_cast<int64_t>(j.template get<uint64_t>()));
    case nlohmann::json::value_t::number_float: return Value::floating(j.template get<double>());
    case nlohmann::json::value_t::string: return Value::string(j.template get<std::string>());
    case nlohmann::json::value_t::array: {
      std::vector<Value> items;
      items.reserve(j.size());
      for (const auto& x : j) items.push_back(convert(x));
      return Value::array(std::move(items));
    }
    case nlohmann::json::value_t::object: {
      Object o;
      o.items.reserve(j.size());
      for (auto it = j.begin(); it != j.end(); ++it) o.items.emplace_back(it.key(), convert(it.value()));
      return Value::object(std::move(o));
    }
    default: throw RenderError("binary JSON values are not supported");
  }
}

void append_string(std::string& out, const std::string& s, bool ensure_ascii) {
  out += '"';
  char buf[16];
  for (size_t i = 0; i < s.size();) {
    unsigned char b = static_cast<unsigned char>(s[i]);
    if (b >= 0x80) {
      size_t start = i;
      uint32_t cp = utf8::next_codepoint(s, i);
      if (!ensure_ascii) {
        out.append(s, start, i - start);
      } else if (cp < 0x10000) {
        std::snprintf(buf, sizeof buf, "\\u%04x", cp);
        out += buf;
      } else {  // a surrogate pair, as Python writes it
        cp -= 0x10000;
        std::snprintf(buf, sizeof buf, "\\u%04x\\u%04x", 0xd800 + (cp >> 10), 0xdc00 + (cp & 0x3ff));
        out += buf;
      }
      continue;
    }
    ++i;
    switch (b) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (b < 0x20) {
          std::snprintf(buf, sizeof buf, "\\u%04x", b);
          out += buf;
        } else {
          out += static_cast<char>(b);
        }
    }
  }
  out += '"';
}

struct Writer {
  const JsonOptions& o;
  std::string item_sep, key_sep;
  std::string out;

  void newline(int depth) {
    out += '\n';
    for (int i = 0; i < depth; ++i) out += *o.indent;
  }

  void write(const Value& v, int depth) {
    switch (v.kind()) {
      case Value::Kind::none: out += "null"; return;
      case Value::Kind::boolean: out += v.as_bool() ? "true" : "false"; return;
      case Value::Kind::integer: out += std::to_string(v.as_int()); return;
      case Value::Kind::floating: {
        double d = v.as_float();
        out += std::isnan(d) ? "NaN" : std::isinf(d) ? (d < 0 ? "-Infinity" : "Infinity") : pystr::float_repr(d);
        return;
      }
      case Value::Kind::string: append_string(out, v.as_string(), o.ensure_ascii); return;
      case Value::Kind::array: {
        const auto& items = v.as_array().items;
        if (items.empty()) {
          out += "[]";
          return;
        }
        out += '[';
        for (size_t i = 0; i < items.size(); ++i) {
          if (i) out += item_sep;
          if (o.indent) newline(depth + 1);
          write(items[i], depth + 1);
        }
        if (o.indent) newline(depth);
        out += ']';
        return;
      }
      case Value::Kind::object: {
        std::vector<const std::pair<std::string, Value>*> items;
        for (const auto& kv : v.as_object().items) items.push_back(&kv);
        if (o.sort_keys)
          std::stable_sort(items.begin(), items.end(), [](auto* a, auto* b) { return a->first < b->first; });
        if (items.empty()) {
          out += "{}";
          return;
        }
        out += '{';
        for (size_t i = 0; i < items.size(); ++i) {
          if (i) out += item_sep;
          if (o.indent) newline(depth + 1);
          append_string(out, items[i]->first, o.ensure_ascii);
          out += key_sep;
          write(items[i]->second, depth + 1);
        }
        if (o.indent) newline(depth);
        out += '}';
        return;
      }
      default:
        throw RenderError(std::string("Object of type ") + v.type_name() + " is not JSON serializable");
    }
  }
};

}  // namespace

Value from_json(const nlohmann::ordered_json& j) { return convert(j); }
Value from_json(const nlohmann::json& j) { return convert(j); }

std::string to_json(const Value& v, const JsonOptions& options) {
  Writer w{options, options.item_separator.value_or(options.indent ? "," : ", "),
           options.key_separator.value_or(": "), {}};
  w.write(v, 0);
  return std::move(w.out);
}

}  // namespace nanovllm::jinja
