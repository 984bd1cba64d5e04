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

// What one engine step (or an abort) produced for one choice of an HTTP request.
struct ChoiceEvent {
  int index = 0;
  std::vector<int32_t> new_token_ids;
  bool finished = false;
  std::string finish_reason;  // "stop", "length" or "abort" when finished
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

struct SubRequest {
  std::vector<int32_t> prompt_token_ids;
  SamplingParams params;
};

enum class Admission { accepted, queue_full, shutting_down };

class EngineLoop {
 public:
  // `max_pending`: sub-requests admitted and not yet finished, at most (beyond: queue_full).
  EngineLoop(LLM& llm, Metrics& metrics, int max_pending);
  ~EngineLoop();

  void start();
  // Stops taking requests, aborts every live one (their channels get a finished "abort" event)
  // and joins the thread.
  void stop();

  // Queues the choices of one HTTP request (choice i is subs[i]), all or none.
  Admission submit(const std::shared_ptr<RequestChannel>& channel, std::vector<SubRequest> subs);
  // Aborts choice `index` of `channel` (-1: all of them); a no-op for finished choices. `reason`
  // is what the metrics count it as: "abort", or "stop" when a stop string ended it.
  void abort(const std::shared_ptr<RequestChannel>& channel, int index, std::string reason = "abort");

  int num_in_flight() const { return in_flight_.load(); }

 private:
  struct Submission {
    std::shared_ptr<RequestChannel> channel;
    std::vector<SubRequest> subs;
  };
  struct Abort {
    std::shared_ptr<RequestChannel> channel;
    int index;
    std::string reason;
  };
  // A request the engine is running (engine thread only).
  struct Live {
    std::shared_ptr<RequestChannel> channel;
    int index = 0;
    int prompt_tokens = 0, generated = 0;
    double first_token_time = 0, last_token_time = 0;
  };

  void run();
  void admit(Submission& s);
  void abort_now(RequestChannel* channel, int index, const std::string& reason);
  void finish(int64_t id, const std::string& reason);
  void step_once();
  void publish_stats(bool force);

  LLM& llm_;
  Metrics& metrics_;
  const int max_pending_;
  std::atomic<int> in_flight_{0};

  std::mutex mu_;  // guards the inbox and stopping_
  std::condition_variable cv_;
  std::vector<Submission> submissions_;
  std::vector<Abort> aborts_;
  bool stopping_ = false;

  // Engine thread only.
  std::map<int64_t, Live> live_;
  std::map<RequestChannel*, std::vector<int64_t>> channel_ids_;  // choice index -> engine id (-1: done)
  std::chrono::steady_clock::time_point last_publish_{};
  std::thread thread_;
};

}  // namespace nanovllm::server
