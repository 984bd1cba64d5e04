// Generation: events to pieces (text and logprobs) to OpenAI's completion and chat response shapes.
#include "server/generation.h"

#include <chrono>
#include <algorithm>
#include <random>

#include "server/api_error.h"
#include "server/logprobs.h"
#include "server/sse.h"

namespace nanovllm::server {
namespace {

using json = nlohmann::json;

std::string random_id(const char* prefix) {
  thread_local std::mt19937_64 rng(std::random_device{}());
  char buf[40];
  std::snprintf(buf, sizeof buf, "%s%016llx%08llx", prefix, static_cast<unsigned long long>(rng()),
                static_cast<unsigned long long>(rng() & 0xffffffffULL));
  return buf;
}

}  // namespace

Generation::Generation(const CompletionRequest& req, const PreparedRequest& prep, const Tokenizer& tok,
                       std::string model_name)
    : req_(req), prompt_tokens_(prep.prompt_tokens), cached_tokens_(prep.prompt_tokens.size(), 0),
      echoes_(prep.echoes), tok_(tok), id_(random_id(req.endpoint == Endpoint::chat ? "chatcmpl-" : "cmpl-")),
      model_(std::move(model_name)),
      created_(std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
                   .count()) {
  choices_.resize(prep.prompt_tokens.size() * static_cast<size_t>(req.n));
}

void Generation::apply(std::vector<ChoiceEvent>& events, const OnPiece& on_piece) {
  for (auto& ev : events) {
    if (ev.index < 0 || ev.index >= static_cast<int>(choices_.size())) continue;
    Choice& c = choices_[ev.index];
    if (c.done) continue;
    c.num_tokens += static_cast<int>(ev.new_token_ids.size());
    if (ev.finished) {
      c.done = true;
      c.finish_reason = ev.finish_reason;
      c.prompt_logprobs = std::move(ev.prompt_logprobs);
      int& cached = cached_tokens_[static_cast<size_t>(ev.index / req_.n)];
      cached = std::max(cached, ev.cached_tokens);
    }
    if (req_.echo && !c.echoed) {
      // The prompt's logprobs come only with the choice's end: until then its events wait, so
      // the prompt still leads.
      if (req_.logprobs && !c.done) {
        c.held.push_back(std::move(ev));
        continue;
      }
      c.echoed = true;
      on_piece(ev.index, echo_piece(ev.index));
      for (ChoiceEvent& h : c.held) emit(ev.index, h, on_piece);
      c.held.clear();
    }
    emit(ev.index, ev, on_piece);
  }
}

void Generation::emit(int index, ChoiceEvent& ev, const OnPiece& on_piece) {
  // As vLLM: a step's tokens' logprobs go with that step's text, even when the engine held the
  // text back (a possible stop string, an unfinished character).
  const bool has_logprobs = req_.logprobs && !ev.logprobs.empty();
  if (ev.text.empty() && !ev.finished && !has_logprobs) return;
  Piece p;
  p.text = std::move(ev.text);
  if (has_logprobs) p.logprobs = render_logprobs(choices_[index], ev.logprobs);
  p.finished = ev.finished;
  on_piece(index, std::move(p));
}

Generation::Piece Generation::echo_piece(int index) {
  Choice& c = choices_[index];
  const PromptEcho& echo = echoes_.at(static_cast<size_t>(index / req_.n));
  Piece p;
  p.text = echo.text;
  // Without the prompt's logprobs (an aborted request) the piece has none rather than a part.
  if (req_.logprobs && c.prompt_logprobs) {
    p.logprobs = empty_completion_logprobs();
    append_unscored_token(tok_, echo.first_token_id, p.logprobs, c.text_offset);
    for (const PositionLogprobs& pos : *c.prompt_logprobs)
      append_completion_position(tok_, pos, *req_.logprobs, p.logprobs, c.text_offset);
  }
  return p;
}

json Generation::render_logprobs(Choice& c, const std::vector<PositionLogprobs>& positions) const {
  if (req_.endpoint == Endpoint::chat) {
    json content = json::array();
    for (const PositionLogprobs& p : positions) content.push_back(chat_logprob_entry(tok_, p, *req_.logprobs));
    return {{"content", std::move(content)}};
  }
  json out = empty_completion_logprobs();
  for (const PositionLogprobs& p : positions) append_completion_position(tok_, p, *req_.logprobs, out, c.text_offset);
  return out;
}

// Both logprobs shapes are objects of lists: a piece's lists extend the choice's.
void Generation::add_to_output(Choice& c, Piece piece) {
  c.output += piece.text;
  if (piece.logprobs.is_null()) return;
  if (c.logprobs.is_null()) {
    c.logprobs = std::move(piece.logprobs);
    return;
  }
  for (auto& [key, list] : piece.logprobs.items())
    for (auto& x : list) c.logprobs[key].push_back(std::move(x));
}

bool Generation::all_done() const {
  for (const auto& c : choices_)
    if (!c.done) return false;
  return true;
}

json Generation::usage() const {
  int64_t prompt = 0, completion = 0, cached = 0;
  for (int p : prompt_tokens_) prompt += p;
  for (int c : cached_tokens_) cached += c;
  for (const auto& c : choices_) completion += c.num_tokens;
  return {{"prompt_tokens", prompt},
          {"completion_tokens", completion},
          {"total_tokens", prompt + completion},
          {"prompt_tokens_details", {{"cached_tokens", cached}}}};
}

bool Generation::collect(std::vector<ChoiceEvent>& events) {
  apply(events, [&](int i, Piece p) { add_to_output(choices_[i], std::move(p)); });
  events.clear();
  return all_done();
}

json Generation::response() const {
  json choices = json::array();
  for (size_t i = 0; i < choices_.size(); ++i) {
    if (choices_[i].finish_reason == FinishReason::abort)
      throw ApiError(503, "the request was aborted: the server is shutting down or the engine failed", "",
                     "request_aborted");
    choices.push_back(full_choice(static_cast<int>(i)));
  }
  return {{"id", id_},
          {"object", req_.endpoint == Endpoint::chat ? "chat.completion" : "text_completion"},
          {"created", created_},
          {"model", model_},
          {"choices", std::move(choices)},
          {"usage", usage()}};
}

json Generation::full_choice(int index) const {
  const Choice& c = choices_[index];
  const bool chat = req_.endpoint == Endpoint::chat;
  json logprobs = nullptr;
  if (req_.logprobs) {
    // A choice with no tokens at all still gets the (empty) object it asked for.
    if (!c.logprobs.is_null()) logprobs = c.logprobs;
    else logprobs = chat ? json{{"content", json::array()}} : empty_completion_logprobs();
  }
  json choice = {{"index", index}};
  if (chat) choice["message"] = {{"role", "assistant"}, {"content", c.output}};
  else choice["text"] = c.output;
  choice["logprobs"] = std::move(logprobs);
  choice["finish_reason"] = to_string(c.finish_reason);
  if (req_.prompt_logprobs)
    choice["prompt_logprobs"] =
        c.prompt_logprobs ? vllm_prompt_logprobs(tok_, *c.prompt_logprobs, *req_.prompt_logprobs) : json(nullptr);
  return choice;
}

json Generation::chunk(int index, const Piece& piece, bool first) const {
  json choice;
  if (req_.endpoint == Endpoint::chat) {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (first || !piece.text.empty()) delta["content"] = piece.text;
    choice = {{"index", index}, {"delta", std::move(delta)}, {"logprobs", piece.logprobs}};
  } else {
    choice = {{"index", index}, {"text", piece.text}, {"logprobs", piece.logprobs}};
  }
  choice["finish_reason"] = piece.finished ? json(to_string(choices_[index].finish_reason)) : json(nullptr);
  json j = {{"id", id_},
            {"object", req_.endpoint == Endpoint::chat ? "chat.completion.chunk" : "text_completion"},
            {"created", created_},
            {"model", model_},
            {"choices", json::array({std::move(choice)})}};
  if (req_.include_usage) j["usage"] = nullptr;
  return j;
}

bool Generation::stream(std::vector<ChoiceEvent>& events, std::string& out) {
  // Chat opens each choice with the assistant role, as OpenAI does, before any token.
  if (!opened_) {
    opened_ = true;
    if (req_.endpoint == Endpoint::chat)
      for (size_t i = 0; i < choices_.size(); ++i) out += sse_event(chunk(static_cast<int>(i), Piece{}, true));
  }
  if (all_done()) return true;  // the closing chunks went out already
  apply(events, [&](int i, Piece p) { out += sse_event(chunk(i, p, false)); });
  events.clear();
  if (!all_done()) return false;
  if (req_.include_usage) {
    json j = {{"id", id_},
              {"object", req_.endpoint == Endpoint::chat ? "chat.completion.chunk" : "text_completion"},
              {"created", created_},
              {"model", model_},
              {"choices", json::array()},
              {"usage", usage()}};
    out += sse_event(j);
  }
  out += sse_done();
  return true;
}

}  // namespace nanovllm::server
