// A fast tokenizer.json reader and the checks on what it finds (see tokenizer_json.h).
#include "tokenizer/tokenizer_json.h"

#include <charconv>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "tokenizer/utf8.h"

namespace nanovllm {
namespace {

// A strict JSON reader over a buffer; strings without escapes come back as views into it.
class JsonReader {
 public:
  JsonReader(std::string_view s, const std::string& where) : s_(s), where_(where) {}

  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error(where_ + ": malformed JSON at byte offset " + std::to_string(i_) + ": " + what);
  }
  void ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\r' || s_[i_] == '\t')) ++i_;
  }
  char peek() {
    ws();
    if (i_ >= s_.size()) fail("unexpected end of input");
    return s_[i_];
  }
  void expect(char c) {
    if (peek() != c) fail(std::string("expected '") + c + "'");
    ++i_;
  }
  bool at_end() {
    ws();
    return i_ >= s_.size();
  }

  // Iterates an object: calls on_member(key) with the reader positioned at the member's value.
  template <class F>
  void object(F&& on_member) {
    expect('{');
    if (peek() == '}') {
      ++i_;
      return;
    }
    std::string scratch;
    for (;;) {
      if (peek() != '"') fail("expected a string key");
      std::string_view key = string(scratch);  // valid until the next key
      expect(':');
      on_member(key);
      char c = peek();
      ++i_;
      if (c == '}') return;
      if (c != ',') fail("expected ',' or '}'");
    }
  }
  template <class F>
  void array(F&& on_element) {
    expect('[');
    if (peek() == ']') {
      ++i_;
      return;
    }
    for (;;) {
      on_element();
      char c = peek();
      ++i_;
      if (c == ']') return;
      if (c != ',') fail("expected ',' or ']'");
    }
  }

  // A string value; the view points into the input, or into scratch when it had escapes.
  std::string_view string(std::string& scratch) {
    expect('"');
    size_t start = i_;
    while (i_ < s_.size() && s_[i_] != '"' && s_[i_] != '\\') {
      if (static_cast<unsigned char>(s_[i_]) < 0x20) fail("control character in a string");
      ++i_;
    }
    if (i_ >= s_.size()) fail("unterminated string");
    if (s_[i_] == '"') {
      ++i_;
      return s_.substr(start, i_ - 1 - start);
    }
    scratch.assign(s_.data() + start, i_ - start);
    while (i_ < s_.size() && s_[i_] != '"') {
      char c = s_[i_++];
      if (static_cast<unsigned char>(c) < 0x20) fail("control character in a string");
      if (c != '\\') {
        scratch.push_back(c);
        continue;
      }
      if (i_ >= s_.size()) fail("unterminated escape");
      char e = s_[i_++];
      switch (e) {
        case '"': scratch.push_back('"'); break;
        case '\\': scratch.push_back('\\'); break;
        case '/': scratch.push_back('/'); break;
        case 'b': scratch.push_back('\b'); break;
        case 'f': scratch.push_back('\f'); break;
        case 'n': scratch.push_back('\n'); break;
        case 'r': scratch.push_back('\r'); break;
        case 't': scratch.push_back('\t'); break;
        case 'u': {
          uint32_t cp = hex4();
          if (cp >= 0xD800 && cp <= 0xDBFF) {  // a surrogate pair spells one code point
            if (i_ + 2 > s_.size() || s_[i_] != '\\' || s_[i_ + 1] != 'u') fail("lone high surrogate");
            i_ += 2;
            uint32_t lo = hex4();
            if (lo < 0xDC00 || lo > 0xDFFF) fail("bad low surrogate");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            fail("lone low surrogate");
          }
          utf8::append_codepoint(scratch, cp);
          break;
        }
        default: fail(std::string("bad escape \\") + e);
      }
    }
    if (i_ >= s_.size()) fail("unterminated string");
    ++i_;
    return scratch;
  }

  int64_t integer() {
    ws();
    int64_t v = 0;
    auto [p, ec] = std::from_chars(s_.data() + i_, s_.data() + s_.size(), v);
    if (ec != std::errc()) fail("expected an integer");
    i_ = p - s_.data();
    return v;
  }

