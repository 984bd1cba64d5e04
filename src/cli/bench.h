// `nanovllm bench`: what its parts share. bench.cpp parses flags; bench_offline.cpp runs the
// workload through an in-process LLM; bench_sweep.cpp repeats that over an EngineConfig field;
// bench_online.cpp sends it to a running `nanovllm serve`.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "nanovllm/config.h"
#include "cli/bench/workload.h"

namespace nanovllm::cli {

struct BenchOptions {
  WorkloadSpec workload;
  float temperature = 0.6f;
  // More sampling, to measure its cost (off by default, as bench.py samples with temperature only).
  float top_p = 1.0f, min_p = 0.0f, repetition_penalty = 1.0f;
  int top_k = 0;
  int logprobs = -1;  // -1: none
  int repeat = 1;
  bool profile = false;  // the timed runs inside LLM::start_profile / stop_profile
  bool json = false, dry_run = false;
  std::string sweep;                       // "field=v1,v2,..."
  std::string out_prefix = "bench-sweep";  // sweep writes PREFIX.csv and PREFIX.svg
  bool online = false;
  std::string url = "http://127.0.0.1:8000";
  double request_rate = 0;                 // requests/s with Poisson arrivals; 0 = all at once
  int max_concurrency = 256;               // online: client threads (requests in flight at most)
  std::string served_model;                // online: the "model" field; empty = ask /v1/models
};

// A float as the short decimal it was written as, for JSON (0.9, not 0.8999999761581421).
double float_json(float f);
// The resolved EngineConfig as JSON, for reports.
nlohmann::json config_json(const EngineConfig& config);
// The workload's parameters (seed, ranges, temperature) as JSON, for reports.
nlohmann::json workload_json(const BenchOptions& opts);

// Builds an LLM, runs one untimed warm-up and `opts.repeat` timed generates of `workload`;
// returns the (combined) result with device and config.
nlohmann::json run_offline(const EngineConfig& config, const Workload& workload, const BenchOptions& opts);

// "max_num_seqs=1,8,32" -> field and values; throws naming the field or value when unknown/bad.
struct SweepSpec {
  std::string field;
  std::vector<std::string> values;
};
SweepSpec parse_sweep(const std::string& text);
// Sets `field` of `config` from its text; throws std::invalid_argument naming field and value.
void set_config_field(EngineConfig& config, const std::string& field, const std::string& value);
// Runs every setting; writes PREFIX.csv and PREFIX.svg; returns {"sweep": ..., "points": [...]}.
nlohmann::json run_sweep(const EngineConfig& base, const Workload& workload, const BenchOptions& opts);
std::string sweep_csv(const nlohmann::json& sweep);
std::string sweep_svg(const nlohmann::json& sweep);

// Sends the workload to `opts.url` (/v1/completions, streaming) with Poisson arrivals.
nlohmann::json run_online(const Workload& workload, const BenchOptions& opts, uint64_t seed);

}  // namespace nanovllm::cli
