// Generation: events to text to OpenAI's completion and chat response shapes.
#include "server/generation.h"

#include <chrono>
#include <random>

#include "server/api_error.h"
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

Generation::Generation(const CompletionRequest& req, const PreparedRequest& prep, std::string model_name,
                       EngineLoop& engine, std::shared_ptr<RequestChannel> channel)
    : req_(req), prompt_tokens_(prep.prompt_tokens), engine_(engine), channel_(std::move(channel)),
      id_(random_id(req.endpoint == Endpoint::chat ? "chatcmpl-" : "cmpl-")), model_(std::move(model_name)),
      created_(std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
                   .count()) {
  choices_.resize(prep.prompt_tokens.size() * static_cast<size_t>(req.n));
}

void Generation::apply(std::vector<ChoiceEvent>& events,
                       const std::function<void(int, const std::string&, bool)>& on_delta) {
  for (auto& ev : events) {
    if (ev.index < 0 || ev.index >= static_cast<int>(choices_.size())) continue;
    Choice& c = choices_[ev.index];
    if (c.done) continue;
    c.num_tokens += static_cast<int>(ev.new_token_ids.size());
    if (ev.finished) {
      c.done = true;
      c.finish_reason = ev.finish_reason;
    }
    if (!ev.text.empty() || c.done) on_delta(ev.index, ev.text, c.done);
  }
}

bool Generation::all_done() const {
  for (const auto& c : choices_)
    if (!c.done) return false;
  return true;
}

void Generation::abort() {
  if (!all_done()) engine_.abort(channel_);
}

json Generation::usage() const {
  int64_t prompt = 0, completion = 0;
  for (int p : prompt_tokens_) prompt += p;
  for (const auto& c : choices_) completion += c.num_tokens;
  return {{"prompt_tokens", prompt}, {"completion_tokens", completion}, {"total_tokens", prompt + completion}};
}

bool Generation::wait(std::vector<ChoiceEvent>& events) {
  const bool got = channel_->wait_events(events, std::chrono::milliseconds(250));
  // Checked by the clock, not only when idle: a running request has events every step.
  const auto now = std::chrono::steady_clock::now();
  if (!gone_ && client_gone_ && now - last_client_check_ >= std::chrono::milliseconds(250)) {
    last_client_check_ = now;
    if (client_gone_()) {
      gone_ = true;
      abort();  // the engine answers with "abort" events, which end the wait loops
    }
  }
  return got;
}

json Generation::run_to_completion() {
  std::vector<ChoiceEvent> events;
  while (!all_done()) {
    if (!wait(events)) continue;
    apply(events, [&](int i, const std::string& delta, bool) { choices_[i].output += delta; });
    events.clear();
  }
  if (gone_) throw ApiError(499, "the client closed the connection", "", "client_closed_request");
  json choices = json::array();
  for (size_t i = 0; i < choices_.size(); ++i) {
    const Choice& c = choices_[i];
    if (c.finish_reason == FinishReason::abort)
      throw ApiError(503, "the request was aborted: the server is shutting down or the engine failed", "",
                     "request_aborted");
    if (req_.endpoint == Endpoint::chat) {
      choices.push_back({{"index", i},
                         {"message", {{"role", "assistant"}, {"content", c.output}}},
                         {"logprobs", nullptr},
                         {"finish_reason", to_string(c.finish_reason)}});
    } else {
      choices.push_back({{"index", i}, {"text", c.output}, {"logprobs", nullptr}, {"finish_reason", to_string(c.finish_reason)}});
    }
  }
  return {{"id", id_},
          {"object", req_.endpoint == Endpoint::chat ? "chat.completion" : "text_completion"},
          {"created", created_},
          {"model", model_},
          {"choices", std::move(choices)},
          {"usage", usage()}};
}

json Generation::chunk(int index, const std::string& text, bool finished, bool first) const {
  json choice;
  if (req_.endpoint == Endpoint::chat) {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (first || !text.empty()) delta["content"] = text;
    choice = {{"index", index}, {"delta", std::move(delta)}, {"logprobs", nullptr}};
  } else {
    choice = {{"index", index}, {"text", text}, {"logprobs", nullptr}};
  }
  choice["finish_reason"] = finished ? json(to_string(choices_[index].finish_reason)) : json(nullptr);
  json j = {{"id", id_},
            {"object", req_.endpoint == Endpoint::chat ? "chat.completion.chunk" : "text_completion"},
            {"created", created_},
            {"model", model_},
            {"choices", json::array({std::move(choice)})}};
  if (req_.include_usage) j["usage"] = nullptr;
  return j;
}

bool Generation::stream(const std::function<bool(const std::string&)>& write) {
  bool ok = true;
  // Chat opens each choice with the assistant role, as OpenAI does, before any token.
  if (req_.endpoint == Endpoint::chat)
    for (size_t i = 0; i < choices_.size() && ok; ++i) ok = write(sse_event(chunk(static_cast<int>(i), "", false, true)));
  std::vector<ChoiceEvent> events;
  std::string batch;
  while (ok && !all_done() && !gone_) {
    if (!wait(events)) continue;
    // One write per wake-up: every chunk that became ready in this engine step goes out together.
    batch.clear();
    apply(events, [&](int i, const std::string& delta, bool finished) {
      batch += sse_event(chunk(i, delta, finished, false));
    });
    events.clear();
    if (!batch.empty()) ok = write(batch);
  }
  if (gone_) return false;
  if (ok && req_.include_usage) {
    json j = {{"id", id_},
              {"object", req_.endpoint == Endpoint::chat ? "chat.completion.chunk" : "text_completion"},
              {"created", created_},
              {"model", model_},
              {"choices", json::array()},
              {"usage", usage()}};
    ok = write(sse_event(j));
  }
  if (ok) ok = write(sse_done());
  if (!ok) abort();
  return ok;
}

}  // namespace nanovllm::server
