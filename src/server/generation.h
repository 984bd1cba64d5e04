// Generation: one HTTP request's choices in flight. Turns the engine loop's events (text already
// detokenized and stopped by the engine) into OpenAI's response objects or SSE chunks.
#pragma once
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "server/engine_loop.h"
#include "server/prepare.h"
#include "server/request.h"

namespace nanovllm::server {

class Generation {
 public:
  Generation(const CompletionRequest& req, const PreparedRequest& prep, std::string model_name, EngineLoop& engine,
             std::shared_ptr<RequestChannel> channel);

  // Blocks until every choice has finished; returns the chat.completion / text_completion object.
  // A choice that ended in "abort" (shutdown, engine failure) makes it throw ApiError 503.
  nlohmann::json run_to_completion();

  // Streams SSE chunks through `write` until every choice finished, then `data: [DONE]`.
  // Returns false when `write` failed (the client left); the request is then aborted.
  bool stream(const std::function<bool(const std::string&)>& write);

  // Aborts every unfinished choice (the client went away).
  void abort();

  // Polled while no tokens arrive: true when the client has gone (then the request is aborted).
  void set_client_gone(std::function<bool()> f) { client_gone_ = std::move(f); }

 private:
  struct Choice {
    int num_tokens = 0;
    bool done = false;
    FinishReason finish_reason = FinishReason::none;
    std::string output;  // non-streaming: all text so far
  };
  // Waits for the next events; false when none came in time (and then checks the client).
  bool wait(std::vector<ChoiceEvent>& events);
  // Applies the channel's events; for each change calls on_delta(index, text, finished).
  void apply(std::vector<ChoiceEvent>& events, const std::function<void(int, const std::string&, bool)>& on_delta);
  bool all_done() const;
  nlohmann::json usage() const;
  nlohmann::json chunk(int index, const std::string& text, bool finished, bool first) const;

  const CompletionRequest& req_;
  std::vector<int> prompt_tokens_;
  EngineLoop& engine_;
  std::shared_ptr<RequestChannel> channel_;
  std::string id_, model_;
  int64_t created_;
  std::vector<Choice> choices_;
  std::function<bool()> client_gone_;
  std::chrono::steady_clock::time_point last_client_check_ = std::chrono::steady_clock::now();
  bool gone_ = false;
};

}  // namespace nanovllm::server
