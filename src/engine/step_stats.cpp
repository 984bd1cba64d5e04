// StepStats: counters, the host-gap clock and the step trace.
#include "engine/step_stats.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "util/clock.h"

namespace nanovllm {

StartupTimer::StartupTimer() : start_(steady_seconds()), last_(start_) {}

double StartupTimer::lap() {
  const double now = steady_seconds(), d = now - last_;
  last_ = now;
  return d;
}

double StartupTimer::total() const { return steady_seconds() - start_; }

StepStats::StepStats(const std::string& trace_path) {
  if (trace_path.empty()) return;
  trace_.reset(std::fopen(trace_path.c_str(), "w"));
  if (!trace_)
    throw std::runtime_error("NANOVLLM_STEP_TRACE: cannot write '" + trace_path + "': " + std::strerror(errno));
  std::fprintf(trace_.get(), "prefill,seqs,padded,tokens,context_tokens,us\n");
}

StepStats::~StepStats() = default;

void StepStats::on_step(const ScheduledBatch& batch, const StepTiming& t) {
  ++num_steps_;
  // Every step ends with a synchronizing copy of its results, so the device idles from one
  // step's results to the next step's launch: that is host time the GPU waits for.
  if (last_done_ > 0) host_gap_seconds_ += std::max(0.0, t.launch - last_done_);
  last_done_ = t.done;
  const double dt = std::max(t.done - t.launch, 1e-9);
  if (batch.is_prefill) {
    prefill_seconds_ += dt;
    prefill_tokens_ += batch.num_tokens;
    last_prefill_tps_ = batch.num_tokens / dt;
  } else {
    decode_seconds_ += dt;
    decode_tokens_ += batch.num_tokens;
    last_decode_tps_ = batch.num_tokens / dt;
  }
  generation_tokens_ += static_cast<int64_t>(batch.sampled.size());
  if (trace_) {
    long long ctx = 0;
    for (const Sequence* s : batch.seqs) ctx += s->num_computed_tokens + s->num_scheduled_tokens;
    std::fprintf(trace_.get(), "%d,%zu,%d,%d,%lld,%.1f\n", batch.is_prefill ? 1 : 0, batch.seqs.size(),
                 t.padded_batch, batch.num_tokens, ctx, dt * 1e6);
  }
}

void StepStats::fill(EngineStats& s) const {
  s.prompt_tokens = prompt_tokens_;
  s.generation_tokens = generation_tokens_;
  s.prefill_seconds = prefill_seconds_;
  s.decode_seconds = decode_seconds_;
  s.prefill_tokens = prefill_tokens_;
  s.decode_tokens = decode_tokens_;
  s.host_gap_seconds = host_gap_seconds_;
  s.num_steps = num_steps_;
}

}  // namespace nanovllm
