// Benchmark metrics: per-request latencies, engine rates, several runs combined, the report text.
#include "cli/bench/bench_metrics.h"

#include <algorithm>

#include <cmath>
#include <cstdio>
#include <map>
#include <sstream>
#include <stdexcept>

namespace nanovllm {

namespace {
// The metrics whose spread `--repeat` reports, as JSON pointers into a run's object.
const char* const kSpreadKeys[] = {
    "/time_s",       "/throughput_tok_s", "/prefill_tok_s", "/decode_tok_s",
    "/ttft_ms/mean", "/ttft_ms/p50",      "/ttft_ms/p95",   "/ttft_ms/p99",
    "/tpot_ms/mean", "/tpot_ms/p50",      "/tpot_ms/p95",   "/tpot_ms/p99",
    "/e2e_ms/mean",  "/e2e_ms/p50",       "/e2e_ms/p95",    "/e2e_ms/p99",
};

nlohmann::json summary_json(const Summary& s) {
  return {{"mean", s.mean}, {"p50", s.p50}, {"p95", s.p95}, {"p99", s.p99},
          {"min", s.min},   {"max", s.max}, {"count", s.count}};
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}
}  // namespace

RequestTiming timing_of(const RequestOutput& out) {
  // A request of n samples: its first token is the earliest sample's, its end the latest's.
  RequestTiming t{out.arrival_time, 0, 0, int64_t(out.prompt_token_ids.size()), 0};
  for (const CompletionOutput& c : out.outputs) {
    t.first_token = t.first_token == 0 ? c.first_token_time : std::min(t.first_token, c.first_token_time);
    t.finish = std::max(t.finish, c.finish_time);
    t.num_output_tokens += int64_t(c.token_ids.size());
  }
  return t;
}

BenchRun measure_run(const std::vector<RequestTiming>& requests, double time_s) {
  if (requests.empty()) throw std::invalid_argument("benchmark run has no requests");
  if (!(time_s > 0)) throw std::invalid_argument("benchmark run time must be > 0 s, got " + std::to_string(time_s));
  BenchRun r;
  r.num_seqs = int(requests.size());
  r.time_s = time_s;
  std::vector<double> ttft, tpot, e2e;
  for (size_t i = 0; i < requests.size(); ++i) {
    const auto& q = requests[i];
    if (q.num_output_tokens < 1) throw std::invalid_argument("request " + std::to_string(i) + " produced no tokens");
    if (!(q.arrival <= q.first_token && q.first_token <= q.finish))
      throw std::invalid_argument("request " + std::to_string(i) + ": timestamps out of order (arrival " +
                                  std::to_string(q.arrival) + ", first token " + std::to_string(q.first_token) +
                                  ", finish " + std::to_string(q.finish) + ")");
    r.prompt_tokens += q.num_prompt_tokens;
    r.output_tokens += q.num_output_tokens;
    ttft.push_back((q.first_token - q.arrival) * 1e3);
    e2e.push_back((q.finish - q.arrival) * 1e3);
    // The first token's time is TTFT's; TPOT is the pace of the rest.
    if (q.num_output_tokens > 1) tpot.push_back((q.finish - q.first_token) * 1e3 / double(q.num_output_tokens - 1));
  }
  r.throughput_tok_s = double(r.output_tokens) / time_s;
  r.ttft_ms = summarize(ttft);
  r.e2e_ms = summarize(e2e);
  if (!tpot.empty()) r.tpot_ms = summarize(tpot);
  return r;
}

void add_engine_stats(BenchRun& run, const EngineStats& before, const EngineStats& after) {
  auto rate = [](int64_t tokens, double seconds) { return seconds > 0 ? double(tokens) / seconds : 0.0; };
  run.prefill_tok_s = rate(after.prefill_tokens - before.prefill_tokens, after.prefill_seconds - before.prefill_seconds);
  run.decode_tok_s = rate(after.decode_tokens - before.decode_tokens, after.decode_seconds - before.decode_seconds);
  const int64_t queries = after.prefix_cache_queries - before.prefix_cache_queries;
  run.prefix_cache_hit_rate =
      queries > 0 ? double(after.prefix_cache_hits - before.prefix_cache_hits) / double(queries) : 0.0;
  run.peak_memory_bytes = after.peak_device_bytes;
  run.kvcache_blocks = after.num_kvcache_blocks;
  run.num_preemptions = after.num_preemptions - before.num_preemptions;
  run.num_steps = after.num_steps - before.num_steps;
  run.host_gap_s = after.host_gap_seconds - before.host_gap_seconds;
}

nlohmann::json to_json(const BenchRun& r) {
  nlohmann::json j = {{"num_seqs", r.num_seqs},
                      {"prompt_tokens", r.prompt_tokens},
                      {"output_tokens", r.output_tokens},
                      {"time_s", r.time_s},
                      {"throughput_tok_s", r.throughput_tok_s},
                      {"ttft_ms", summary_json(r.ttft_ms)},
                      {"tpot_ms", summary_json(r.tpot_ms)},
                      {"e2e_ms", summary_json(r.e2e_ms)}};
  auto put = [&](const char* key, const auto& v) { j[key] = v ? nlohmann::json(*v) : nlohmann::json(nullptr); };
  put("prefill_tok_s", r.prefill_tok_s);
  put("decode_tok_s", r.decode_tok_s);
  put("peak_memory_bytes", r.peak_memory_bytes);
  put("kvcache_blocks", r.kvcache_blocks);
  put("prefix_cache_hit_rate", r.prefix_cache_hit_rate);
  put("num_preemptions", r.num_preemptions);
  put("num_steps", r.num_steps);
  put("host_gap_s", r.host_gap_s);
  return j;
}

nlohmann::json combine_runs(const std::vector<nlohmann::json>& runs) {
  if (runs.empty()) throw std::invalid_argument("combine_runs: no runs");
  // Every number becomes its median over the runs; everything else is the first run's.
  nlohmann::json flat = runs[0].flatten();
  std::map<std::string, std::vector<double>> values;
  for (const auto& run : runs) {
    const nlohmann::json run_flat = run.flatten();  // items() only borrows: keep the object alive
    for (const auto& [ptr, v] : run_flat.items())
      if (v.is_number()) values[ptr].push_back(v.get<double>());
  }
  for (auto& [ptr, v] : values) {
    if (v.size() != runs.size()) continue;  // present in some runs only: keep the first run's
    const bool integral = flat[ptr].is_number_integer();
    const double med = percentile(v, 50);
    flat[ptr] = integral && med == std::floor(med) ? nlohmann::json(int64_t(med)) : nlohmann::json(med);
  }
  nlohmann::json out = flat.unflatten();
  nlohmann::json spread = nlohmann::json::object();
  for (const char* key : kSpreadKeys) {
    auto it = values.find(key);
    if (it == values.end() || it->second.size() != runs.size()) continue;
    Summary s = summarize(it->second);
    std::string name = std::string(key + 1);
    for (auto& c : name)
      if (c == '/') c = '.';
    spread[name] = {{"median", s.p50}, {"min", s.min}, {"max", s.max}, {"stdev", s.stdev}};
  }
  out["repeat"] = {{"n", runs.size()}, {"spread", spread}};
  return out;
}

std::string bench_py_line(int64_t output_tokens, double time_s) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "Total: %lldtok, Time: %.2fs, Throughput: %.2ftok/s", (long long)output_tokens, time_s,
                double(output_tokens) / time_s);
  return buf;
}

