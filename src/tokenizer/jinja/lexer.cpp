// The tokenizer of templates, after Jinja2's lexer (jinja2/lexer.py) with transformers' options.
#include "tokenizer/jinja/lexer.h"

#include <cctype>

#include "tokenizer/jinja/error.h"
#include "tokenizer/jinja/pystr.h"
#include "tokenizer/utf8.h"

namespace nanovllm::jinja {
namespace {

// Byte length of the whitespace character (Python's \s) at s[i], or 0.
size_t space_at(std::string_view s, size_t i) {
  auto b = static_cast<unsigned char>(s[i]);
  if (b < 0x80) return pystr::is_space(b) ? 1 : 0;
  size_t j = i;
  return pystr::is_space(utf8::next_codepoint(s, j)) ? j - i : 0;
}

std::string_view rstrip_space(std::string_view s) {
  while (!s.empty()) {
    size_t k = s.size() - 1;
    while (k > 0 && (static_cast<unsigned char>(s[k]) & 0xC0) == 0x80) --k;
    if (!space_at(s, k)) break;
    s = s.substr(0, k);
  }
  return s;
}

bool all_space(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    size_t n = space_at(s, i);
    if (!n) return false;
    i += n;
  }
  return true;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

// "\r\n" and "\r" to "\n", and one trailing newline dropped (Jinja2's keep_trailing_newline=False).
std::string normalize_newlines(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\r') {
      out += '\n';
      if (i + 1 < s.size() && s[i + 1] == '\n') ++i;
    } else {
      out += s[i];
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

class Lexer {
 public:
  Lexer(std::string_view source, const std::string& name) : src_(normalize_newlines(source)), name_(name) {}

  std::vector<Token> run() {
    while (pos_ < src_.size()) {
      size_t i = find_opener(pos_);
      if (i == std::string::npos) {
        push(Tok::text, src_.substr(pos_), line_);
        advance_to(src_.size());
        break;
      }
      char kind = src_[i + 1];
      char sign = i + 2 < src_.size() && (src_[i + 2] == '-' || src_[i + 2] == '+') ? src_[i + 2] : 0;
      std::string_view text = std::string_view(src_).substr(pos_, i - pos_);
      text = strip_before_tag(text, kind, sign);
      if (!text.empty()) push(Tok::text, std::string(text), line_);
      advance_to(i + 2 + (sign ? 1 : 0));
      line_starting_ = false;
      if (kind == '#') lex_comment();
      else if (kind == '%' && lex_raw()) continue;
      else lex_tag(kind);
    }
    push(Tok::eof, "", line_);
    return std::move(out_);
  }

 private:
  [[noreturn]] void fail(const std::string& message) const { throw TemplateError(name_, line_, message); }

  void push(Tok t, std::string value, int line) { out_.push_back({t, std::move(value), line}); }

  void advance_to(size_t p) {
    for (; pos_ < p; ++pos_)
      if (src_[pos_] == '\n') ++line_;
  }

  bool at(std::string_view s) const { return std::string_view(src_).substr(pos_, s.size()) == s; }

  size_t find_opener(size_t from) const {
    for (size_t i = src_.find('{', from); i != std::string::npos; i = src_.find('{', i + 1))
      if (i + 1 < src_.size() && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#')) return i;
    return std::string::npos;
  }

  // The text before a tag: `-` strips all its trailing whitespace; lstrip_blocks strips the
  // spaces between the last newline and a block or comment tag (not a `{{`) unless `+` says not to.
  std::string_view strip_before_tag(std::string_view text, char kind, char sign) const {
    if (sign == '-') return rstrip_space(text);
    if (sign == '+' || kind == '{') return text;
    size_t l_pos = text.rfind('\n');
    l_pos = l_pos == std::string_view::npos ? 0 : l_pos + 1;
    if ((l_pos > 0 || line_starting_) && all_space(text.substr(l_pos))) return text.substr(0, l_pos);
    return text;
  }

  void skip_space() {
    size_t p = pos_;
    while (p < src_.size()) {
      size_t n = space_at(src_, p);
      if (!n) break;
      p += n;
    }
    advance_to(p);
  }

  // After a tag's end: `-` strips all whitespace; otherwise trim_blocks drops one newline (block
  // and comment ends only).
  void after_tag_end(char sign, bool trim) {
    size_t start = pos_;
    if (sign == '-') skip_space();
    else if (sign != '+' && trim && pos_ < src_.size() && src_[pos_] == '\n') advance_to(pos_ + 1);
    line_starting_ = pos_ > start && src_[pos_ - 1] == '\n';
  }

  void lex_comment() {
    size_t e = src_.find("#}", pos_);
    if (e == std::string::npos) fail("missing end of comment tag");
    char sign = e > pos_ && (src_[e - 1] == '-' || src_[e - 1] == '+') ? src_[e - 1] : 0;
    advance_to(e + 2);
    after_tag_end(sign, true);
  }

  // {% raw %}...{% endraw %}: the text between, untouched.
  bool lex_raw() {
    size_t p = pos_;
    while (p < src_.size() && space_at(src_, p)) p += space_at(src_, p);
    if (src_.compare(p, 3, "raw") != 0) return false;
    p += 3;
    while (p < src_.size() && space_at(src_, p)) p += space_at(src_, p);
    char sign = 0;
    if (src_.compare(p, 3, "-%}") == 0) sign = '-', p += 3;
    else if (src_.compare(p, 2, "%}") == 0) p += 2;
    else return false;
    const int raw_line = line_;
    advance_to(p);
    if (sign == '-') skip_space();  // the raw tag itself has no trim_blocks newline
    for (size_t i = src_.find("{%", pos_); i != std::string::npos; i = src_.find("{%", i + 1)) {
      size_t q = i + 2;
      char begin_sign = q < src_.size() && (src_[q] == '-' || src_[q] == '+') ? src_[q++] : 0;
      while (q < src_.size() && space_at(src_, q)) q += space_at(src_, q);
      if (src_.compare(q, 6, "endraw") != 0) continue;
      q += 6;
      while (q < src_.size() && space_at(src_, q)) q += space_at(src_, q);
      char end_sign = 0;
      if (src_.compare(q, 3, "-%}") == 0 || src_.compare(q, 3, "+%}") == 0) end_sign = src_[q], q += 3;
      else if (src_.compare(q, 2, "%}") == 0) q += 2;
      else continue;
      std::string_view text = strip_before_tag(std::string_view(src_).substr(pos_, i - pos_), '%', begin_sign);
      if (!text.empty()) push(Tok::text, std::string(text), line_);
      advance_to(q);
      after_tag_end(end_sign, true);
      return true;
    }
    line_ = raw_line;
    fail("missing end of raw directive");
  }

  void lex_tag(char kind) {
    push(kind == '{' ? Tok::var_begin : Tok::block_begin, "", line_);
    std::string balance;  // open brackets: `}}` inside a dict literal does not end the tag
    while (true) {
      skip_space();
      if (pos_ >= src_.size()) fail(kind == '{' ? "unexpected end of template, expected '}}'" : "unexpected end of template, expected '%}'");
      if (balance.empty()) {
        const char* close = kind == '{' ? "}}" : "%}";
        for (char sign : {'-', '+', '\0'}) {
          if (sign == '+' && kind == '{') continue;
          std::string end = sign ? std::string(1, sign) + close : std::string(close);
          if (!at(end)) continue;
          push(kind == '{' ? Tok::var_end : Tok::block_end, "", line_);
          advance_to(pos_ + end.size());
          after_tag_end(sign, kind == '%');
          return;
        }
      }
      lex_token(balance);
    }
  }

  void lex_token(std::string& balance) {
    char c = src_[pos_];
    const int line = line_;
    if (std::isdigit(static_cast<unsigned char>(c))) return lex_number();
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t e = pos_;
      while (e < src_.size() && (std::isalnum(static_cast<unsigned char>(src_[e])) || src_[e] == '_')) ++e;
      push(Tok::name, src_.substr(pos_, e - pos_), line);
      advance_to(e);
      return;
    }
    if (c == '\'' || c == '"') return lex_string(c);
    static const char* const kOps[] = {"//", "**", "==", "!=", ">=", "<=", "+", "-", "/", "*", "%", "~", "[", "]",
                                       "(", ")", "{", "}", ">", "<", "=", ".", ":", "|", ",", ";"};
    for (const char* op : kOps) {
      if (!at(op)) continue;
      std::string o = op;
      if (o == "(" || o == "[" || o == "{") balance += o;
      if (o == ")" || o == "]" || o == "}") {
        const char open = o == ")" ? '(' : o == "]" ? '[' : '{';
        if (balance.empty() || balance.back() != open) fail("unexpected '" + o + "'");
        balance.pop_back();
      }
      push(Tok::op, o, line);
      advance_to(pos_ + o.size());
      return;
    }
    size_t n = pos_;
    utf8::next_codepoint(src_, n);
    fail("unexpected char " + pystr::repr(src_.substr(pos_, n - pos_)));
  }

  // Jinja2's numbers: 1_000, 0x1f, 0o17, 0b101, 1.5, 1e3, 2.5E-3 (no float right after a '.',
  // so messages.0.content reads as attribute 0).
  void lex_number() {
    auto digits = [&](size_t p) {
      size_t s = p;
      while (p < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[p])) ||
                                 (src_[p] == '_' && p > s && p + 1 < src_.size() && std::isdigit(static_cast<unsigned char>(src_[p + 1])))))
        ++p;
      return p;
    };
    auto exponent = [&](size_t p) -> size_t {
      if (p >= src_.size() || (src_[p] != 'e' && src_[p] != 'E')) return 0;
      ++p;
      if (p < src_.size() && (src_[p] == '+' || src_[p] == '-')) ++p;
      size_t e = digits(p);
      return e > p ? e : 0;
    };
    const int line = line_;
    size_t e = digits(pos_);
    bool after_dot = pos_ > 0 && src_[pos_ - 1] == '.';
    if (!after_dot) {
      size_t f = 0;
      if (e + 1 < src_.size() && src_[e] == '.' && std::isdigit(static_cast<unsigned char>(src_[e + 1]))) {
        f = digits(e + 1);
        if (size_t x = exponent(f)) f = x;
      } else {
        f = exponent(e);
      }
      if (f) {
        std::string s = src_.substr(pos_, f - pos_);
        std::erase(s, '_');
        push(Tok::floating, s, line);
        advance_to(f);
        return;
      }
    }
    if (src_[pos_] == '0' && e == pos_ + 1 && e < src_.size() && std::string_view("xXoObB").find(src_[e]) != std::string_view::npos) {
      const int base = std::tolower(src_[e]) == 'x' ? 16 : std::tolower(src_[e]) == 'o' ? 8 : 2;
      size_t p = e + 1;
      while (p < src_.size() && (src_[p] == '_' || (hex_value(src_[p]) >= 0 && hex_value(src_[p]) < base))) ++p;
      if (p == e + 1) fail("invalid number literal");
      std::string s = src_.substr(e + 1, p - e - 1);
      std::erase(s, '_');
      push(Tok::integer, std::to_string(std::stoll(s, nullptr, base)), line);
      advance_to(p);
      return;
    }
    std::string s = src_.substr(pos_, e - pos_);
    std::erase(s, '_');
    push(Tok::integer, s, line);
    advance_to(e);
  }

