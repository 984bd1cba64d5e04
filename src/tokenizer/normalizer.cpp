// Normalizers (see normalizer.h).
#include "tokenizer/normalizer.h"

#include <utf8proc.h>

#include <algorithm>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "tokenizer/regex.h"
#include "tokenizer/utf8.h"

namespace nanovllm {
namespace {

using Form = Normalizer::Form;

void add_steps(const nlohmann::json& j, std::string_view where, std::vector<Normalizer::Step>& steps) {
  if (j.is_null()) return;
  auto fail = [&](const std::string& what) { throw std::runtime_error(std::string(where) + ": normalizer " + what); };
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string()) fail("must be an object with a \"type\"");
  std::string type = j["type"];
  Normalizer::Step s;
  if (type == "NFC") s.form = Form::nfc;
  else if (type == "NFD") s.form = Form::nfd;
  else if (type == "NFKC") s.form = Form::nfkc;
  else if (type == "NFKD") s.form = Form::nfkd;
  else if (type == "Prepend") {
    if (!j.contains("prepend") || !j["prepend"].is_string()) fail("Prepend needs a string \"prepend\"");
    s.form = Form::prepend;
    s.text = j["prepend"];
  } else if (type == "Replace") {
    s.form = Form::replace;
    const auto& pat = j.value("pattern", nlohmann::json());
    if (!j.contains("content") || !j["content"].is_string()) fail("Replace needs a string \"content\"");
    s.content = j["content"];
    if (pat.is_object() && pat.contains("String") && pat["String"].is_string()) {
      s.text = pat["String"];
      if (s.text.empty()) fail("Replace with an empty String pattern is not supported");
    } else if (pat.is_object() && pat.contains("Regex") && pat["Regex"].is_string()) {
      if (s.content.find('$') != std::string::npos)
        fail("Replace with a Regex pattern and \"$\" group references in its content is not supported");
      s.regex = std::make_shared<const Regex>(pat["Regex"].get<std::string>(), where);
    } else {
      fail("Replace pattern must be {\"String\": ...} or {\"Regex\": ...}");
    }
  } else if (type == "Sequence") {
    if (!j.contains("normalizers") || !j["normalizers"].is_array()) fail("Sequence without a \"normalizers\" list");
    for (const auto& n : j["normalizers"]) add_steps(n, where, steps);
    return;
  } else {
    fail("type \"" + type + "\" is not supported (NFC, NFD, NFKC, NFKD, Prepend, Replace, Sequence)");
  }
  steps.push_back(std::move(s));
}

// HF's Replace on a NormalizedString: every non-overlapping match, left to right, becomes content.
bool replace(const Normalizer::Step& st, std::string_view s, std::string& out) {
  size_t prev = 0, pos = 0, mb, me;
  bool any = false;
  std::string r;
  while (pos <= s.size()) {
    if (st.regex) {
      if (!st.regex->find(s, pos, mb, me)) break;
    } else {
      mb = s.find(st.text, pos);
      if (mb == std::string_view::npos) break;
      me = mb + st.text.size();
    }
    any = true;
    r.append(s.substr(prev, mb - prev));
    r += st.content;
    prev = me;
    if (me == mb) {  // an empty regex match: step over one character, as Onig's find_iter does
      if (me >= s.size()) break;
      size_t len;
      utf8::step(s, me, len);
      r.append(s.substr(me, len));
      prev = pos = me + len;
    } else {
      pos = me;
    }
  }
  if (!any) return false;
  r.append(s.substr(std::min(prev, s.size())));
  out.swap(r);
  return true;
}

// A character NFC can never touch: a starter with no canonical decomposition that never comes
// second in a canonical composition (combining marks and conjoining jamo can). Text made of
// these is already NFC, and NFC of a text is NFC of its pieces when each piece starts at one.
bool nfc_inert(uint32_t cp) {
  if (cp < 0x300) return true;
  if (cp >= 0x1100 && cp <= 0x11FF) return false;  // conjoining jamo compose with syllables
  const utf8proc_property_t* p = utf8proc_get_property(static_cast<utf8proc_int32_t>(cp));
  if (p->combining_class != 0) return false;
  if (p->category == UTF8PROC_CATEGORY_MN || p->category == UTF8PROC_CATEGORY_MC ||
      p->category == UTF8PROC_CATEGORY_ME)
    return false;
  return !(p->decomp_seqindex != UINT16_MAX && p->decomp_type == 0);  // no canonical decomposition
}

utf8proc_option_t options_for(Normalizer::Form f) {
  switch (f) {
    case Normalizer::Form::nfc: return static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    case Normalizer::Form::nfd: return static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE);
    case Normalizer::Form::nfkc:
      return static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT);
    case Normalizer::Form::nfkd:
      return static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT);
    default:
      break;  // not a Unicode form
  }
  return UTF8PROC_STABLE;
}

