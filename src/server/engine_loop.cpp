// EngineLoop: the engine thread, its inbox and admission queue, the round-robin feed, and the
// request channels it fills.
#include "server/engine_loop.h"
#include "util/clock.h"
#include "util/thread_nice.h"

#include <algorithm>
#include <cstdio>
#include <exception>

namespace nanovllm::server {

// ---- RequestChannel ----

RequestChannel::RequestChannel() : arrival_time_(steady_seconds()) {}

void RequestChannel::notify() {
  cv_.notify_all();
  if (notify_) notify_();
}

void RequestChannel::set_admission(AdmitState state, std::string error) {
  {
    std::lock_guard lk(mu_);
    state_ = state;
    admit_error_ = std::move(error);
  }
  notify();
}

void RequestChannel::push(ChoiceEvent ev) {
  {
    std::lock_guard lk(mu_);
    events_.push_back(std::move(ev));
  }
  notify();
}

AdmitState RequestChannel::admission(std::string* error) const {
  std::lock_guard lk(mu_);
  if (error) *error = admit_error_;
  return state_;
}

bool RequestChannel::take_events(std::vector<ChoiceEvent>& out) {
  std::unique_lock lk(mu_);
  return take_locked(out);
}

bool RequestChannel::try_take_events(std::vector<ChoiceEvent>& out) {
  std::unique_lock lk(mu_, std::try_to_lock);
  return lk.owns_lock() && take_locked(out);
}

bool RequestChannel::take_locked(std::vector<ChoiceEvent>& out) {
  if (events_.empty()) return false;
  if (out.empty()) {
    out.swap(events_);
  } else {
    for (auto& e : events_) out.push_back(std::move(e));
    events_.clear();
  }
  return true;
}

std::string RequestChannel::wait_admitted() {
  std::unique_lock lk(mu_);
  cv_.wait(lk, [&] { return state_ != AdmitState::pending; });
  if (state_ == AdmitState::admitted) return "";
  if (state_ == AdmitState::refused) return admit_error_;
  return state_ == AdmitState::queue_timeout ? "queue timeout" : "shutting down";
}

bool RequestChannel::wait_events(std::vector<ChoiceEvent>& out, std::chrono::milliseconds timeout) {
  std::unique_lock lk(mu_);
  if (!cv_.wait_for(lk, timeout, [&] { return !events_.empty(); })) return false;
  out.swap(events_);
  events_.clear();
  return true;
}

// ---- EngineLoop ----

EngineLoop::EngineLoop(LLM& llm, Metrics& metrics, EngineLoopOptions options)
    : llm_(llm), metrics_(metrics), opts_(options) {}

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
  // Two joins of one thread are undefined (glibc: the second may wait forever).
  std::lock_guard jl(join_mu_);
  if (thread_.joinable()) thread_.join();
}

template <class Queue>
typename Queue::iterator EngineLoop::slot(Queue& q, int priority) const {
  if (!opts_.priority) return q.end();
  return std::find_if(q.begin(), q.end(), [priority](const auto& e) { return e.priority > priority; });
}

Admission EngineLoop::submit(const std::shared_ptr<RequestChannel>& channel, std::vector<SubRequest> subs) {
  int n = 0;
  for (const SubRequest& s : subs) n += s.params.n;
  const int priority = subs.empty() ? 0 : subs.front().params.priority;  // the request's, the same in each
  {
    std::lock_guard lk(mu_);
    if (stopping_) return Admission::shutting_down;
    // Counted here, released by the engine thread when each choice finishes: the bound holds across
    // handler threads racing to submit. Nothing passes a request already waiting ahead of it in
    // arrival order (priority: in (priority, arrival) order).
    const auto at = slot(waiting_, priority);
    if (at == waiting_.begin() && in_flight_.load() + n <= opts_.max_pending) {
      in_flight_ += n;
      admitted_inbox_.push_back({channel, std::move(subs), n, {}, priority});
    } else {
      if (opts_.max_queue_wait_s <= 0 || n > opts_.max_pending) return Admission::queue_full;
      const auto wait = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
          std::chrono::duration<double>(opts_.max_queue_wait_s));
      waiting_.insert(at, {channel, std::move(subs), n, std::chrono::steady_clock::now() + wait, priority});
      waiting_choices_ += n;
    }
  }
  cv_.notify_all();
  return Admission::accepted;
}

void EngineLoop::abort(const std::shared_ptr<RequestChannel>& channel) {
  {
    std::lock_guard lk(mu_);
    // Still waiting for admission: it simply leaves the queue.
    for (auto it = waiting_.begin(); it != waiting_.end(); ++it)
      if (it->channel == channel) {
        waiting_choices_ -= it->choices;
        waiting_.erase(it);
        return;
      }
    aborts_.push_back(channel);
  }
  cv_.notify_all();
}

