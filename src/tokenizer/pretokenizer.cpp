// Split / ByteLevel / Sequence pre-tokenizers (see pretokenizer.h).
#include "tokenizer/pretokenizer.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "tokenizer/utf8.h"

namespace nanovllm {
namespace {

// GPT-2's pattern, which HF's ByteLevel pre-tokenizer uses when use_regex is true.
constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

using Behavior = PreTokenizer::Behavior;

Behavior parse_behavior(const std::string& b, std::string_view where) {
  if (b == "Removed") return Behavior::removed;
  if (b == "Isolated") return Behavior::isolated;
  if (b == "MergedWithPrevious") return Behavior::merged_with_previous;
  if (b == "MergedWithNext") return Behavior::merged_with_next;
  if (b == "Contiguous") return Behavior::contiguous;
  throw std::runtime_error(std::string(where) + ": Split behavior \"" + b + "\" is not supported");
}

bool flag(const nlohmann::json& j, const char* key, bool dflt) {
  return j.contains(key) && j[key].is_boolean() ? j[key].get<bool>() : dflt;
}

struct Builder {
  std::string_view where;
  std::vector<PreTokenizer::Step>& steps;
  bool& add_prefix_space;
  bool& byte_level;

  void add(const nlohmann::json& j) {
    if (j.is_null()) return;
    if (!j.is_object() || !j.contains("type") || !j["type"].is_string())
      throw std::runtime_error(std::string(where) + ": pre_tokenizer must be an object with a \"type\"");
    std::string type = j["type"];
    if (type == "Sequence") {
      if (!j.contains("pretokenizers") || !j["pretokenizers"].is_array())
        throw std::runtime_error(std::string(where) + ": Sequence pre_tokenizer without \"pretokenizers\"");
      for (const auto& p : j["pretokenizers"]) add(p);
    } else if (type == "Split") {
      PreTokenizer::Step s;
      const auto& pat = j.at("pattern");
      if (pat.contains("Regex")) s.regex = std::make_unique<Regex>(pat["Regex"].get<std::string>(), where);
      else if (pat.contains("String")) s.literal = pat["String"].get<std::string>();
      else throw std::runtime_error(std::string(where) + ": Split pattern must be {\"Regex\": ...} or {\"String\": ...}");
      if (!s.regex && s.literal.empty()) throw std::runtime_error(std::string(where) + ": Split with an empty String pattern");
      s.behavior = parse_behavior(j.value("behavior", std::string("Isolated")), where);
      s.invert = flag(j, "invert", false);
      steps.push_back(std::move(s));
    } else if (type == "ByteLevel") {
      // Bytes are mapped to the byte-level alphabet implicitly: BPE runs on raw bytes.
      byte_level = true;
      if (flag(j, "add_prefix_space", false)) {
        if (!steps.empty())
          throw std::runtime_error(std::string(where) +
                                   ": ByteLevel add_prefix_space after another pre-tokenizer is not supported");
        add_prefix_space = true;
      }
      if (flag(j, "use_regex", true)) {
        PreTokenizer::Step s;
        s.regex = std::make_unique<Regex>(kGpt2Pattern, where);
        s.behavior = Behavior::isolated;
        steps.push_back(std::move(s));
      }
    } else {
      throw std::runtime_error(std::string(where) + ": pre_tokenizer type \"" + type + "\" is not supported");
    }
  }
};

struct Match {
  Range r;
  bool is_match;
};

// Cuts text[piece] into matched and unmatched ranges, as HF's Pattern::find_matches does.
void find_matches(const PreTokenizer::Step& s, std::string_view text, Range piece, std::vector<Match>& out) {
  std::string_view sub = text.substr(piece.begin, piece.end - piece.begin);
  size_t prev = 0, pos = 0;
  while (pos <= sub.size()) {
    size_t mb, me;
    if (s.regex) {
      if (!s.regex->find(sub, pos, mb, me)) break;
    } else {
      mb = sub.find(s.literal, pos);
      if (mb == std::string_view::npos) break;
      me = mb + s.literal.size();
    }
    if (mb != prev) out.push_back({{piece.begin + uint32_t(prev), piece.begin + uint32_t(mb)}, false});
    out.push_back({{piece.begin + uint32_t(mb), piece.begin + uint32_t(me)}, true});
    prev = me;
    if (me == mb) {  // an empty match: step over one character, as Onig's find_iter does
      if (me >= sub.size()) break;
      size_t len;
      utf8::step(sub, me, len);
      pos = me + len;
    } else {
      pos = me;
    }
  }
  if (prev != sub.size()) out.push_back({{piece.begin + uint32_t(prev), piece.end}, false});
}

// Applies the split behavior (HF's SplitDelimiterBehavior) and appends non-empty pieces.
void apply_behavior(Behavior b, std::vector<Match>& m, std::vector<Range>& out) {
  std::vector<Match> acc;
  switch (b) {
    case Behavior::isolated: acc = m; break;
    case Behavior::removed:
      for (auto& x : m)
        if (!x.is_match) acc.push_back(x);
      break;
    case Behavior::merged_with_previous: {
      bool prev_match = false;
      for (auto& x : m) {
        if (x.is_match && !prev_match && !acc.empty()) acc.back().r.end = x.r.end;
        else acc.push_back(x);
        prev_match = x.is_match;
      }
      break;
    }
    case Behavior::merged_with_next: {
      bool prev_match = false;
      for (size_t k = m.size(); k-- > 0;) {
        auto& x = m[k];
        if (x.is_match && !prev_match && !acc.empty()) acc.back().r.begin = x.r.begin;
        else acc.push_back(x);
        prev_match = x.is_match;
      }
      std::reverse(acc.begin(), acc.end());
      break;
    }
    case Behavior::contiguous: {
      bool prev_match = false;
      for (auto& x : m) {
        if (x.is_match == prev_match && !acc.empty()) acc.back().r.end = x.r.end;
        else acc.push_back(x);
        prev_match = x.is_match;
      }
      break;
    }
  }
  for (auto& x : acc)
    if (x.r.end > x.r.begin) out.push_back(x.r);
}

}  // namespace

PreTokenizer::PreTokenizer() = default;
PreTokenizer::~PreTokenizer() = default;
PreTokenizer::PreTokenizer(PreTokenizer&&) noexcept = default;
PreTokenizer& PreTokenizer::operator=(PreTokenizer&&) noexcept = default;

PreTokenizer PreTokenizer::from_json(const nlohmann::json& j, std::string_view where) {
  PreTokenizer p;
  Builder{where, p.steps_, p.add_prefix_space_, p.byte_level_}.add(j);
  return p;
}

void PreTokenizer::split(std::string_view text, std::vector<Range>& out) const {
  if (text.empty()) return;
  Range whole{0, static_cast<uint32_t>(text.size())};
  if (steps_.empty()) {
    out.push_back(whole);
    return;
  }
  // The common case (one isolated regex split) goes straight to `out` without scratch vectors.
  if (steps_.size() == 1 && steps_[0].regex && steps_[0].behavior == Behavior::isolated && !steps_[0].invert) {
    const Regex& re = *steps_[0].regex;
    size_t prev = 0, pos = 0, mb, me;
    while (pos < text.size() && re.find(text, pos, mb, me)) {
      if (mb != prev) out.push_back({uint32_t(prev), uint32_t(mb)});
      if (me == mb) {
        if (me >= text.size()) break;
        size_t len;
        utf8::step(text, me, len);
        pos = me + len;
      } else {
        out.push_back({uint32_t(mb), uint32_t(me)});
        pos = me;
      }
      prev = me;
    }
    if (prev != text.size()) out.push_back({uint32_t(prev), uint32_t(text.size())});
    return;
  }
  std::vector<Range> cur{whole}, next;
  std::vector<Match> matches;
  for (const Step& s : steps_) {
    next.clear();
    for (Range piece : cur) {
      matches.clear();
      find_matches(s, text, piece, matches);
      if (s.invert)
        for (auto& m : matches) m.is_match = !m.is_match;
      apply_behavior(s.behavior, matches, next);
    }
    cur.swap(next);
  }
  out.insert(out.end(), cur.begin(), cur.end());
}

}  // namespace nanovllm
