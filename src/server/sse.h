// Server-sent events framing for streamed completions: `data: <json>\n\n`, ended by `data: [DONE]`.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

namespace nanovllm::server {

// JSON as the server writes it everywhere: compact, and invalid UTF-8 (never expected from the
// detokenizer) replaced by U+FFFD rather than throwing mid-stream.
inline std::string dump_json(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

inline std::string sse_event(const nlohmann::json& j) { return "data: " + dump_json(j) + "\n\n"; }

inline std::string sse_done() { return "data: [DONE]\n\n"; }

}  // namespace nanovllm::server
