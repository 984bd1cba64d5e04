// What one benchmark run measured, from per-request timestamps and the engine's counters:
// throughput, TTFT / TPOT / end-to-end latency summaries, prefill and decode rates; and the
// median-and-spread view of several runs (`bench --repeat`).
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "nanovllm/output.h"
#include "cli/bench/stats.h"

namespace nanovllm {

// One request's life on one clock, in seconds.
struct RequestTiming {
  double arrival = 0, first_token = 0, finish = 0;
  int64_t num_prompt_tokens = 0, num_output_tokens = 0;
};

RequestTiming timing_of(const RequestOutput& out);

struct BenchRun {
  int num_seqs = 0;
  int64_t prompt_tokens = 0, output_tokens = 0;
  double time_s = 0, throughput_tok_s = 0;  // output tokens / wall time, bench.py's number
  Summary ttft_ms, e2e_ms;
  Summary tpot_ms;                          // over requests with >= 2 output tokens; count 0 if none
  // From the engine's counters over the run (absent online, where only the server knows them).
  std::optional<double> prefill_tok_s, decode_tok_s, prefix_cache_hit_rate;
  std::optional<int64_t> peak_memory_bytes, kvcache_blocks, num_preemptions, num_steps;
  std::optional<double> host_gap_s;  // device idle between steps while the host schedules and prepares
};

// TTFT = first_token - arrival, e2e = finish - arrival, TPOT = (finish - first_token) / (n - 1).
// Throws std::invalid_argument on no requests, time_s <= 0, or a timestamp out of order.
BenchRun measure_run(const std::vector<RequestTiming>& requests, double time_s);

// Fills the engine-side fields from counter snapshots taken before and after the timed run.
void add_engine_stats(BenchRun& run, const EngineStats& before, const EngineStats& after);

nlohmann::json to_json(const BenchRun& run);

// Several runs' JSON objects combined: every metric is the median over the runs, and
// "repeat": {"n", "spread": {"<metric>": {median, min, max, stdev}}} tells how much they varied.
nlohmann::json combine_runs(const std::vector<nlohmann::json>& runs);

// bench.py's own line: "Total: 133966tok, Time: 9.23s, Throughput: 14519.11tok/s".
std::string bench_py_line(int64_t output_tokens, double time_s);

// The human-readable report: bench.py's line, rates, the latency table, memory and cache.
std::string format_report(const nlohmann::json& result);

}  // namespace nanovllm
