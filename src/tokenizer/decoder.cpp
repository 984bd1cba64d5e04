// Decoders (see decoder.h). Each step reproduces HF's decode_chain for that decoder; the stream
// holds back only what a later token can still change:
//  - ByteFallback: a run of <0xNN> tokens is one string if valid UTF-8, else one U+FFFD per byte,
//    so the whole run waits until a token that is not a byte (or the end);
//  - ByteLevel: bytes of all tokens read as one lossy UTF-8 string: only a trailing incomplete
//    character waits;
//  - after a Fuse, the steps see one string: Strip's start is stripped once, its stop holds back
//    at most `stop` trailing characters, a literal Replace holds back what could start a match,
//    Metaspace treats everything as token 0; anything else there (rare) waits for the end.
#include "tokenizer/decoder.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "tokenizer/byte_level.h"
#include "tokenizer/regex.h"
#include "tokenizer/utf8.h"

namespace nanovllm {
namespace {

using Kind = Decoder::Step::Kind;
constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";

[[noreturn]] void fail(std::string_view where, const std::string& what) {
  throw std::runtime_error(std::string(where) + ": decoder " + what);
}

// A JSON string holding exactly one character (HF's `char` fields).
uint32_t one_char(const nlohmann::json& j, const char* key, std::string_view where, const char* type) {
  if (!j.contains(key) || !j[key].is_string())
    fail(where, std::string(type) + " needs a one-character string \"" + key + "\"");
  std::string s = j[key];
  size_t i = 0;
  uint32_t c = s.empty() ? 0 : utf8::next_codepoint(s, i);
  if (s.empty() || i != s.size())
    fail(where, std::string(type) + " \"" + key + "\" must be exactly one character, not \"" + s + "\"");
  return c;
}

size_t count_field(const nlohmann::json& j, const char* key) {
  if (!j.contains(key) || j[key].is_null()) return 0;
  return j[key].get<size_t>();
}

void add_steps(const nlohmann::json& j, std::string_view where, std::vector<Decoder::Step>& steps) {
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string())
    fail(where, "must be an object with a \"type\"");
  const std::string type = j["type"];
  Decoder::Step s;
  if (type == "Sequence") {
    if (!j.contains("decoders") || !j["decoders"].is_array()) fail(where, "Sequence without a \"decoders\" list");
    for (const auto& d : j["decoders"]) add_steps(d, where, steps);
    return;
  } else if (type == "ByteLevel") {
    s.kind = Kind::byte_level;  // add_prefix_space / trim_offsets only matter to offsets
  } else if (type == "Replace") {
    s.kind = Kind::replace;
    const auto& pat = j.value("pattern", nlohmann::json());
    s.content = j.value("content", std::string());
    if (pat.is_object() && pat.contains("String") && pat["String"].is_string()) {
      s.pattern = pat["String"];
      if (s.pattern.empty()) fail(where, "Replace with an empty String pattern is not supported");
    } else if (pat.is_object() && pat.contains("Regex") && pat["Regex"].is_string()) {
      if (s.content.find('$') != std::string::npos)
        fail(where, "Replace with a Regex pattern and \"$\" group references in its content is not supported");
      s.regex = std::make_shared<const Regex>(pat["Regex"].get<std::string>(), where);
    } else {
      fail(where, "Replace pattern must be {\"String\": ...} or {\"Regex\": ...}");
    }
  } else if (type == "ByteFallback") {
    s.kind = Kind::byte_fallback;
  } else if (type == "Fuse") {
    s.kind = Kind::fuse;
  } else if (type == "Strip") {
    s.kind = Kind::strip;
    s.ch = one_char(j, "content", where, "Strip");
    s.start = count_field(j, "start");
    s.stop = count_field(j, "stop");
  } else if (type == "Metaspace") {
    s.kind = Kind::metaspace;
    s.ch = one_char(j, "replacement", where, "Metaspace");
    // prepend_scheme "always"/"first" drop the replacement in the first token, "never" does not;
    // files older than prepend_scheme say it with add_prefix_space.
    if (j.contains("prepend_scheme") && j["prepend_scheme"].is_string()) {
      const std::string scheme = j["prepend_scheme"];
      if (scheme != "always" && scheme != "first" && scheme != "never")
        fail(where, "Metaspace prepend_scheme \"" + scheme + "\" is not supported");
      s.prepend = scheme != "never";
    } else {
      s.prepend = j.value("add_prefix_space", true);
    }
  } else {
    fail(where, "type \"" + type + "\" is not supported (ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace, Sequence)");
  }
  steps.push_back(std::move(s));
}

bool is_continuation(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// HF's ByteFallback test: six bytes "<0x" XY ">" with XY parsed by Rust's u8::from_str_radix(_, 16),
// which also takes a leading '+'.
bool byte_token(std::string_view t, uint8_t& b) {
  if (t.size() != 6 || t.substr(0, 3) != "<0x" || t[5] != '>') return false;
  if (t[3] == '+') {
    int v = hex_digit(t[4]);
    if (v < 0) return false;
    b = static_cast<uint8_t>(v);
    return true;
  }
  int hi = hex_digit(t[3]), lo = hex_digit(t[4]);
  if (hi < 0 || lo < 0) return false;
  b = static_cast<uint8_t>(hi * 16 + lo);
  return true;
}

// Replace on one string: every non-overlapping match, left to right, becomes `content`.
std::string replace_all(const Decoder::Step& s, std::string_view t) {
  std::string out;
  size_t prev = 0, pos = 0;
  while (pos <= t.size()) {
    size_t mb, me;
    if (s.regex) {
      if (!s.regex->find(t, pos, mb, me)) break;
    } else {
      mb = t.find(s.pattern, pos);
      if (mb == std::string_view::npos) break;
      me = mb + s.pattern.size();
    }
    out.append(t.substr(prev, mb - prev));
    out += s.content;
    prev = me;
    if (me == mb) {  // an empty regex match: step over one character, as Onig's find_iter does
      if (me >= t.size()) break;
      size_t len;
      utf8::step(t, me, len);
      out.append(t.substr(me, len));
      prev = me + len;
      pos = me + len;
    } else {
      pos = me;
    }
  }
  out.append(t.substr(std::min(prev, t.size())));
  return out;
}

// Strip on one string: up to `start` leading and `stop` trailing copies of the character.
std::string strip(const Decoder::Step& s, std::string_view t) {
  std::vector<size_t> starts;  // byte offset of each character
  for (size_t i = 0; i < t.size();) {
    starts.push_back(i);
    utf8::next_codepoint(t, i);
  }
  const size_t n = starts.size();
  auto char_at = [&](size_t k) {
    size_t i = starts[k];
    return utf8::next_codepoint(t, i);
  };
  size_t start_cut = 0;
  for (size_t k = 0; k < std::min(s.start, n); ++k) {
    if (char_at(k) != s.ch) break;
    start_cut = k + 1;
  }
  size_t stop_cut = n;
  for (size_t k = 0; k < std::min(s.stop, n - start_cut); ++k) {
    if (char_at(n - k - 1) != s.ch) break;
    stop_cut = n - k - 1;
  }
  size_t b = start_cut < n ? starts[start_cut] : t.size(), e = stop_cut < n ? starts[stop_cut] : t.size();
  return std::string(t.substr(b, e - b));
}

// Metaspace on one token: the replacement character becomes a space, or nothing in token 0.
std::string metaspace(const Decoder::Step& s, std::string_view t, bool first_token) {
  std::string out;
  for (size_t i = 0; i < t.size();) {
    size_t at = i;
    if (utf8::next_codepoint(t, i) == s.ch) {
      if (!(first_token && s.prepend)) out.push_back(' ');
    } else {
      out.append(t.substr(at, i - at));
    }
  }
  return out;
}

// ByteLevel on one token: the bytes its characters stand for, or its own UTF-8 when any character
// is outside the byte alphabet (as HF's decoder does for added tokens like "<|im_end|>").
std::string byte_level_bytes(std::string_view t) { return byte_level::token_to_bytes(t); }

// Appends the bytes read as UTF-8 up to a trailing incomplete character, lossily; returns how
// many bytes that consumed.
size_t append_final_utf8(std::string& out, std::string_view bytes) {
  size_t i = 0, len;
  while (i < bytes.size()) {
    if (utf8::step(bytes, i, len) == utf8::Step::incomplete) break;
    i += len;
  }
  utf8::append_lossy(out, bytes.substr(0, i));
  return i;
}

}  // namespace

Decoder Decoder::from_json(const nlohmann::json& j, std::string_view where) {
  Decoder d;
  if (j.is_null()) return d;
  add_steps(j, where, d.steps_);
  bool fused = false;
  for (Step& s : d.steps_) {
    s.fused_input = fused;
    if (s.kind == Kind::fuse || s.kind == Kind::byte_level) fused = true;
  }
  if (d.steps_.empty()) {  // an empty Sequence is no decoder at all, but it still joins without spaces
    d.steps_.push_back(Step{});
    d.steps_.back().kind = Kind::fuse;
  }
  return d;
}

std::string Decoder::decode(const std::vector<std::string_view>& tokens) const {
  DecodeStream s(*this);
  std::string out;
  for (std::string_view t : tokens) s.push(t, out);
  s.finish(out);
  return out;
}

DecodeStream::DecodeStream(const Decoder& d) : d_(d), st_(d.steps().size()) {}

void DecodeStream::push(std::string_view token, std::string& out) {
  if (d_.join_with_spaces()) {  // no decoder: HF joins the tokens with single spaces
    if (!first_) out.push_back(' ');
    out.append(token);
    first_ = false;
    return;
  }
  first_ = false;
  feed(0, token, out);
}

void DecodeStream::finish(std::string& out) {
  if (!d_.join_with_spaces()) finish_from(0, out);
}

// Hands `item` (a token, or a piece of the fused string) to step k.
void DecodeStream::feed(size_t k, std::string_view item, std::string& out) {
  const auto& steps = d_.steps();
  if (k == steps.size()) {
    out.append(item);
    return;
  }
  const Decoder::Step& s = steps[k];
  State& st = st_[k];
  switch (s.kind) {
    case Kind::fuse:
      feed(k + 1, item, out);
      return;
    case Kind::byte_level: {
      if (s.fused_input) {  // one fused token: whether it maps to bytes is known only at the end
        st.held.append(item);
        return;
      }
      st.held += byte_level_bytes(item);
      std::string text;
      st.held.erase(0, append_final_utf8(text, st.held));
      if (!text.empty()) feed(k + 1, text, out);
      return;
    }
    case Kind::byte_fallback: {
      if (s.fused_input) {
        st.held.append(item);
        return;
      }
      uint8_t b;
      if (byte_token(item, b)) {
        st.held.push_back(static_cast<char>(b));
        return;
      }
      flush_step(k, out);
      feed(k + 1, item, out);
      return;
    }
    case Kind::replace: {
      if (!s.fused_input) {
        feed(k + 1, replace_all(s, item), out);
        return;
      }
      st.held.append(item);
      if (s.regex) return;  // a regex match may span any later piece: wait for the end
      // Literal: matches wholly inside `held` are final; a match may still start in the last
      // pattern-length-minus-one bytes, so those wait.
      std::string text;
      const std::string& h = st.held;
      size_t pos = 0;
      for (;;) {
        size_t m = h.find(s.pattern, pos);
        if (m == std::string::npos) break;
        text.append(h, pos, m - pos);
        text += s.content;
        pos = m + s.pattern.size();
      }
      size_t keep = h.size() >= s.pattern.size() - 1 ? h.size() - (s.pattern.size() - 1) : 0;
      keep = std::max(keep, pos);
      while (keep > pos && keep < h.size() && is_continuation(h[keep])) --keep;
      text.append(h, pos, keep - pos);
      st.held.erase(0, keep);
      if (!text.empty()) feed(k + 1, text, out);
      return;
    }
    case Kind::strip: {
      if (!s.fused_input) {
        feed(k + 1, strip(s, item), out);
        return;
      }
      // One string in pieces: strip its first `start` characters once, hold back at most `stop`
      // trailing ones.
      size_t i = 0;
      while (!st.done && i < item.size()) {
        size_t q = i;
        if (st.count < s.start && utf8::next_codepoint(item, q) == s.ch) {
          ++st.count;
          i = q;
        } else {
          st.done = true;
        }
      }
      if (st.count >= s.start) st.done = true;
      st.held.append(item.substr(i));
      if (s.stop == 0) {
        std::string text;
        text.swap(st.held);
        if (!text.empty()) feed(k + 1, text, out);
        return;
      }
      size_t cut = st.held.size(), trailing = 0;  // the last `stop` characters equal to ch wait
      while (cut > 0 && trailing < s.stop) {
        size_t b = cut - 1;
        while (b > 0 && is_continuation(st.held[b])) --b;
        size_t q = b;
        if (utf8::next_codepoint(st.held, q) != s.ch) break;
        cut = b;
        ++trailing;
      }
      std::string text = st.held.substr(0, cut);
      st.held.erase(0, cut);
      if (!text.empty()) feed(k + 1, text, out);
      return;
    }
    case Kind::metaspace: {
      bool first = s.fused_input || st.count == 0;
      ++st.count;
      feed(k + 1, metaspace(s, item, first), out);
      return;
    }
  }
}

// Step k has seen its last input: what it held is final now.
void DecodeStream::flush_step(size_t k, std::string& out) {
  const Decoder::Step& s = d_.steps()[k];
  State& st = st_[k];
  std::string held;
  held.swap(st.held);
  switch (s.kind) {
    case Kind::fuse:
    case Kind::metaspace:
      return;
    case Kind::byte_level: {
      std::string text;
      utf8::append_lossy(text, s.fused_input ? byte_level_bytes(held) : held);
      if (!text.empty()) feed(k + 1, text, out);
      return;
    }
    case Kind::byte_fallback: {
      uint8_t b;
      std::string bytes;
      if (!s.fused_input) bytes.swap(held);
      else if (byte_token(held, b)) bytes.assign(1, static_cast<char>(b));
      else if (!held.empty()) feed(k + 1, held, out);
      if (bytes.empty()) return;
      if (utf8::find_invalid(bytes) == std::string::npos) {
        feed(k + 1, bytes, out);
      } else {  // HF: not valid UTF-8 as a whole, so every byte becomes U+FFFD
        for (size_t i = 0; i < bytes.size(); ++i) feed(k + 1, kReplacementChar, out);
      }
      return;
    }
    case Kind::replace:
      if (!held.empty()) feed(k + 1, s.regex ? replace_all(s, held) : held, out);
      return;
    case Kind::strip:
      return;  // only the trailing copies of the character were held: they are stripped
  }
}

void DecodeStream::finish_from(size_t k, std::string& out) {
  for (; k < d_.steps().size(); ++k) flush_step(k, out);
}

}  // namespace nanovllm
