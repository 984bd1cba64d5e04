// Scheduler: decides which sequences run each step (nano-vLLM's scheduler.py, with chunked
// prefill). Prefill first, within the token budget, chunking a prompt that does not fit; decode
// otherwise, preempting the newest running sequence (recompute) when blocks run out. Under the
// priority policy (vLLM's) the waiting queue is ordered by (priority, arrival) and preemption
// takes the running sequence that sorts last.
#pragma once
#include <cstdint>
#include <deque>
#include <unordered_set>
#include <vector>

#include "engine/block_manager.h"
#include "engine/sequence.h"

namespace nanovllm {

struct SchedulerConfig {
  int max_num_seqs = 512;
  int max_num_batched_tokens = 16384;
  int max_model_len = 4096;
  std::unordered_set<int32_t> eos_token_ids;
  bool priority = false;  // order by SamplingParams::priority (EngineConfig::scheduling_policy)
};

// One step's work, as schedule() returns it. Which sequences sample is decided here, once: the
// runner builds their logits rows, postprocess appends their tokens, the engine reports them.
struct ScheduledBatch {
  std::vector<Sequence*> seqs;     // each with blocks for its tokens and num_scheduled_tokens set
  bool is_prefill = false;
  int num_tokens = 0;              // the sum of num_scheduled_tokens
  std::vector<Sequence*> sampled;  // those whose step reaches their last token (samples_this_step), in batch order
  // Preempted by this schedule(): the engine frees what else they hold (their token-counts rows),
  // since under the priority policy new sequences may run before they do.
  std::vector<Sequence*> preempted;
  bool empty() const { return seqs.empty(); }
};

class Scheduler {
 public:
  Scheduler(SchedulerConfig config, BlockManager& block_manager);

  void add(Sequence* seq);  // to the back of the waiting queue (priority: behind its equals)
  bool is_finished() const { return waiting_.empty() && running_.empty(); }
  // The batch of this step: prefill chunks, or decode (one token a sequence). Each scheduled
  // sequence has blocks for its tokens and num_scheduled_tokens set (from num_computed_tokens
  // on). Empty when there is nothing to run.
  ScheduledBatch schedule();
  // After the forward: `token_ids` holds one sampled token per sequence of batch.sampled. Appends them (and their text, when the sequence has a
  // TextStream), finishes sequences (eos unless ignore_eos, stop token ids, stop strings,
  // max_tokens, max_model_len) and frees their blocks in this same call. `now` stamps the times.
  // Returns the sequences that finished.
  std::vector<Sequence*> postprocess(const ScheduledBatch& batch, const std::vector<int32_t>& token_ids, double now);
  // Takes `seq` out of whichever queue holds it and frees its blocks.
  void abort(Sequence* seq);
  // The forward of a scheduled batch failed: nothing it was to compute may be found in the prefix
  // cache, and no sequence keeps tokens scheduled.
  void forget_step(const std::vector<Sequence*>& seqs);

  int num_waiting() const { return static_cast<int>(waiting_.size()); }
  int num_running() const { return static_cast<int>(running_.size()); }
  int64_t num_preemptions() const { return num_preemptions_; }
  const SchedulerConfig& config() const { return config_; }

 private:
  std::vector<Sequence*> schedule_prefill();
  std::vector<Sequence*> schedule_decode(std::vector<Sequence*>& preempted);
  // Frees `seq`'s blocks and queues it first in line; its generated tokens are kept and
  // recomputed as prompt when it runs again.
  void preempt(Sequence* seq);
  // The running sequence to preempt for `seq`'s room: the newest (fcfs) or the one that sorts last
  // by (priority, arrival), `seq` itself included. Takes it out of running_ unless it is `seq`.
  Sequence* pick_victim(Sequence* seq);
  // Into the waiting queue: fcfs puts a new sequence last and a preempted one first; priority puts
  // either where (priority, arrival) sorts it.
  void enqueue_waiting(Sequence* seq, bool preempted);
  // Whether `token`, just appended, ends `seq`; sets its finish and stop reasons and its text.
  bool finish_on(Sequence& seq, int32_t token);

  SchedulerConfig config_;
  BlockManager& block_manager_;
  std::deque<Sequence*> waiting_;  // front: next to prefill (a partly prefilled sequence stays here)
  std::deque<Sequence*> running_;  // prefilled, decoding; back: newest
  int64_t num_preemptions_ = 0;
};

}  // namespace nanovllm
