// Scheduler: prefill (chunked) and decode batches, preemption by recompute, and postprocess.
#include "engine/scheduler.h"
#include "util/clock.h"

#include <algorithm>
#include <cassert>
#include <stdexcept>
#include <string>

namespace nanovllm {

Scheduler::Scheduler(SchedulerConfig config, BlockManager& block_manager)
    : config_(std::move(config)), block_manager_(block_manager) {
  if (config_.max_num_seqs <= 0 || config_.max_num_batched_tokens <= 0)
    throw std::invalid_argument("scheduler: max_num_seqs (" + std::to_string(config_.max_num_seqs) +
                                ") and max_num_batched_tokens (" + std::to_string(config_.max_num_batched_tokens) +
                                ") must be > 0");
}

namespace {
// vLLM's priority order: lower priority value first, then earlier arrival (seq ids grow with it).
bool runs_before(const Sequence* a, const Sequence* b) {
  return a->params.priority != b->params.priority ? a->params.priority < b->params.priority : a->seq_id < b->seq_id;
}
}  // namespace

void Scheduler::add(Sequence* seq) {
  seq->status = SequenceStatus::waiting;
  enqueue_waiting(seq, false);
}

void Scheduler::enqueue_waiting(Sequence* seq, bool preempted) {
  if (!config_.priority) {
    if (preempted) waiting_.push_front(seq);
    else waiting_.push_back(seq);
    return;
  }
  waiting_.insert(std::upper_bound(waiting_.begin(), waiting_.end(), seq, runs_before), seq);
}

ScheduledBatch Scheduler::schedule() {
  ScheduledBatch b;
  b.seqs = schedule_prefill();
  b.is_prefill = !b.seqs.empty();
  if (!b.is_prefill) b.seqs = schedule_decode(b.preempted);
  if (b.seqs.empty() && !waiting_.empty() && running_.empty()) {
    // Every block is free and the first waiting sequence still does not fit.
    const Sequence* s = waiting_.front();
    throw std::runtime_error("KV cache too small: request " + std::to_string(s->seq_id) + " needs " +
                             std::to_string(s->num_blocks()) + " blocks of " +
                             std::to_string(block_manager_.block_size()) + " tokens, the cache has " +
                             std::to_string(block_manager_.num_blocks()));
  }
  for (Sequence* s : b.seqs) {
    b.num_tokens += s->num_scheduled_tokens;
    if (s->samples_this_step()) b.sampled.push_back(s);
  }
  return b;
}

std::vector<Sequence*> Scheduler::schedule_prefill() {
  std::vector<Sequence*> batch;
  int num_batched_tokens = 0;
  Sequence* partial = nullptr;
  // max_num_seqs bounds the running set (vLLM's meaning), not only one step's batch: a sequence
  // admitted here joins running_, so running_ counts this step's finished prefills too.
  while (!waiting_.empty() && static_cast<int>(running_.size()) < config_.max_num_seqs) {
    int budget = config_.max_num_batched_tokens - num_batched_tokens;
    if (budget <= 0) break;
    Sequence* seq = waiting_.front();
    if (seq->block_table.empty()) {  // not started (or preempted): blocks for all its tokens now
      if (!block_manager_.try_allocate(*seq)) break;
      if (seq->num_completion_tokens() == 0) seq->num_prompt_cached_tokens = seq->num_cached_tokens;
    }
    if (seq->first_scheduled_time == 0) seq->first_scheduled_time = steady_seconds();
    int remaining = seq->num_tokens() - seq->num_computed_tokens;
    assert(remaining > 0);
    seq->num_scheduled_tokens = std::min(remaining, budget);
    block_manager_.hash_blocks(*seq);
    waiting_.pop_front();
    batch.push_back(seq);
    num_batched_tokens += seq->num_scheduled_tokens;
    if (seq->num_scheduled_tokens == remaining) {
      seq->status = SequenceStatus::running;
      running_.push_back(seq);
    } else {
      partial = seq;  // the budget is spent; the rest of its prompt comes next step
      break;
    }
  }
  if (partial) waiting_.push_front(partial);
  return batch;
}

std::vector<Sequence*> Scheduler::schedule_decode(std::vector<Sequence*>& preempted) {
  std::vector<Sequence*> batch;
  int max_batch = std::min(config_.max_num_seqs, config_.max_num_batched_tokens);
  while (!running_.empty() && static_cast<int>(batch.size()) < max_batch) {
    Sequence* seq = running_.front();
    running_.pop_front();
    bool preempted_self = false;
    while (!block_manager_.can_append(*seq)) {
      Sequence* victim = pick_victim(seq);
      preempt(victim);
      preempted.push_back(victim);
      if (victim == seq) {
        preempted_self = true;
        break;
      }
    }
    if (preempted_self) continue;
    seq->num_scheduled_tokens = 1;
    block_manager_.may_append(*seq);
    block_manager_.hash_blocks(*seq);
    batch.push_back(seq);
  }
  running_.insert(running_.begin(), batch.begin(), batch.end());
  return batch;
}

Sequence* Scheduler::pick_victim(Sequence* seq) {
  if (running_.empty()) return seq;
  auto last = std::prev(running_.end());
  if (config_.priority) {
    last = std::max_element(running_.begin(), running_.end(), runs_before);
    if (runs_before(*last, seq)) return seq;
  }
  Sequence* victim = *last;
  running_.erase(last);
  return victim;
}

void Scheduler::preempt(Sequence* seq) {
  seq->status = SequenceStatus::waiting;
  block_manager_.deallocate(*seq);
  enqueue_waiting(seq, true);
  ++num_preemptions_;
}

std::vector<Sequence*> Scheduler::postprocess(const ScheduledBatch& batch, const std::vector<int32_t>& token_ids,
                                              double now) {
  if (token_ids.size() != batch.sampled.size())
    throw std::logic_error("postprocess: " + std::to_string(token_ids.size()) + " sampled tokens for " +
                           std::to_string(batch.sampled.size()) + " sampling sequences");
  for (Sequence* seq : batch.seqs) {
    seq->num_computed_tokens += seq->num_scheduled_tokens;
    seq->num_scheduled_tokens = 0;
  }
  std::vector<Sequence*> finished;
  for (size_t i = 0; i < token_ids.size(); ++i) {
    Sequence* seq = batch.sampled[i];
    const int32_t token = token_ids[i];
    seq->append_token(token);
    if (seq->first_token_time == 0) seq->first_token_time = now;
    if (finish_on(*seq, token)) {
      seq->status = SequenceStatus::finished;
      seq->finish_time = now;
      block_manager_.deallocate(*seq);
      finished.push_back(seq);
    }
  }
  // One pass over the running queue, however many finished this step.
  if (!finished.empty()) std::erase_if(running_, [](const Sequence* s) { return s->is_finished(); });
  return finished;
}

// vLLM's order: nothing but the lengths before min_tokens, then EOS (unless ignore_eos), then the
// request's stop token ids, then the lengths; a stop string in the text this token completes wins
// over a length limit (stop strings count only past min_tokens). The text of a stopping token is
// left out unless include_stop_str_in_output.
bool Scheduler::finish_on(Sequence& seq, int32_t token) {
  const SamplingParams& p = seq.params;
  const bool may_stop = seq.num_completion_tokens() >= p.min_tokens;
  const bool eos = may_stop && !p.ignore_eos && config_.eos_token_ids.count(token);
  const bool stop_token = may_stop && std::find(p.stop_token_ids.begin(), p.stop_token_ids.end(), token) !=
                                          p.stop_token_ids.end();
  FinishReason reason = FinishReason::none;
  if (eos || stop_token) {
    reason = FinishReason::stop;
    if (stop_token && !eos) seq.stop_reason = token;
  } else if (seq.num_completion_tokens() >= p.max_tokens || seq.num_tokens() >= config_.max_model_len) {
    reason = FinishReason::length;
  }
  if (TextStream* ts = seq.text_stream.get()) {
    const bool check_stop_strings = seq.num_completion_tokens() > p.min_tokens;
    if (reason != FinishReason::stop || p.include_stop_str_in_output) seq.output_text += ts->push(token, check_stop_strings);
    if (ts->stopped()) {
      reason = FinishReason::stop;
      seq.stop_reason = ts->matched_stop();
    } else if (reason != FinishReason::none) {
      seq.output_text += ts->finish();
    }
  }
  seq.finish_reason = reason;
  return reason != FinishReason::none;
}

void Scheduler::abort(Sequence* seq) {
  auto drop = [seq](std::deque<Sequence*>& q) {
    auto it = std::find(q.begin(), q.end(), seq);
    if (it != q.end()) q.erase(it);
  };
  drop(waiting_);
  drop(running_);
  if (!seq->block_table.empty()) block_manager_.deallocate(*seq);
  seq->status = SequenceStatus::finished;
  seq->finish_reason = FinishReason::abort;
}

void Scheduler::forget_step(const std::vector<Sequence*>& seqs) {
  for (Sequence* seq : seqs) {
    block_manager_.unhash_uncomputed_blocks(*seq);
    seq->num_scheduled_tokens = 0;
  }
}

}  // namespace nanovllm