bool is_ascii(std::string_view s) {
  for (char c : s)
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  return true;
}

std::string utf8proc_form(std::string_view s, Normalizer::Form f) {
  utf8proc_uint8_t* res = nullptr;
  utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()),
                                    static_cast<utf8proc_ssize_t>(s.size()), &res, options_for(f));
  if (n < 0) throw std::invalid_argument(std::string("normalizer: ") + utf8proc_errmsg(n));
  std::string out(reinterpret_cast<char*>(res), static_cast<size_t>(n));
  std::free(res);
  return out;
}

// NFC that hands utf8proc only the spans around characters NFC may change: most text (even most
// CJK text) has none, and the rest has a few.
bool nfc(std::string_view s, std::string& out) {
  std::string result;
  size_t copied = 0;          // s[..copied] is already in result
  size_t last_inert = 0;      // start of the last inert character seen
  size_t i = 0;
  bool changed = false;
  while (i < s.size()) {
    size_t at = i;
    if (nfc_inert(utf8::next_codepoint(s, i))) {
      last_inert = at;
      continue;
    }
    // A span from the inert starter before this character to the next inert character.
    size_t begin = std::max(last_inert, copied), end = i;
    while (end < s.size()) {
      size_t q = end;
      if (nfc_inert(utf8::next_codepoint(s, q))) break;
      end = q;
    }
    std::string_view span = s.substr(begin, end - begin);
    std::string norm = utf8proc_form(span, Normalizer::Form::nfc);
    if (norm != span) {
      result.append(s.data() + copied, begin - copied);
      result += norm;
      copied = end;
      changed = true;
    }
    i = end;
  }
  if (!changed) return false;
  result.append(s.data() + copied, s.size() - copied);
  out.swap(result);
  return true;
}

}  // namespace

Normalizer Normalizer::from_json(const nlohmann::json& j, std::string_view where) {
  Normalizer n;
  add_steps(j, where, n.steps_);
  return n;
}

bool Normalizer::apply(std::string_view s, std::string& out) const {
  if (steps_.empty()) return false;
  std::string cur;
  std::string_view view = s;  // the text so far: s, or cur once a step changed it
  bool changed = false;
  for (const Step& st : steps_) {
    std::string next;
    bool differs;
    switch (st.form) {
      case Form::prepend:
        if (view.empty()) continue;  // HF prepends only to non-empty text
        next = st.text;
        next.append(view);
        differs = true;
        break;
      case Form::replace:
        differs = replace(st, view, next);
        break;
      case Form::nfc:
        differs = !is_ascii(view) && nfc(view, next);  // every Unicode form leaves ASCII as it is
        break;
      default:
        if (is_ascii(view)) continue;
        next = utf8proc_form(view, st.form);
        differs = next != view;
        break;
    }
    if (differs) {
      cur.swap(next);
      view = cur;
      changed = true;
    }
  }
  if (changed) out.swap(cur);
  return changed;
}

}  // namespace nanovllm