  // Any value, as nlohmann::json (for the small parts of the file).
  nlohmann::json value(int depth = 0) {
    if (depth > 512) fail("nesting too deep");
    char c = peek();
    if (c == '{') {
      nlohmann::json obj = nlohmann::json::object();
      object([&](std::string_view k) { obj[std::string(k)] = value(depth + 1); });
      return obj;
    }
    if (c == '[') {
      nlohmann::json arr = nlohmann::json::array();
      array([&] { arr.push_back(value(depth + 1)); });
      return arr;
    }
    if (c == '"') {
      std::string scratch;
      return std::string(string(scratch));
    }
    if (literal("true")) return true;
    if (literal("false")) return false;
    if (literal("null")) return nullptr;
    return number();
  }

 private:
  bool literal(std::string_view w) {
    if (s_.substr(i_, w.size()) != w) return false;
    i_ += w.size();
    return true;
  }
  uint32_t hex4() {
    if (i_ + 4 > s_.size()) fail("short \\u escape");
    uint32_t v = 0;
    auto [p, ec] = std::from_chars(s_.data() + i_, s_.data() + i_ + 4, v, 16);
    if (ec != std::errc() || p != s_.data() + i_ + 4) fail("bad \\u escape");
    i_ += 4;
    return v;
  }
  nlohmann::json number() {
    size_t start = i_;
    bool is_float = false;
    if (i_ < s_.size() && s_[i_] == '-') ++i_;
    while (i_ < s_.size()) {
      char c = s_[i_];
      if (c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-') is_float = true;
      else if (c < '0' || c > '9') break;
      ++i_;
    }
    if (i_ == start) fail("unexpected character");
    const char* b = s_.data() + start;
    const char* e = s_.data() + i_;
    if (!is_float) {
      int64_t v;
      auto [p, ec] = std::from_chars(b, e, v);
      if (ec == std::errc() && p == e) return v;
    }
    double d;
    auto [p, ec] = std::from_chars(b, e, d);
    if (ec != std::errc() || p != e) fail("bad number");
    return d;
  }

  std::string_view s_;
  size_t i_ = 0;
  const std::string& where_;
};

// The BPE model's options; anything that would change ids and is not implemented is refused.
BpeModel::Options model_options(const nlohmann::json& m, bool byte_level, const std::string& where) {
  auto field = [&](const char* k) { return where + ": model." + k; };
  if (m.contains("type") && m["type"] != "BPE")
    throw std::runtime_error(field("type") + " " + m["type"].dump() + " is not supported (only BPE)");
  if (m.contains("dropout") && !m["dropout"].is_null() && m["dropout"].get<double>() != 0.0)
    throw std::runtime_error(field("dropout") + " (BPE dropout) is not supported");
  for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (m.contains(k) && !m[k].is_null() && !m[k].get<std::string>().empty())
      throw std::runtime_error(field(k) + " \"" + m[k].get<std::string>() + "\" is not supported");
  auto flag = [&](const char* k) {
    if (!m.contains(k) || m[k].is_null()) return false;
    if (!m[k].is_boolean()) throw std::runtime_error(field(k) + " must be true or false");
    return m[k].get<bool>();
  };
  BpeModel::Options o;
  o.byte_level = byte_level;
  o.byte_fallback = flag("byte_fallback");
  o.fuse_unk = flag("fuse_unk");
  o.ignore_merges = flag("ignore_merges");
  if (m.contains("unk_token") && !m["unk_token"].is_null()) {
    if (!m["unk_token"].is_string()) throw std::runtime_error(field("unk_token") + " must be a string");
    o.unk_token = m["unk_token"].get<std::string>();
  }
  return o;
}

AddedToken parse_added_token(const nlohmann::json& t, const std::string& where) {
  if (!t.is_object() || !t.contains("id") || !t.contains("content") || !t["content"].is_string() ||
      !t["id"].is_number_integer())
    throw std::runtime_error(where + ": added_tokens entry " + t.dump() + " needs an integer id and a string content");
  AddedToken a;
  a.id = t["id"].get<int32_t>();
  a.content = t["content"].get<std::string>();
  a.single_word = t.value("single_word", false);
  a.lstrip = t.value("lstrip", false);
  a.rstrip = t.value("rstrip", false);
  a.normalized = t.value("normalized", true);
  a.special = t.value("special", false);
  if (a.id < 0) throw std::runtime_error(where + ": added token \"" + a.content + "\" has a negative id");
  return a;
}

}  // namespace

