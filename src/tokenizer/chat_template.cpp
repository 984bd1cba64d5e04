// Native renderers for known chat templates (see chat_template.h).
#include "tokenizer/chat_template.h"

#include <xxhash.h>

#include <stdexcept>

namespace nanovllm {
namespace {

// XXH3-64 of Qwen3's template text (Qwen3-0.6B ... Qwen3-235B-A22B, first release); checked by
// test_chat_template against models/qwen3-tokenizer/tokenizer_config.json.
constexpr uint64_t kQwen3TemplateHashes[] = {0x0283f874ff58d644ull};

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }
bool ends_with(std::string_view s, std::string_view p) {
  return s.size() >= p.size() && s.substr(s.size() - p.size()) == p;
}

// Python's str.strip/lstrip/rstrip with a one-character set.
std::string_view lstrip(std::string_view s, char c) {
  while (!s.empty() && s.front() == c) s.remove_prefix(1);
  return s;
}
std::string_view rstrip(std::string_view s, char c) {
  while (!s.empty() && s.back() == c) s.remove_suffix(1);
  return s;
}

// Python's s.split(sep)[0] and s.split(sep)[-1].
std::string_view before_first(std::string_view s, std::string_view sep) {
  size_t p = s.find(sep);
  return p == std::string_view::npos ? s : s.substr(0, p);
}
std::string_view after_last(std::string_view s, std::string_view sep) {
  size_t p = s.rfind(sep);
  return p == std::string_view::npos ? s : s.substr(p + sep.size());
}

}  // namespace

uint64_t chat_template_hash(std::string_view source) { return XXH3_64bits(source.data(), source.size()); }

ChatTemplate::ChatTemplate(std::string source, std::string where) : source_(std::move(source)), where_(std::move(where)) {
  if (source_.empty()) {
    kind_ = Kind::none;
    return;
  }
  kind_ = Kind::unsupported;
  uint64_t h = chat_template_hash(source_);
  for (uint64_t known : kQwen3TemplateHashes)
    if (h == known) kind_ = Kind::qwen3;
}

std::string ChatTemplate::render(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                                 bool enable_thinking) const {
  switch (kind_) {
    case Kind::qwen3: return render_qwen3(messages, add_generation_prompt, enable_thinking);
    case Kind::none: throw std::runtime_error(where_ + ": the model has no chat template");
    case Kind::unsupported: break;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(chat_template_hash(source_)));
  throw std::runtime_error(where_ + ": chat template (xxh3 " + buf +
                           ") is not one nanovllm renders; supported: Qwen3's template");
}

std::string render_qwen3(const std::vector<ChatMessage>& messages, bool add_generation_prompt, bool enable_thinking) {
  // Jinja raises on messages[0].role of an empty list; so do we.
  if (messages.empty()) throw std::invalid_argument("chat template: no messages");
  std::string out;
  const size_t n = messages.size();
  if (messages[0].role == "system") out += "<|im_start|>system\n" + messages[0].content + "<|im_end|>\n";

  // The last real user query: tool responses sent as user turns do not count.
  size_t last_query_index = n - 1;
  for (size_t k = n; k-- > 0;) {
    const ChatMessage& m = messages[k];
    if (m.role == "user" && !(starts_with(m.content, "<tool_response>") && ends_with(m.content, "</tool_response>"))) {
      last_query_index = k;
      break;
    }
  }

  for (size_t i = 0; i < n; ++i) {
    const ChatMessage& m = messages[i];
    if (m.role == "user" || (m.role == "system" && i != 0)) {
      out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
    } else if (m.role == "assistant") {
      std::string_view content = m.content;
      std::string_view reasoning;
      // An empty reasoning_content stands for "not given" (ChatMessage has no null).
      if (!m.reasoning_content.empty()) {
        reasoning = m.reasoning_content;
      } else if (content.find("</think>") != std::string_view::npos) {
        std::string_view whole = m.content;
        content = lstrip(after_last(whole, "</think>"), '\n');
        reasoning = lstrip(after_last(rstrip(before_first(whole, "</think>"), '\n'), "<think>"), '\n');
      }
      out += "<|im_start|>assistant\n";
      if (i > last_query_index && (i == n - 1 || !reasoning.empty())) {
        out += "<think>\n";
        out += rstrip(lstrip(reasoning, '\n'), '\n');
        out += "\n</think>\n\n";
        out += lstrip(content, '\n');
      } else {
        out += content;
      }
      out += "<|im_end|>\n";
    } else if (m.role == "tool") {
      if (i == 0 || messages[i - 1].role != "tool") out += "<|im_start|>user";
      out += "\n<tool_response>\n" + m.content + "\n</tool_response>";
      if (i == n - 1 || messages[i + 1].role != "tool") out += "<|im_end|>\n";
    }
    // Any other role renders nothing, as in the template.
  }
  if (add_generation_prompt) {
    out += "<|im_start|>assistant\n";
    if (!enable_thinking) out += "<think>\n\n</think>\n\n";
  }
  return out;
}

}  // namespace nanovllm
