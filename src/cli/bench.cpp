// `nanovllm bench`: nano-vLLM bench.py's workload and report, plus --repeat, --sweep, --online.
#include <cstdio>
#include <iostream>
#include <memory>
#include <stdexcept>

#include "cli/bench.h"
#include "cli/commands.h"
#include "cli/engine_flags.h"
#include "cli/bench/bench_metrics.h"

namespace nanovllm::cli {

namespace {
void print_dry_run(const WorkloadSpec& spec, const Workload& w, bool json) {
  if (json) {
    nlohmann::json j = {{"num_seqs", w.prompts.size()},  {"prompt_tokens", w.prompt_tokens()},
                        {"output_tokens", w.output_tokens()}, {"seed", spec.seed},
                        {"min_input", spec.min_input},    {"max_input", spec.max_input},
                        {"min_output", spec.min_output},  {"max_output", spec.max_output},
                        {"max_token_id", spec.max_token_id}};
    std::cout << j.dump(2) << std::endl;
  } else {
    std::printf("Workload: %zu sequences, %lld prompt tokens, %lld output tokens (seed %llu)\n", w.prompts.size(),
                (long long)w.prompt_tokens(), (long long)w.output_tokens(), (unsigned long long)spec.seed);
  }
}

void run(EngineConfig config, BenchOptions opts) {
  opts.workload.seed = config.seed;  // one --seed: bench.py's random.seed(0) and the sampler's default
  if (opts.repeat < 1) throw std::invalid_argument("--repeat must be >= 1, got " + std::to_string(opts.repeat));
  if (opts.online && (opts.repeat > 1 || !opts.sweep.empty()))
    throw std::invalid_argument("--online runs once against a running server: --repeat and --sweep are offline only");
  if (opts.profile && (opts.online || !opts.sweep.empty()))
    throw std::invalid_argument("--profile profiles this process's offline run: not with --online or --sweep");
  const Workload workload = make_workload(opts.workload);
  if (opts.dry_run) return print_dry_run(opts.workload, workload, opts.json);

  nlohmann::json result;
  if (opts.online) {
    result = run_online(workload, opts, config.seed);
  } else {
    if (config.model.empty()) throw std::invalid_argument("--model is required (except with --dry-run or --online)");
    if (!opts.sweep.empty()) {
      result = run_sweep(config, workload, opts);
      if (opts.json) {
        std::cout << result.dump(2) << std::endl;
      } else {
        std::printf("%s", sweep_csv(result).c_str());
        std::printf("Wrote %s.csv and %s.svg\n", opts.out_prefix.c_str(), opts.out_prefix.c_str());
      }
      return;
    }
    result = run_offline(config, workload, opts);
  }
  if (opts.json) {
    std::cout << result.dump(2) << std::endl;
  } else {
    std::printf("%s", format_report(result).c_str());
  }
}
}  // namespace

void add_bench_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("bench", "throughput and latency on nano-vLLM bench.py's workload");
  auto config = std::make_shared<EngineConfig>();
  auto opts = std::make_shared<BenchOptions>();
  add_engine_flags(cmd, *config);
  cmd->get_option("--model")->required(false);  // not needed for --dry-run or --online
  auto& w = opts->workload;
  cmd->add_option("--num-seqs", w.num_seqs, "requests in the workload")->check(kPositive);
  cmd->add_option("--min-input", w.min_input, "shortest prompt (tokens)")->check(kPositive);
  cmd->add_option("--max-input", w.max_input, "longest prompt (tokens)")->check(kPositive);
  cmd->add_option("--min-output", w.min_output, "fewest output tokens")->check(kPositive);
  cmd->add_option("--max-output", w.max_output, "most output tokens")->check(kPositive);
  cmd->add_option("--max-token-id", w.max_token_id, "prompt ids are drawn from [0, this] (bench.py: 10000)")
      ->check(kNonNegative);
  cmd->add_option("--temperature", opts->temperature, "sampling temperature")->check(kNonNegative);
  cmd->add_option("--top-p", opts->top_p, "top_p of every request (1: off)")->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--top-k", opts->top_k, "top_k of every request (0 or -1: off)")->check(CLI::Range(-1, 1 << 30));
  cmd->add_option("--min-p", opts->min_p, "min_p of every request (0: off)")->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--repetition-penalty", opts->repetition_penalty, "repetition_penalty of every request (1: off)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--logprobs", opts->logprobs, "logprobs of every request: the top N (-1: none)")
      ->check(CLI::Range(-1, 64));
  cmd->add_flag("--json", opts->json, "print one JSON object");
  cmd->add_flag("--dry-run", opts->dry_run, "print the workload's totals; load no model");
  cmd->add_option("--repeat", opts->repeat, "timed runs (after one warm-up); reports medians and spread")
      ->check(kPositive);
  cmd->add_flag("--profile", opts->profile,
                "open a profiler range around the timed runs only (ncu --profile-from-start off; "
                "nsys --capture-range=cudaProfilerApi)");
  cmd->add_option("--sweep", opts->sweep, "FIELD=V1,V2,...: a fresh engine per EngineConfig value");
  cmd->add_option("--out-prefix", opts->out_prefix, "sweep: write PREFIX.csv and PREFIX.svg");
  cmd->add_flag("--online", opts->online, "benchmark a running `nanovllm serve` over HTTP");
  cmd->add_option("--url", opts->url, "online: the server's base URL");
  cmd->add_option("--request-rate", opts->request_rate, "online: requests/s, Poisson arrivals (0: all at once)")
      ->check(kNonNegative);
  cmd->add_option("--max-concurrency", opts->max_concurrency, "online: requests in flight at most")
      ->check(kPositive);
  cmd->add_option("--served-model-name", opts->served_model, "online: the request's model (default: the server's)");
  cmd->callback([config, opts] { run(*config, *opts); });
}

}  // namespace nanovllm::cli
