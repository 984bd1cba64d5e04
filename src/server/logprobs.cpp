// Logprobs rendering: token strings from the tokenizer's bytes, and the three response shapes.
#include "server/logprobs.h"

#include <algorithm>
#include <stdexcept>

#include "tokenizer/bpe_tokenizer.h"
#include "tokenizer/utf8.h"

namespace nanovllm::server {
namespace {

using json = nlohmann::json;

// The raw bytes of one token: a byte-level BPE token can hold part of a character, which
// decode() would turn into U+FFFD.
std::string raw_bytes(const Tokenizer& tok, int32_t id) {
  try {
    if (const auto* bpe = dynamic_cast<const BpeTokenizer*>(&tok)) return std::string(bpe->id_bytes(id));
    return tok.decode({id});
  } catch (const std::exception&) {
    return "";  // an id the tokenizer lacks decodes to nothing, as in Hugging Face's decode
  }
}

json byte_list(const std::string& bytes) {
  json out = json::array();
  for (char c : bytes) out.push_back(static_cast<unsigned char>(c));
  return out;
}

// The `num_top` most likely entries of `p` (the engine may hold more when another view of the
// same prompt asked for more).
size_t top_count(const PositionLogprobs& p, int num_top) {
  return std::min(p.top.size(), static_cast<size_t>(std::max(num_top, 0)));
}

}  // namespace

TokenText token_text(const Tokenizer& tok, int32_t id) {
  TokenText t;
  t.bytes = raw_bytes(tok, id);
  if (utf8::find_invalid(t.bytes) == std::string::npos) {
    t.text = t.bytes;
    return t;
  }
  static const char* hex = "0123456789abcdef";
  t.text = "bytes:";
  for (char c : t.bytes) {
    const auto b = static_cast<unsigned char>(c);
    t.text += "\\x";
    t.text += hex[b >> 4];
    t.text += hex[b & 15];
  }
  return t;
}

double response_logprob(float logprob) { return logprob >= -9999.0f ? static_cast<double>(logprob) : -9999.0; }

int64_t char_count(const std::string& bytes) {
  return std::count_if(bytes.begin(), bytes.end(),
                       [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; });
}

json empty_completion_logprobs() {
  return {{"tokens", json::array()},
          {"token_logprobs", json::array()},
          {"top_logprobs", json::array()},
          {"text_offset", json::array()}};
}

void append_unscored_token(const Tokenizer& tok, int32_t id, json& out, int64_t& text_offset) {
  const TokenText t = token_text(tok, id);
  out["tokens"].push_back(t.text);
  out["token_logprobs"].push_back(nullptr);
  out["top_logprobs"].push_back(nullptr);
  out["text_offset"].push_back(text_offset);
  text_offset += char_count(t.bytes);
}

void append_completion_position(const Tokenizer& tok, const PositionLogprobs& p, int num_top, json& out,
                                int64_t& text_offset) {
  const TokenText t = token_text(tok, p.token_id);
  json top = json::object();
  // Largest first: of two tokens with the same string, the likelier keeps its entry.
  for (size_t k = 0; k < top_count(p, num_top); ++k)
    top.emplace(token_text(tok, p.top[k].token_id).text, response_logprob(p.top[k].logprob));
  top.emplace(t.text, response_logprob(p.logprob));
  out["tokens"].push_back(t.text);
  out["token_logprobs"].push_back(response_logprob(p.logprob));
  out["top_logprobs"].push_back(std::move(top));
  out["text_offset"].push_back(text_offset);
  text_offset += char_count(t.bytes);
}

json chat_logprob_entry(const Tokenizer& tok, const PositionLogprobs& p, int num_top) {
  json top = json::array();
  for (size_t k = 0; k < top_count(p, num_top); ++k) {
    const TokenText t = token_text(tok, p.top[k].token_id);
    top.push_back({{"token", t.text}, {"logprob", response_logprob(p.top[k].logprob)}, {"bytes", byte_list(t.bytes)}});
  }
  const TokenText t = token_text(tok, p.token_id);
  return {{"token", t.text},
          {"logprob", response_logprob(p.logprob)},
          {"bytes", byte_list(t.bytes)},
          {"top_logprobs", std::move(top)}};
}

json vllm_prompt_logprobs(const Tokenizer& tok, const std::vector<PositionLogprobs>& positions, int num_top) {
  json out = json::array({nullptr});
  for (const PositionLogprobs& p : positions) {
    json at = json::object();
    auto add = [&](int32_t id, float logprob, int rank) {
      json entry = {{"logprob", response_logprob(logprob)}, {"rank", rank}};
      entry["decoded_token"] = token_text(tok, id).text;
      at.emplace(std::to_string(id), std::move(entry));
    };
    add(p.token_id, p.logprob, p.rank);
    for (size_t k = 0; k < top_count(p, num_top); ++k)
      add(p.top[k].token_id, p.top[k].logprob, static_cast<int>(k) + 1);
    out.push_back(std::move(at));
  }
  return out;
}

}  // namespace nanovllm::server
