// EngineLoop: the one thread that owns the LLM. Handlers submit requests and aborts through a
// locked inbox. A request is admitted whole when its sequences fit under --max-pending, in arrival
// order; one that does not fit waits (at most --max-queue-wait) behind those that came before it.
// Admitted requests feed the engine round-robin, one prompt at a time, so the engine's own queue
// stays short and a request of many sequences cannot hold it: each request's next prompt goes in
// as soon as the engine has room for it. Each step's tokens go to the request's RequestChannel.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
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
  int cached_tokens = 0;  // on a finishing event: the prompt's tokens served from the prefix cache
};

// Where a submitted request stands.
enum class AdmitState {
  pending,        // waiting for room under --max-pending
  admitted,       // counted; its choices run (or wait for the engine's room)
  refused,        // the engine refused a prompt or its parameters (error says why): a 400
  queue_timeout,  // no room within --max-queue-wait: a 503
  shutting_down,  // the server stopped before it was admitted: a 503
};

// One HTTP request's mailbox: the engine loop pushes, the handler takes.
class RequestChannel {
 public:
  RequestChannel();
  double arrival_time() const { return arrival_time_; }
  // Called (from the engine thread, outside the channel's lock) after each change; set it before
  // submitting.
  void set_notify(std::function<void()> f) { notify_ = std::move(f); }

  // Engine side.
  void set_admission(AdmitState state, std::string error = "");
  void push(ChoiceEvent ev);

  // Handler side, non-blocking.
  AdmitState admission(std::string* error = nullptr) const;
  // Moves out the events that arrived; false when there were none.
  bool take_events(std::vector<ChoiceEvent>& out);
  // take_events without waiting: false, nothing taken, while the engine thread holds the channel
  // (it notifies once it lets go), so that the I/O thread never waits on the engine's turn on a CPU.
  bool try_take_events(std::vector<ChoiceEvent>& out);

  // Blocking forms, for tests: the admission error ("" once admitted), and events with a timeout.
  std::string wait_admitted();
  bool wait_events(std::vector<ChoiceEvent>& out, std::chrono::milliseconds timeout);

 private:
  void notify();
  bool take_locked(std::vector<ChoiceEvent>& out);  // caller holds mu_
  double arrival_time_;
  std::function<void()> notify_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  AdmitState state_ = AdmitState::pending;
  std::string admit_error_;
  std::vector<ChoiceEvent> events_;
};

// One engine request: a prompt and its SamplingParams (params.n choices).
struct SubRequest {
  std::vector<int32_t> prompt_token_ids;
  SamplingParams params;
};

enum class Admission { accepted, queue_full, shutting_down };

struct EngineLoopOptions {
  int max_pending = 4096;       // admitted, unfinished choices at most
  double max_queue_wait_s = 0;  // how long a request waits for room (0: queue_full at once)
  int max_engine_seqs = 0;      // sequences fed to the engine and unfinished (0: its max_num_seqs)
  int nice = 0;                 // the engine thread's nice value above the process's (serve's --engine-nice)
  bool priority = false;        // queues by (SamplingParams::priority, arrival), not arrival alone
};

class EngineLoop {
 public:
  EngineLoop(LLM& llm, Metrics& metrics, EngineLoopOptions options);
  // `max_pending` with no queueing: a request that does not fit at once is queue_full.
  EngineLoop(LLM& llm, Metrics& metrics, int max_pending) : EngineLoop(llm, metrics, EngineLoopOptions{max_pending}) {}
  ~EngineLoop();

  void start();
  // Stops taking requests, aborts every live one (their channels get a finished "abort" event;
  // those still waiting for admission get shutting_down) and joins the thread.
  void stop();

  // Queues the engine requests of one HTTP request, all or none: subs[i]'s sample j is choice
  // i * n + j (n = subs[i].params.n, the same for every sub). `accepted` means admitted or waiting
  // (the channel says which); queue_full only when it does not fit now and the loop does not queue.
  Admission submit(const std::shared_ptr<RequestChannel>& channel, std::vector<SubRequest> subs);
  // Aborts every unfinished choice of `channel` (the client went away); a no-op once finished.
  void abort(const std::shared_ptr<RequestChannel>& channel);

  int num_in_flight() const { return in_flight_.load(); }

 private:
  struct Submission {
    std::shared_ptr<RequestChannel> channel;
    std::vector<SubRequest> subs;
    int choices = 0;
    std::chrono::steady_clock::time_point deadline;
    int priority = 0;
  };
  // An admitted request whose prompts are not all in the engine yet (engine thread only).
  struct Feeding {
    std::shared_ptr<RequestChannel> channel;
    std::vector<SubRequest> subs;
    size_t next = 0;       // the next sub to add
    int next_choice = 0;   // choice index of its sample 0
    int priority = 0;
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
  // Moves waiting submissions that fit under max_pending into feeding_ (arrival order), and
  // answers those that waited too long. Caller holds mu_.
  void admit_waiting_locked(std::vector<Submission>& admitted, std::vector<Submission>& expired);
  // Where an entry of `priority` joins a queue: the back (fcfs), or behind its equals (priority).
  template <class Queue>
  typename Queue::iterator slot(Queue& q, int priority) const;
  void start_feeding(Submission& s);
  void feed();
  void add_to_engine(Feeding& f, SubRequest& sub);
  void abort_now(RequestChannel* channel);
  void abort_all();
  // Ends the not-yet-fed choices of `f` with "abort".
  void abort_unfed(Feeding& f);
  // Sample `index` of engine request `id` ended: tells its channel, counts it; the request is
  // retired once all its samples are.
  void finish(int64_t id, int index, FinishReason reason);
  // Ends engine request `id` (every sample done): gives `events` its prompt logprobs and cached
  // tokens when it ran to the end, records its timings, and frees it.
  void retire(int64_t id, const Live& live, std::vector<ChoiceEvent>& events);
  void on_tokens(Live& live, StepOutput& out, double now);
  void step_once();
  void publish_stats(bool force);

  LLM& llm_;
  Metrics& metrics_;
  const EngineLoopOptions opts_;
  std::atomic<int> in_flight_{0};  // admitted choices not yet finished

  std::mutex mu_;  // guards the inbox, the waiting queue, and stopping_
  std::condition_variable cv_;
  std::deque<Submission> waiting_;  // not admitted yet, in arrival (or priority, arrival) order
  std::vector<Submission> admitted_inbox_;
  std::vector<std::shared_ptr<RequestChannel>> aborts_;
  int waiting_choices_ = 0;
  bool stopping_ = false;

  // Engine thread only.
  // Round-robin: the front gives one prompt, then goes to the back (priority: behind its equals).
  std::deque<Feeding> feeding_;
  int engine_seqs_ = 0;          // sequences in the engine, unfinished
  int unfed_choices_ = 0;
  std::map<int64_t, Live> live_;
  std::map<RequestChannel*, std::vector<int64_t>> channel_ids_;  // a channel's live engine requests
  std::chrono::steady_clock::time_point last_publish_{};
  int64_t last_step_tokens_ = 0;
  std::mutex join_mu_;  // stop() may come from two threads at once (the signal watcher and serve())
  std::thread thread_;
};

}  // namespace nanovllm::server
