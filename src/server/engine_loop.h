// EngineLoop: the one thread that owns the LLM. HTTP handler threads submit requests and aborts
// through a locked inbox; the loop adds them, steps the engine (continuous batching over every
// live request) and hands each step's new tokens to the request's RequestChannel.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "nanovllm/llm.h"
#include "server/metrics.h"

namespace nanovllm::server {

// What one engine step (or an abort) produced for one choice of an HTTP request: the engine has
// applied the stop rules and detokenized, so `text` is final.
struct ChoiceEvent {
  int index = 0;
  std::vector<int32_t> new_token_ids;
  std::vector<PositionLogprobs> logprobs;  // of new_token_ids, when the request asked for logprobs
  std::string text;
  bool finished = false;
  FinishReason finish_reason = FinishReason::none;  // when finished
  // On the finishing event of each choice of a request that asked for prompt logprobs (the
  // engine hands them over only once the request has ended): prompt positions 1.., shared by
  // the request's n choices. Null when the request was aborted.
  std::shared_ptr<const std::vector<PositionLogprobs>> prompt_logprobs;
};

// One HTTP request's mailbox: the engine loop pushes, the handler thread waits and pops.
class RequestChannel {
 public:
  RequestChannel();
  double arrival_time() const { return arrival_time_; }

  // Engine side.
  void set_admitted(std::string error);  // "" when every choice was added to the engine
  void push(ChoiceEvent ev);

  // Handler side. wait_admitted returns the admission error ("" on success).
  std::string wait_admitted();
  // Moves out the events that arrived; waits up to `timeout` when there are none. False on timeout.
  bool wait_events(std::vector<ChoiceEvent>& out, std::chrono::milliseconds timeout);

 private:
  double arrival_time_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool admitted_ = false;
  std::string admit_error_;
  std::vector<ChoiceEvent> events_;
};

// One engine request: a prompt and its SamplingParams (params.n choices).
struct SubRequest {
  std::vector<int32_t> prompt_token_ids;
  SamplingParams params;
};

enum class Admission { accepted, queue_full, shutting_down };

class EngineLoop {
 public:
  // `max_pending`: samples (choices) admitted and not yet finished, at most (beyond: queue_full).
  EngineLoop(LLM& llm, Metrics& metrics, int max_pending);
  ~EngineLoop();

  void start();
  // Stops taking requests, aborts every live one (their channels get a finished "abort" event)
  // and joins the thread.
  void stop();

  // Queues the engine requests of one HTTP request, all or none: subs[i]'s sample j is choice
  // i * n + j (n = subs[i].params.n, the same for every sub).
  Admission submit(const std::shared_ptr<RequestChannel>& channel, std::vector<SubRequest> subs);
  // Aborts every unfinished choice of `channel` (the client went away); a no-op once finished.
  void abort(const std::shared_ptr<RequestChannel>& channel);

  int num_in_flight() const { return in_flight_.load(); }

 private:
  struct Submission {
    std::shared_ptr<RequestChannel> channel;
    std::vector<SubRequest> subs;
  };
  // An engine request the engine is running (engine thread only): one prompt's n choices.
  struct Live {
    std::shared_ptr<RequestChannel> channel;
    int first_choice = 0;  // choice index of sample 0
    int prompt_tokens = 0;
    struct Sample {
      int generated = 0;
      double first_token_time = 0, last_token_time = 0;
      bool done = false;
    };
    std::vector<Sample> samples;
    int num_done = 0, num_aborted = 0;
    // With prompt logprobs, the finished samples' events wait for the last one: the prompt
    // logprobs come with the request's output, once every sample has ended.
    bool wants_prompt_logprobs = false;
    std::vector<ChoiceEvent> held;
  };

  void run();
  void admit(Submission& s);
  void abort_now(RequestChannel* channel);
  void abort_all();
  // Sample `index` of engine request `id` ended: tells its channel, counts it; the request is
  // retired once all its samples are.
  void finish(int64_t id, int index, FinishReason reason);
  // Ends engine request `id` (every sample done): gives `events` its prompt logprobs when it
  // asked for them and ran to the end, and frees it.
  void retire(int64_t id, const Live& live, std::vector<ChoiceEvent>& events);
  void on_tokens(Live& live, StepOutput& out, double now);
  void step_once();
  void publish_stats(bool force);

  LLM& llm_;
  Metrics& metrics_;
  const int max_pending_;
  std::atomic<int> in_flight_{0};

  std::mutex mu_;  // guards the inbox and stopping_
  std::condition_variable cv_;
  std::vector<Submission> submissions_;
  std::vector<std::shared_ptr<RequestChannel>> aborts_;
  bool stopping_ = false;

  // Engine thread only.
  std::map<int64_t, Live> live_;
  std::map<RequestChannel*, std::vector<int64_t>> channel_ids_;  // a channel's live engine requests
  std::chrono::steady_clock::time_point last_publish_{};
  std::thread thread_;
};

}  // namespace nanovllm::server
