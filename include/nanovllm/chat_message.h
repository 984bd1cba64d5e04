// ChatMessage: one turn of a conversation, as chat templates read it.
#pragma once
#include <string>

namespace nanovllm {

struct ChatMessage {
  std::string role;     // "system", "user", "assistant", "tool"
  std::string content;
  std::string reasoning_content;  // assistant's thinking, if given apart from content
};

}  // namespace nanovllm
