// StepStats: what the engine measures, kept off the step path's logic: the start-up phases, the
// per-step counters behind stats() and the progress bar, the host-gap clock, and the optional
// step trace (one CSV line per step, for measurements).
#pragma once
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

#include "engine/scheduler.h"
#include "nanovllm/output.h"

namespace nanovllm {

// Start-up phases, each timed from the end of the one before.
class StartupTimer {
 public:
  StartupTimer();
  double lap();                       // seconds since the last lap (or the start)
  double total() const;               // seconds since the start

 private:
  double start_, last_;
};

// When a step's work reached the device and when its results were back on the host (seconds on
// the steady clock), as ModelRunner::run reports them.
struct StepTiming {
  double launch = 0, done = 0;
  int padded_batch = 0;               // sequences the forward ran (a decode graph pads the batch)
};

class StepStats {
 public:
  // trace_path: "" for no trace; else the CSV is created (throws naming the path if it cannot be).
  explicit StepStats(const std::string& trace_path);
  ~StepStats();

  void on_request(int prompt_tokens) { prompt_tokens_ += prompt_tokens; }
  // After a step ran: its counters, the gap since the previous step's results, the trace line.
  void on_step(const ScheduledBatch& batch, const StepTiming& t);
  // The caller goes idle on purpose (between generate() calls): the next gap is not counted.
  void pause_gap_clock() { last_done_ = 0; }

  double last_prefill_tps() const { return last_prefill_tps_; }
  double last_decode_tps() const { return last_decode_tps_; }
  void fill(EngineStats& s) const;    // the counters of EngineStats

 private:
  int64_t prompt_tokens_ = 0, generation_tokens_ = 0, num_steps_ = 0;
  double prefill_seconds_ = 0, decode_seconds_ = 0;
  int64_t prefill_tokens_ = 0, decode_tokens_ = 0;
  double last_prefill_tps_ = 0, last_decode_tps_ = 0;
  double host_gap_seconds_ = 0, last_done_ = 0;
  struct FileClose {
    void operator()(std::FILE* f) const { std::fclose(f); }
  };
  std::unique_ptr<std::FILE, FileClose> trace_;
};

}  // namespace nanovllm