std::string format_report(const nlohmann::json& j) {
  std::ostringstream o;
  o << bench_py_line(j.at("output_tokens").get<int64_t>(), j.at("time_s").get<double>()) << '\n';
  if (j.contains("repeat")) {
    // The line above recomputes throughput from the median time; give the median throughput too.
    o << "Median of " << j["repeat"]["n"].get<int>() << " runs: " << fmt("%.2f", j.at("throughput_tok_s").get<double>())
      << "tok/s";
    if (j["repeat"]["spread"].contains("throughput_tok_s")) {
      const auto& s = j["repeat"]["spread"]["throughput_tok_s"];
      o << " (min " << fmt("%.2f", s["min"].get<double>()) << ", max " << fmt("%.2f", s["max"].get<double>())
        << ", stdev " << fmt("%.2f", s["stdev"].get<double>()) << ")";
    }
    o << '\n';
  }
  o << "Requests: " << j.at("num_seqs").get<int>() << ", prompt tokens: " << j.at("prompt_tokens").get<int64_t>()
    << ", output tokens: " << j.at("output_tokens").get<int64_t>() << '\n';
  if (j.value("prefill_tok_s", nlohmann::json()).is_number())
    o << "Prefill: " << fmt("%.2f", j["prefill_tok_s"].get<double>()) << "tok/s, Decode: "
      << fmt("%.2f", j["decode_tok_s"].get<double>()) << "tok/s\n";
  char line[160];
  std::snprintf(line, sizeof line, "%-11s %10s %10s %10s %10s\n", "", "mean", "p50", "p95", "p99");
  o << line;
  for (auto [key, name] : {std::pair{"ttft_ms", "TTFT (ms)"}, {"tpot_ms", "TPOT (ms)"}, {"e2e_ms", "E2E (ms)"}}) {
    const auto& s = j.at(key);
    std::snprintf(line, sizeof line, "%-11s %10.2f %10.2f %10.2f %10.2f\n", name, s.at("mean").get<double>(),
                  s.at("p50").get<double>(), s.at("p95").get<double>(), s.at("p99").get<double>());
    o << line;
  }
  // Engine-side facts, each where known (online, the server exposes only some).
  auto known = [&](const char* key) { return j.contains(key) && j[key].is_number(); };
  std::string facts;
  auto add = [&](const std::string& text) { facts += (facts.empty() ? "" : ", ") + text; };
  if (known("peak_memory_bytes")) add("Peak memory: " + fmt("%.2f", j["peak_memory_bytes"].get<double>() / (1 << 30)) + " GiB");
  if (known("kvcache_blocks")) {
    std::string kv = "KV cache: " + std::to_string(j["kvcache_blocks"].get<int64_t>()) + " blocks";
    if (j.contains("config") && j["config"].contains("kvcache_block_size"))
      kv += " x " + std::to_string(j["config"]["kvcache_block_size"].get<int>()) + " tokens";
    add(kv);
  }
  if (known("prefix_cache_hit_rate")) add("prefix-cache hit rate: " + fmt("%.2f", 100 * j["prefix_cache_hit_rate"].get<double>()) + "%");
  if (known("num_preemptions")) add("preemptions: " + std::to_string(j["num_preemptions"].get<int64_t>()));
  if (!facts.empty()) o << facts << '\n';
  if (known("host_gap_s") && known("num_steps") && j["num_steps"].get<int64_t>() > 0)
    o << "Steps: " << j["num_steps"].get<int64_t>() << ", host gaps between steps (device idle): "
      << fmt("%.3f", j["host_gap_s"].get<double>()) << " s ("
      << fmt("%.3f", 1e3 * j["host_gap_s"].get<double>() / double(j["num_steps"].get<int64_t>())) << " ms/step)\n";
  if (j.value("failed_requests", 0) > 0)
    o << "Failed requests: " << j["failed_requests"].get<int64_t>() << " (first: " << j.value("first_error", "") << ")\n";
  if (j.contains("device") && j["device"].is_string()) o << "Device: " << j["device"].get<std::string>() << '\n';
  return o.str();
}

}  // namespace nanovllm
