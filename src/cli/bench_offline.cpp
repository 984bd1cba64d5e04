// bench.py's measurement in process: one untimed warm-up, then timed generate()s of the workload.
#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "cli/bench.h"
#include "nanovllm/llm.h"
#include "cli/bench/bench_metrics.h"
#include "util/clock.h"

namespace nanovllm::cli {

// A float as the decimal it was written as (0.9, not 0.8999999761581421).
double float_json(float f) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.7g", double(f));
  return std::strtod(buf, nullptr);
}

nlohmann::json config_json(const EngineConfig& c) {
  return {{"model", c.model},
          {"device", c.device ? to_string(*c.device) : "auto"},
          {"max_num_batched_tokens", c.max_num_batched_tokens},
          {"max_num_seqs", c.max_num_seqs},
          {"max_model_len", c.max_model_len},
          {"gpu_memory_utilization", float_json(c.gpu_memory_utilization)},
          {"tensor_parallel_size", c.tensor_parallel_size},
          {"enforce_eager", c.enforce_eager},
          {"kvcache_block_size", c.kvcache_block_size},
          {"num_kvcache_blocks", c.num_kvcache_blocks},
          {"seed", c.seed},
          {"enable_prefix_caching", c.enable_prefix_caching},
          {"cpu_kvcache_space_gb", c.cpu_kvcache_space_gb},
          {"num_threads", c.num_threads}};
}

nlohmann::json workload_json(const BenchOptions& o) {
  const WorkloadSpec& w = o.workload;
  return {{"seed", w.seed},           {"num_seqs", w.num_seqs},     {"min_input", w.min_input},
          {"max_input", w.max_input}, {"min_output", w.min_output}, {"max_output", w.max_output},
          {"max_token_id", w.max_token_id}, {"temperature", float_json(o.temperature)},
          {"top_p", float_json(o.top_p)}, {"top_k", o.top_k}, {"min_p", float_json(o.min_p)},
          {"repetition_penalty", float_json(o.repetition_penalty)},
          {"logprobs", o.logprobs >= 0 ? nlohmann::json(o.logprobs) : nlohmann::json()}};
}

namespace {

void warm_up(LLM& llm) {
  // bench.py: llm.generate(["Benchmark: "], SamplingParams()). A model without a tokenizer gets
  // a few token ids instead; either way it is short, compiles/captures what is lazy, and is not timed.
  if (llm.has_tokenizer())
    llm.generate(std::vector<std::string>{"Benchmark: "}, SamplingParams{}, false);
  else
    llm.generate(std::vector<std::vector<int32_t>>{{1, 2, 3, 4}}, SamplingParams{}, false);
}

nlohmann::json timed_run(LLM& llm, const Workload& workload, const std::vector<SamplingParams>& params) {
  const EngineStats before = llm.stats();
  const double t0 = steady_seconds();
  std::vector<RequestOutput> outs = llm.generate(workload.prompts, params, false);
  const double t = steady_seconds() - t0;
  const EngineStats after = llm.stats();
  std::vector<RequestTiming> timings;
  timings.reserve(outs.size());
  for (const auto& o : outs) timings.push_back(timing_of(o));
  BenchRun run = measure_run(timings, t);
  add_engine_stats(run, before, after);
  return to_json(run);
}
}  // namespace

nlohmann::json run_offline(const EngineConfig& config, const Workload& workload, const BenchOptions& opts) {
  LLM llm(config);
  std::vector<SamplingParams> params(workload.max_tokens.size());
  for (size_t i = 0; i < params.size(); ++i) {
    params[i].temperature = opts.temperature;
    params[i].top_p = opts.top_p;
    params[i].top_k = opts.top_k;
    params[i].min_p = opts.min_p;
    params[i].repetition_penalty = opts.repetition_penalty;
    if (opts.logprobs >= 0) params[i].logprobs = opts.logprobs;
    params[i].max_tokens = workload.max_tokens[i];
    params[i].ignore_eos = true;  // every request runs to max_tokens, as in bench.py
  }
  warm_up(llm);
  if (opts.profile) llm.start_profile();
  std::vector<nlohmann::json> runs;
  for (int i = 0; i < opts.repeat; ++i) {
    runs.push_back(timed_run(llm, workload, params));
    if (opts.repeat > 1)
      std::fprintf(stderr, "run %d/%d: %s\n", i + 1, opts.repeat,
                   bench_py_line(runs.back()["output_tokens"].get<int64_t>(), runs.back()["time_s"].get<double>()).c_str());
  }
  if (opts.profile) llm.stop_profile();
  nlohmann::json result = runs.size() == 1 ? runs[0] : combine_runs(runs);
  if (runs.size() > 1) result["runs"] = runs;
  const EngineStats stats = llm.stats();
  result["device"] = stats.device;
  result["config"] = config_json(llm.config());
  result["workload"] = workload_json(opts);
  return result;
}

}  // namespace nanovllm::cli
