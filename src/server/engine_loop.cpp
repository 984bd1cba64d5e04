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
  int n = 0;
  for (const SubRequest& s : subs) n += s.params.n;
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

void EngineLoop::abort(const std::shared_ptr<RequestChannel>& channel) {
  {
    std::lock_guard lk(mu_);
    aborts_.push_back(channel);
  }
  cv_.notify_all();
}

void EngineLoop::run() {
  for (;;) {
    std::vector<Submission> subs;
    std::vector<std::shared_ptr<RequestChannel>> aborts;
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
    for (auto& a : aborts) abort_now(a.get());
    if (stopping) {
      abort_all();
      publish_stats(true);
      return;
    }
    if (!live_.empty()) step_once();
    publish_stats(live_.empty());
  }
}

void EngineLoop::admit(Submission& s) {
  std::vector<int64_t> ids;
  int choices = 0;
  for (const SubRequest& sub : s.subs) choices += sub.params.n;
  try {
    int first_choice = 0;
    for (SubRequest& sub : s.subs) {
      const int prompt_tokens = static_cast<int>(sub.prompt_token_ids.size()), n = sub.params.n;
      int64_t id = llm_.add_request(std::move(sub.prompt_token_ids), sub.params);
      ids.push_back(id);
      Live& live = live_[id];
      live.channel = s.channel;
      live.first_choice = first_choice;
      live.prompt_tokens = prompt_tokens;
      live.samples.resize(n);
      live.wants_prompt_logprobs = sub.params.prompt_logprobs.has_value();
      first_choice += n;
      metrics_.on_prompt(prompt_tokens);
    }
  } catch (const std::exception& e) {
    // The engine refused one prompt: take back the ones it took, so the request is all or none.
    for (int64_t id : ids) {
      llm_.abort_request(id);
      live_.erase(id);
    }
    in_flight_ -= choices;
    s.channel->set_admitted(e.what());
    return;
  }
  channel_ids_[s.channel.get()] = ids;
  s.channel->set_admitted("");
}

void EngineLoop::abort_now(RequestChannel* channel) {
  auto it = channel_ids_.find(channel);
  if (it == channel_ids_.end()) return;  // already finished
  const std::vector<int64_t> ids = it->second;  // finish() edits the map
  for (int64_t id : ids) {
    auto lit = live_.find(id);
    if (lit == live_.end()) continue;
    for (int j = 0; j < static_cast<int>(lit->second.samples.size()); ++j)
      if (!lit->second.samples[j].done) finish(id, j, FinishReason::abort);
  }
}

void EngineLoop::abort_all() {
  while (!live_.empty()) {
    const int64_t id = live_.begin()->first;
    const auto samples = live_.begin()->second.samples;
    for (int j = 0; j < static_cast<int>(samples.size()); ++j)
      if (!samples[j].done) finish(id, j, FinishReason::abort);
  }
}

void EngineLoop::finish(int64_t id, int index, FinishReason reason) {
  auto it = live_.find(id);
  if (it == live_.end()) return;
  Live& live = it->second;
  Live::Sample& s = live.samples[index];
  if (s.done) return;
  s.done = true;
  metrics_.on_finished(std::string(to_string(reason)), steady_seconds() - live.channel->arrival_time(),
                       live.prompt_tokens, s.generated);
  if (reason != FinishReason::abort && s.generated > 1)
    metrics_.on_request_tpot((s.last_token_time - s.first_token_time) / (s.generated - 1));
  // Released before the client hears of the end, so a client that submits again at once is
  // never refused for its own finished request.
  --in_flight_;
  std::shared_ptr<RequestChannel> channel = live.channel;
  ChoiceEvent ev;
  ev.index = live.first_choice + index;
  ev.finished = true;
  ev.finish_reason = reason;
  if (reason == FinishReason::abort) ++live.num_aborted;
  if (++live.num_done < static_cast<int>(live.samples.size())) {
    if (live.wants_prompt_logprobs) live.held.push_back(std::move(ev));
    else channel->push(std::move(ev));
    return;
  }
  std::vector<ChoiceEvent> events = std::move(live.held);
  events.push_back(std::move(ev));
  retire(id, live, events);
  live_.erase(it);
  auto cit = channel_ids_.find(channel.get());
  if (cit != channel_ids_.end()) {
    std::erase(cit->second, id);
    if (cit->second.empty()) channel_ids_.erase(cit);
  }
  for (ChoiceEvent& e : events) channel->push(std::move(e));
}

void EngineLoop::retire(int64_t id, const Live& live, std::vector<ChoiceEvent>& events) {
  if (live.wants_prompt_logprobs && live.num_aborted == 0) {
    try {
      auto prompt_logprobs =
          std::make_shared<const std::vector<PositionLogprobs>>(llm_.take_output(id).prompt_logprobs);
      for (ChoiceEvent& e : events) e.prompt_logprobs = prompt_logprobs;
      return;
    } catch (const std::exception& e) {
      // Not expected (every sample ended in the engine): answer "abort" rather than leave the
      // prompt's logprobs out.
      std::fprintf(stderr, "nanovllm serve: the output of request %lld: %s\n", static_cast<long long>(id), e.what());
      for (ChoiceEvent& ev : events) ev.finish_reason = FinishReason::abort;
    }
  }
  // Frees the blocks of any sample still running, and drops the kept output: the text was
  // streamed as it came.
  llm_.abort_request(id);
}

void EngineLoop::on_tokens(Live& live, StepOutput& out, double now) {
  Live::Sample& s = live.samples[out.index];
  const int n = static_cast<int>(out.new_token_ids.size());
  if (n > 0) {
    if (s.generated == 0) {
      metrics_.on_first_token(now - live.channel->arrival_time());
      s.first_token_time = now;
    } else {
      metrics_.on_inter_token((now - s.last_token_time) / n);
    }
    s.generated += n;
    s.last_token_time = now;
    metrics_.on_generated(n);
  }
  if (n > 0 || !out.text.empty()) {
    ChoiceEvent ev;
    ev.index = live.first_choice + out.index;
    ev.new_token_ids = std::move(out.new_token_ids);
    ev.logprobs = std::move(out.logprobs);
    ev.text = std::move(out.text);
    live.channel->push(std::move(ev));
  }
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
    abort_all();
    return;
  }
  const double now = steady_seconds();
  for (StepOutput& out : outs) {
    auto it = live_.find(out.request_id);
    if (it == live_.end()) continue;
    on_tokens(it->second, out, now);  // moves the tokens, logprobs and text out
    if (out.finished) finish(out.request_id, out.index, out.finish_reason);
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
