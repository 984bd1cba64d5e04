// Generation: one HTTP request's choices in flight. Turns the engine loop's events (text already
// detokenized and stopped by the engine) into OpenAI's response objects or SSE chunks. Not
// thread-safe and never blocking: its owner feeds it the events its channel took.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "server/engine_loop.h"
#include "server/prepare.h"
#include "server/request.h"
#include "tokenizer/tokenizer.h"

namespace nanovllm::server {

class Generation {
 public:
  // `tok` names the tokens of logprobs.
  Generation(const CompletionRequest& req, const PreparedRequest& prep, const Tokenizer& tok, std::string model_name);

  // Non-streamed: applies `events`; true once every choice has finished.
  bool collect(std::vector<ChoiceEvent>& events);
  // The chat.completion / text_completion object, once collect() said done. A choice that ended in
  // "abort" (shutdown, engine failure) makes it throw ApiError 503.
  nlohmann::json response() const;

  // Streamed: appends the SSE chunks of `events` to `out` (chat's opening role chunks first, on
  // the first call); once every choice has finished, the usage chunk (when asked) and
  // `data: [DONE]`, and returns true.
  bool stream(std::vector<ChoiceEvent>& events, std::string& out);

  bool all_done() const;

 private:
  // What a choice's client gets at once: one chunk when streaming. A choice's pieces, joined,
  // are its full answer, so the stream and the full object always agree.
  struct Piece {
    std::string text;
    nlohmann::json logprobs;  // this piece's tokens' (completions' object or chat's {"content"}); null: none
    bool finished = false;
  };
  struct Choice {
    int num_tokens = 0;
    bool done = false;
    FinishReason finish_reason = FinishReason::none;
    bool echoed = false;            // echo: the prompt's piece went out
    std::vector<ChoiceEvent> held;  // echo with logprobs: events waiting for the prompt's logprobs
    int64_t text_offset = 0;        // completions: text_offset of the next token
    std::shared_ptr<const std::vector<PositionLogprobs>> prompt_logprobs;  // from the finishing event
    std::string output;             // non-streaming: all text so far
    nlohmann::json logprobs;        // non-streaming: all logprobs so far
  };
  using OnPiece = std::function<void(int, Piece)>;
  // Applies the channel's events; calls on_piece(index, piece) for what each choice's client sees,
  // in order (an echo first).
  void apply(std::vector<ChoiceEvent>& events, const OnPiece& on_piece);
  // The piece of one event (none for an event with nothing to show).
  void emit(int index, ChoiceEvent& ev, const OnPiece& on_piece);
  Piece echo_piece(int index);
  nlohmann::json render_logprobs(Choice& c, const std::vector<PositionLogprobs>& positions) const;
  static void add_to_output(Choice& c, Piece piece);
  nlohmann::json usage() const;
  nlohmann::json full_choice(int index) const;
  nlohmann::json chunk(int index, const Piece& piece, bool first) const;

  const CompletionRequest& req_;
  std::vector<int> prompt_tokens_;
  std::vector<int> cached_tokens_;  // per prompt, from its choices' finishing events
  std::vector<PromptEcho> echoes_;
  const Tokenizer& tok_;
  std::string id_, model_;
  int64_t created_;
  std::vector<Choice> choices_;
  bool opened_ = false;  // streamed: the opening chunks went out
};

}  // namespace nanovllm::server
