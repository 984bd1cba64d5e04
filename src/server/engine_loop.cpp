// EngineLoop: the engine thread, its inbox, and the request channels it feeds.
#include "server/engine_loop.h"
#include "util/clock.h"

#include <cstdio>
#include <exception>

namespace nanovllm::server {

// ---- RequestChannel ----

RequestChannel::RequestChannel() : arrival_time_(steady_seconds()) {}

void RequestChannel::set_admitted(std::string error) {
  {
    std::lock_guard lk(mu_);
    admitted_ = true;
    admit_error_ = std::move(error);
  }
  cv_.notify_all();
}

void RequestChannel::push(ChoiceEvent ev) {
  {
    std::lock_guard lk(mu_);
    events_.push_back(std::move(ev));
  }
  cv_.notify_all();
}

std::string RequestChannel::wait_admitted() {
  std::unique_lock lk(mu_);
  cv_.wait(lk, [&] { return admitted_; });
  return admit_error_;
}

bool RequestChannel::wait_events(std::vector<ChoiceEvent>& out, std::chrono::milliseconds timeout) {
  std::unique_lock lk(mu_);
  if (!cv_.wait_for(lk, timeout, [&] { return !events_.empty(); })) return false;
  out.swap(events_);
  events_.clear();
  return true;
}

// ---- EngineLoop ----

EngineLoop::EngineLoop(LLM& llm, Metrics& metrics, int max_pending)
    : llm_(llm), metrics_(metrics), max_pending_(max_pending) {}

EngineLoop::~EngineLoop() { stop(); }

void EngineLoop::start() {
  publish_stats(true);
  thread_ = std::thread([this] { run(); });
}

void EngineLoop::stop() {
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

Admission EngineLoop::submit(const std::shared_ptr<RequestChannel>& channel, std::vector<SubRequest> subs) {
  const int n = static_cast<int>(subs.size());
  {
    std::lock_guard lk(mu_);
    if (stopping_) return Admission::shutting_down;
    // Counted here, released by the engine thread when each choice finishes: the bound holds across
    // handler threads racing to submit.
    if (in_flight_.load() + n > max_pending_) return Admission::queue_full;
    in_flight_ += n;
    submissions_.push_back({channel, std::move(subs)});
  }
  cv_.notify_all();
  return Admission::accepted;
}

void EngineLoop::abort(const std::shared_ptr<RequestChannel>& channel, int index, std::string reason) {
  {
    std::lock_guard lk(mu_);
    aborts_.push_back({channel, index, std::move(reason)});
  }
  cv_.notify_all();
}

void EngineLoop::run() {
  for (;;) {
    std::vector<Submission> subs;
    std::vector<Abort> aborts;
    bool stopping;
    {
      std::unique_lock lk(mu_);
      if (live_.empty() && submissions_.empty() && aborts_.empty() && !stopping_) {
        cv_.wait_for(lk, std::chrono::milliseconds(200));
      }
      subs.swap(submissions_);
      aborts.swap(aborts_);
      stopping = stopping_;
    }
    for (auto& s : subs) admit(s);
    for (auto& a : aborts) abort_now(a.channel.get(), a.index, a.reason);
    if (stopping) {
      while (!live_.empty()) finish(live_.begin()->first, "abort");
      publish_stats(true);
      return;
    }
    if (!live_.empty()) step_once();
    publish_stats(live_.empty());
  }
}

void EngineLoop::admit(Submission& s) {
  std::vector<int64_t> ids;
  try {
    for (size_t i = 0; i < s.subs.size(); ++i) {
      int prompt_tokens = static_cast<int>(s.subs[i].prompt_token_ids.size());
      int64_t id = llm_.add_request(std::move(s.subs[i].prompt_token_ids), s.subs[i].params);
      ids.push_back(id);
      live_[id] = Live{s.channel, static_cast<int>(i), prompt_tokens, 0, 0, 0};
      metrics_.on_prompt(prompt_tokens);
    }
  } catch (const std::exception& e) {
    // The engine refused one choice: take back the ones it took, so the request is all or none.
    for (int64_t id : ids) {
      llm_.abort_request(id);
      live_.erase(id);
    }
    in_flight_ -= static_cast<int>(s.subs.size());
    s.channel->set_admitted(e.what());
    return;
  }
  channel_ids_[s.channel.get()] = ids;
  s.channel->set_admitted("");
}

void EngineLoop::abort_now(RequestChannel* channel, int index, const std::string& reason) {
  auto it = channel_ids_.find(channel);
  if (it == channel_ids_.end()) return;  // already finished
  std::vector<int64_t> ids = it->second;  // finish() edits the map
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || (index >= 0 && static_cast<int>(i) != index)) continue;
    finish(ids[i], reason);
  }
}