BpeTokenizer::Parts load_tokenizer_json(std::string_view text, const std::string& where) {
  utf8::validate(text, where);
  BpeTokenizer::Parts parts;
  JsonReader r(text, where);
  nlohmann::json top = nlohmann::json::object(), model = nlohmann::json::object();
  std::vector<std::pair<std::string, std::string>> merges;  // only when merges come before vocab
  bool have_vocab = false, have_merges = false;

  auto add_merge = [&](std::string_view a, std::string_view b) {
    if (have_vocab) parts.model.add_merge(a, b, where);
    else merges.emplace_back(std::string(a), std::string(b));
  };
  auto read_merges = [&] {
    have_merges = true;
    std::string s1, s2;
    r.array([&] {
      if (r.peek() == '"') {  // "left right"
        std::string_view m = r.string(s1);
        size_t sp = m.find(' ');
        if (sp == std::string_view::npos || m.find(' ', sp + 1) != std::string_view::npos)
          throw std::runtime_error(where + ": model.merges entry \"" + std::string(m) + "\" is not \"left right\"");
        add_merge(m.substr(0, sp), m.substr(sp + 1));
      } else {  // ["left", "right"]
        int k = 0;
        std::string a, b;
        r.array([&] {
          if (r.peek() != '"') r.fail("model.merges pair must hold strings");
          (k == 0 ? a : b) = std::string(r.string(s1));
          ++k;
        });
        if (k != 2) throw std::runtime_error(where + ": model.merges entry must be a pair of strings");
        add_merge(a, b);
      }
    });
  };

  r.object([&](std::string_view key) {
    if (key != "model") {
      top[std::string(key)] = r.value();
      return;
    }
    r.object([&](std::string_view mkey) {
      if (mkey == "vocab") {
        have_vocab = true;
        if (r.peek() != '{') r.fail("model.vocab must be an object");
        r.object([&](std::string_view token) {
          int64_t id = r.integer();
          if (id > INT32_MAX) throw std::runtime_error(where + ": model.vocab id " + std::to_string(id) + " too large");
          parts.model.add_token(token, static_cast<int32_t>(id), where);
        });
      } else if (mkey == "merges") {
        if (r.peek() != '[') r.fail("model.merges must be an array");
        read_merges();
      } else {
        model[std::string(mkey)] = r.value();
      }
    });
  });
  if (!r.at_end()) r.fail("trailing characters");

  if (!have_vocab) throw std::runtime_error(where + ": model.vocab is missing");
  if (!have_merges) throw std::runtime_error(where + ": model.merges is missing");
  for (const char* k : {"truncation", "padding"})
    if (top.contains(k) && !top[k].is_null())
      throw std::runtime_error(where + ": \"" + k + "\" is set; truncation and padding are not supported");
  parts.normalizer = Normalizer::from_json(top.value("normalizer", nlohmann::json()), where);
  parts.pre_tokenizer = PreTokenizer::from_json(top.value("pre_tokenizer", nlohmann::json()), where);
  // A ByteLevel pre-tokenizer makes the vocabulary byte-level (GPT-2's alphabet); without one,
  // BPE runs on the normalized text's characters (SentencePiece-style).
  const BpeModel::Options options = model_options(model, parts.pre_tokenizer.byte_level(), where);
  for (const auto& [a, b] : merges) parts.model.add_merge(a, b, where);
  parts.model.finish(options, where);
  parts.decoder = Decoder::from_json(top.value("decoder", nlohmann::json()), where);
  parts.post_processor = PostProcessor::from_json(top.value("post_processor", nlohmann::json()), where);
  if (top.contains("added_tokens")) {
    if (!top["added_tokens"].is_array()) throw std::runtime_error(where + ": added_tokens must be a list");
    for (const auto& t : top["added_tokens"]) parts.added_tokens.push_back(parse_added_token(t, where));
  }
  return parts;
}

}  // namespace nanovllm
