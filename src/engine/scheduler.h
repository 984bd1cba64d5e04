// Scheduler: decides which sequences run each step (nano-vLLM's scheduler.py, with chunked
// prefill). Prefill first, within the token budget, chunking a prompt that does not fit; decode
// otherwise, preempting the newest running sequence (recompute) when blocks run out.
#pragma once
#include <cstdint>
#include <deque>
#include <unordered_set>
#include <utility>
#include <vector>

#include "engine/block_manager.h"
#include "engine/sequence.h"

namespace nanovllm {

struct SchedulerConfig {
  int max_num_seqs = 512;
  int max_num_batched_tokens = 16384;
  int max_model_len = 4096;
  std::unordered_set<int32_t> eos_token_ids;
};

class Scheduler {
 public:
  Scheduler(SchedulerConfig config, BlockManager& block_manager);

  void add(Sequence* seq);  // to the back of the waiting queue
  bool is_finished() const { return waiting_.empty() && running_.empty(); }
  // The batch of this step and whether it is a prefill. Each scheduled sequence has blocks for
  // its tokens and num_scheduled_tokens set (from num_computed_tokens on); in a decode step
  // that is 1. Empty when there is nothing to run.
  std::pair<std::vector<Sequence*>, bool> schedule();
  // After the forward: `token_ids` holds one sampled token per scheduled sequence for which
  // samples_this_step() (in batch order). Appends them, finishes sequences (eos unless
  // ignore_eos, max_tokens, max_model_len) and frees their blocks. `now` stamps the times.
  // Returns the sequences that finished.
  std::vector<Sequence*> postprocess(const std::vector<Sequence*>& seqs, const std::vector<int32_t>& token_ids,
                                     double now);
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
  std::vector<Sequence*> schedule_decode();
  // Frees `seq`'s blocks and queues it first in line; its generated tokens are kept and
  // recomputed as prompt when it runs again.
  void preempt(Sequence* seq);

  SchedulerConfig config_;
  BlockManager& block_manager_;
  std::deque<Sequence*> waiting_;  // front: next to prefill (a partly prefilled sequence stays here)
  std::deque<Sequence*> running_;  // prefilled, decoding; back: newest
  int64_t num_preemptions_ = 0;
};

}  // namespace nanovllm