// Retires engine request `id`: tells its channel, updates the metrics and the pending count.
void EngineLoop::finish(int64_t id, const std::string& reason) {
  auto it = live_.find(id);
  if (it == live_.end()) return;
  Live live = std::move(it->second);
  live_.erase(it);
  // Frees the blocks of one still running, and drops a finished one's kept output: the tokens
  // were streamed as they came, so decoding the whole output (take_output) would be wasted work.
  llm_.abort_request(id);
  metrics_.on_finished(reason, steady_seconds() - live.channel->arrival_time(), live.prompt_tokens, live.generated);
  if (reason != "abort" && live.generated > 1)
    metrics_.on_request_tpot((live.last_token_time - live.first_token_time) / (live.generated - 1));
  auto cit = channel_ids_.find(live.channel.get());
  if (cit != channel_ids_.end()) {
    cit->second[live.index] = -1;
    bool all_done = true;
    for (int64_t x : cit->second) all_done = all_done && x < 0;
    if (all_done) channel_ids_.erase(cit);
  }
  // Released before the client hears of the end, so a client that submits again at once is
  // never refused for its own finished request.
  --in_flight_;
  ChoiceEvent ev;
  ev.index = live.index;
  ev.finished = true;
  ev.finish_reason = reason;
  live.channel->push(std::move(ev));
}

void EngineLoop::step_once() {
  std::vector<StepOutput> outs;
  try {
    outs = llm_.step();
  } catch (const std::exception& e) {
    // A failed step leaves the batch in an unknown state: end every live request rather than
    // stream wrong tokens; the server keeps serving new ones.
    std::fprintf(stderr, "nanovllm serve: engine step failed: %s; aborting %zu requests\n", e.what(),
                 live_.size());
    while (!live_.empty()) finish(live_.begin()->first, "abort");
    return;
  }
  const double now = steady_seconds();
  for (auto& out : outs) {
    auto it = live_.find(out.request_id);
    if (it == live_.end()) continue;
    Live& live = it->second;
    if (!out.new_token_ids.empty()) {
      if (live.generated == 0) {
        metrics_.on_first_token(now - live.channel->arrival_time());
        live.first_token_time = now;
      } else {
        metrics_.on_inter_token((now - live.last_token_time) / static_cast<double>(out.new_token_ids.size()));
      }
      live.generated += static_cast<int>(out.new_token_ids.size());
      live.last_token_time = now;
      metrics_.on_generated(static_cast<int>(out.new_token_ids.size()));
      ChoiceEvent ev;
      ev.index = live.index;
      ev.new_token_ids = std::move(out.new_token_ids);
      live.channel->push(std::move(ev));
    }
    if (out.finished) finish(out.request_id, out.finish_reason.empty() ? "stop" : out.finish_reason);
  }
}

void EngineLoop::publish_stats(bool force) {
  auto now = std::chrono::steady_clock::now();
  if (!force && now - last_publish_ < std::chrono::milliseconds(20)) return;
  last_publish_ = now;
  try {
    metrics_.set_engine(llm_.stats());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "nanovllm serve: engine stats failed: %s\n", e.what());
  }
}

}  // namespace nanovllm::server