  // A quoted string with Python's escapes (Jinja2 decodes literals with "unicode-escape").
  void lex_string(char quote) {
    const int line = line_;
    std::string out;
    size_t p = pos_ + 1;
    auto hex = [&](size_t& q, int n) -> uint32_t {
      uint32_t v = 0;
      for (int k = 0; k < n; ++k, ++q) {
        if (q >= src_.size() || hex_value(src_[q]) < 0) fail("truncated \\x, \\u or \\U escape in a string");
        v = v * 16 + hex_value(src_[q]);
      }
      return v;
    };
    while (true) {
      if (p >= src_.size()) fail("unterminated string");
      char c = src_[p];
      if (c == quote) break;
      if (c != '\\') {
        out += c;
        ++p;
        continue;
      }
      if (++p >= src_.size()) fail("unterminated string");
      char e = src_[p++];
      switch (e) {
        case '\n': break;
        case '\\': out += '\\'; break;
        case '\'': out += '\''; break;
        case '"': out += '"'; break;
        case 'a': out += '\a'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'v': out += '\v'; break;
        case 'x': utf8::append_codepoint(out, hex(p, 2)); break;
        case 'u': case 'U': {
          uint32_t cp = hex(p, e == 'u' ? 4 : 8);
          // A surrogate pair written as two \u escapes is taken as the one character it encodes.
          if (cp >= 0xd800 && cp < 0xdc00 && src_.compare(p, 2, "\\u") == 0) {
            size_t q = p + 2;
            uint32_t lo = hex(q, 4);
            if (lo >= 0xdc00 && lo < 0xe000) cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00), p = q;
          }
          if (cp > 0x10ffff) fail("illegal Unicode character in a string");
          utf8::append_codepoint(out, cp);
          break;
        }
        default:
          if (e >= '0' && e <= '7') {
            uint32_t v = e - '0';
            for (int k = 0; k < 2 && p < src_.size() && src_[p] >= '0' && src_[p] <= '7'; ++k) v = v * 8 + (src_[p++] - '0');
            utf8::append_codepoint(out, v);
          } else {  // Python keeps an unknown escape as written
            out += '\\';
            out += e;
          }
      }
    }
    push(Tok::string, std::move(out), line);
    advance_to(p + 1);
  }

  std::string src_;
  const std::string& name_;
  size_t pos_ = 0;
  int line_ = 1;
  bool line_starting_ = true;
  std::vector<Token> out_;
};

}  // namespace

std::vector<Token> tokenize(std::string_view source, const std::string& name) { return Lexer(source, name).run(); }

}  // namespace nanovllm::jinja