void EngineLoop::run() {
  // The steps run here: behind the I/O thread when both want a CPU (docs/server.md).
  raise_thread_nice(opts_.nice);
  for (;;) {
    std::vector<Submission> admitted, expired;
    std::vector<std::shared_ptr<RequestChannel>> aborts;
    bool stopping;
    {
      std::unique_lock lk(mu_);
      if (live_.empty() && feeding_.empty() && admitted_inbox_.empty() && aborts_.empty() && !stopping_) {
        auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(200);
        for (const Submission& s : waiting_) until = std::min(until, s.deadline);
        cv_.wait_until(lk, until);
      }
      admitted.swap(admitted_inbox_);
      aborts.swap(aborts_);
      stopping = stopping_;
      if (!stopping) admit_waiting_locked(admitted, expired);
    }
    for (auto& s : admitted) start_feeding(s);
    for (auto& s : expired) s.channel->set_admission(AdmitState::queue_timeout);
    for (auto& a : aborts) abort_now(a.get());
    if (stopping) {
      abort_all();
      publish_stats(true);
      return;
    }
    feed();
    if (!live_.empty()) step_once();
    publish_stats(live_.empty());
  }
}

void EngineLoop::admit_waiting_locked(std::vector<Submission>& admitted, std::vector<Submission>& expired) {
  while (!waiting_.empty() && in_flight_.load() + waiting_.front().choices <= opts_.max_pending) {
    in_flight_ += waiting_.front().choices;
    waiting_choices_ -= waiting_.front().choices;
    admitted.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
  }
  // Under fcfs the first to expire are at the front; under priority they may be anywhere.
  const auto now = std::chrono::steady_clock::now();
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    if (it->deadline > now) {
      ++it;
      continue;
    }
    waiting_choices_ -= it->choices;
    expired.push_back(std::move(*it));
    it = waiting_.erase(it);
  }
}

void EngineLoop::start_feeding(Submission& s) {
  // The engine's own checks, for every prompt before any runs: the request is all or none.
  try {
    for (const SubRequest& sub : s.subs) llm_.validate_request(sub.prompt_token_ids, sub.params);
  } catch (const std::exception& e) {
    in_flight_ -= s.choices;
    s.channel->set_admission(AdmitState::refused, e.what());
    return;
  }
  unfed_choices_ += s.choices;
  const auto at = feeding_.insert(slot(feeding_, s.priority), Feeding{s.channel, std::move(s.subs), 0, 0, s.priority});
  at->channel->set_admission(AdmitState::admitted);
}

void EngineLoop::feed() {
  const int limit = opts_.max_engine_seqs > 0 ? opts_.max_engine_seqs : llm_.config().max_num_seqs;
  while (!feeding_.empty()) {
    const int n = feeding_.front().subs[feeding_.front().next].params.n;
    // Room for the whole prompt's samples (an empty engine takes any), so that the engine's queue
    // holds no more than it can start: the order of service stays ours.
    if (engine_seqs_ > 0 && engine_seqs_ + n > limit) break;
    Feeding f = std::move(feeding_.front());
    feeding_.pop_front();
    add_to_engine(f, f.subs[f.next]);
    if (f.next < f.subs.size()) feeding_.insert(slot(feeding_, f.priority), std::move(f));
  }
}

void EngineLoop::add_to_engine(Feeding& f, SubRequest& sub) {
  const int n = sub.params.n, prompt_tokens = static_cast<int>(sub.prompt_token_ids.size());
  const int first_choice = f.next_choice;
  f.next_choice += n;
  ++f.next;
  unfed_choices_ -= n;
  try {
    const bool wants_prompt_logprobs = sub.params.prompt_logprobs.has_value();
    const int64_t id = llm_.add_request(std::move(sub.prompt_token_ids), sub.params);
    Live& live = live_[id];
    live.channel = f.channel;
    live.first_choice = first_choice;
    live.prompt_tokens = prompt_tokens;
    live.samples.resize(n);
    live.wants_prompt_logprobs = wants_prompt_logprobs;
    channel_ids_[f.channel.get()].push_back(id);
    engine_seqs_ += n;
    metrics_.on_prompt(prompt_tokens);
  } catch (const std::exception& e) {
    // Not expected: start_feeding ran the engine's checks. End these choices rather than hang.
    std::fprintf(stderr, "nanovllm serve: the engine refused a checked prompt: %s\n", e.what());
    for (int j = 0; j < n; ++j) {
      ChoiceEvent ev;
      ev.index = first_choice + j;
      ev.finished = true;
      ev.finish_reason = FinishReason::abort;
      f.channel->push(std::move(ev));
    }
    in_flight_ -= n;
  }
  // Dropped with the last sub: the vectors of a large request are not kept while it runs.
  sub.prompt_token_ids = {};
}

