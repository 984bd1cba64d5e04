// Unicode normalizers (see normalizer.h).
#include "tokenizer/normalizer.h"

#include <utf8proc.h>

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

// True when NFC cannot change s: every character is a starter with no canonical decomposition
// that never appears second in a canonical composition (combining marks and Hangul jamo can).
bool nfc_inert(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    auto b = static_cast<unsigned char>(s[i]);
    if (b < 0xCC) {  // below U+0300 everything is NFC-inert
      i += b < 0x80 ? 1 : 2;
      continue;
    }
    uint32_t cp = utf8::next_codepoint(s, i);
    if (cp >= 0x1100 && cp <= 0x11FF) return false;  // conjoining jamo compose with syllables
    const utf8proc_property_t* p = utf8proc_get_property(static_cast<utf8proc_int32_t>(cp));
    if (p->combining_class != 0) return false;
    if (p->category == UTF8PROC_CATEGORY_MN || p->category == UTF8PROC_CATEGORY_MC ||
        p->category == UTF8PROC_CATEGORY_ME)
      return false;
    if (p->decomp_seqindex != UINT16_MAX && p->decomp_type == 0) return false;  // canonical decomposition
  }
  return true;
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
    if (f == Form::nfc && nfc_inert(cur)) continue;
    utf8proc_uint8_t* res = nullptr;
    utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(cur.data()),
                                      static_cast<utf8proc_ssize_t>(cur.size()), &res, options_for(f));
    if (n < 0) throw std::invalid_argument(std::string("normalizer: ") + utf8proc_errmsg(n));
    std::string next(reinterpret_cast<char*>(res), static_cast<size_t>(n));
    std::free(res);
    if (next != cur) {
      cur.swap(next);
      changed = true;
    }
  }
  if (changed) out.swap(cur);
  return changed;
}

}  // namespace nanovllm
