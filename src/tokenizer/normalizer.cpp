// Unicode normalizers (see normalizer.h).
#include "tokenizer/normalizer.h"

#include <utf8proc.h>

#include <algorithm>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "tokenizer/utf8.h"

namespace nanovllm {
namespace {

void add_forms(const nlohmann::json& j, std::string_view where, std::vector<Normalizer::Form>& forms) {
  if (j.is_null()) return;
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string())
    throw std::runtime_error(std::string(where) + ": normalizer must be an object with a \"type\"");
  std::string type = j["type"];
  if (type == "NFC") forms.push_back(Normalizer::Form::nfc);
  else if (type == "NFD") forms.push_back(Normalizer::Form::nfd);
  else if (type == "NFKC") forms.push_back(Normalizer::Form::nfkc);
  else if (type == "NFKD") forms.push_back(Normalizer::Form::nfkd);
  else if (type == "Sequence") {
    if (!j.contains("normalizers") || !j["normalizers"].is_array())
      throw std::runtime_error(std::string(where) + ": Sequence normalizer without a \"normalizers\" list");
    for (const auto& n : j["normalizers"]) add_forms(n, where, forms);
  } else {
    throw std::runtime_error(std::string(where) + ": normalizer type \"" + type + "\" is not supported");
  }
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
  add_forms(j, where, n.forms_);
  return n;
}

bool Normalizer::apply(std::string_view s, std::string& out) const {
  if (forms_.empty() || is_ascii(s)) return false;  // every form leaves ASCII as it is
  std::string cur(s);
  bool changed = false;
  for (Form f : forms_) {
    std::string next;
    bool differs;
    if (f == Form::nfc) {
      differs = nfc(cur, next);
    } else {
      next = utf8proc_form(cur, f);
      differs = next != cur;
    }
    if (differs) {
      cur.swap(next);
      changed = true;
    }
  }
  if (changed) out.swap(cur);
  return changed;
}

}  // namespace nanovllm