void EngineLoop::abort_unfed(Feeding& f) {
  for (; f.next < f.subs.size(); ++f.next) {
    const SubRequest& sub = f.subs[f.next];
    const int n = sub.params.n;
    for (int j = 0; j < n; ++j) {
      metrics_.on_finished("abort", steady_seconds() - f.channel->arrival_time(),
                           static_cast<int>(sub.prompt_token_ids.size()), 0);
      ChoiceEvent ev;
      ev.index = f.next_choice + j;
      ev.finished = true;
      ev.finish_reason = FinishReason::abort;
      f.channel->push(std::move(ev));
    }
    f.next_choice += n;
    unfed_choices_ -= n;
    in_flight_ -= n;
  }
}

void EngineLoop::abort_now(RequestChannel* channel) {
  for (auto it = feeding_.begin(); it != feeding_.end(); ++it)
    if (it->channel.get() == channel) {
      abort_unfed(*it);
      feeding_.erase(it);
      break;
    }
  auto it = channel_ids_.find(channel);
  if (it == channel_ids_.end()) return;  // already finished
  const std::vector<int64_t> ids = it->second;  // finish() edits the map
  for (int64_t id : ids) {
    auto lit = live_.find(id);
    if (lit == live_.end()) continue;
    // finish() erases the request with its last sample: no iterator into live_ across the calls
    // (it skips a sample already done, and a request already gone).
    const int n = static_cast<int>(lit->second.samples.size());
    for (int j = 0; j < n; ++j) finish(id, j, FinishReason::abort);
  }
}

void EngineLoop::abort_all() {
  std::deque<Submission> waiting;
  {
    std::lock_guard lk(mu_);
    waiting.swap(waiting_);
    waiting_choices_ = 0;
  }
  for (auto& s : waiting) s.channel->set_admission(AdmitState::shutting_down);
  for (Feeding& f : feeding_) abort_unfed(f);
  feeding_.clear();
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
  --engine_seqs_;
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
    // The last sample's end brings the request's output (prompt logprobs, cached tokens): the
    // others wait for it when the client needs either from each choice.
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
  if (live.num_aborted == 0) {
    try {
      RequestOutput out = llm_.take_output(id);
      std::shared_ptr<const std::vector<PositionLogprobs>> prompt_logprobs;
      if (live.wants_prompt_logprobs)
        prompt_logprobs = std::make_shared<const std::vector<PositionLogprobs>>(std::move(out.prompt_logprobs));
      for (ChoiceEvent& e : events) {
        e.prompt_logprobs = prompt_logprobs;
        e.cached_tokens = out.num_cached_prompt_tokens;
      }
      // vLLM's phases of a finished request: queued (here from its arrival at the server), prefill
      // (scheduled to first token), decode (first to last token), inference (scheduled to last).
      for (const CompletionOutput& c : out.outputs)
        if (c.first_scheduled_time > 0 && c.first_token_time > 0)
          metrics_.on_request_phases(c.first_scheduled_time - live.channel->arrival_time(),
                                     c.first_token_time - c.first_scheduled_time, c.finish_time - c.first_token_time,
                                     c.finish_time - c.first_scheduled_time);
      return;
    } catch (const std::exception& e) {
      // Not expected (every sample ended in the engine): answer "abort" rather than leave the
      // prompt's logprobs out.
      std::fprintf(stderr, "nanovllm serve: the output of request %lld: %s\n", static_cast<long long>(id), e.what());
      if (live.wants_prompt_logprobs)
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
    const auto ids = live_;
    for (const auto& [id, live] : ids)
      for (int j = 0; j < static_cast<int>(live.samples.size()); ++j)
        if (!live.samples[j].done) finish(id, j, FinishReason::abort);
    return;
  }
  const double now = steady_seconds();
  for (StepOutput& out : outs) {
    auto it = live_.find(out.request_id);
    if (it == live_.end()) continue;
    on_tokens(it->second, out, now);  // moves the tokens, logprobs and text out
    if (out.finished) finish(out.request_id, out.index, out.finish_reason);
  }
  // vLLM's iteration_tokens_total: the tokens one step computed (prompt and generated).
  const EngineStats s = llm_.stats();
  const int64_t tokens = s.prefill_tokens + s.decode_tokens;
  if (tokens > last_step_tokens_) metrics_.on_iteration_tokens(static_cast<int>(tokens - last_step_tokens_));
  last_step_tokens_ = tokens;
}

void EngineLoop::publish_stats(bool force) {
  auto now = std::chrono::steady_clock::now();
  if (!force && now - last_publish_ < std::chrono::milliseconds(20)) return;
  last_publish_ = now;
  int waiting;
  {
    std::lock_guard lk(mu_);
    waiting = waiting_choices_;
  }
  try {
    const EngineStats s = llm_.stats();
    if (last_step_tokens_ == 0) last_step_tokens_ = s.prefill_tokens + s.decode_tokens;
    metrics_.set_engine(s, waiting + unfed_choices_);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "nanovllm serve: engine stats failed: %s\n", e.what());
  }
}

}  // namespace nanovllm::server
