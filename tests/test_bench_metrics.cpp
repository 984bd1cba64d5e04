// Benchmark metrics on hand-made request timelines: TTFT, TPOT, e2e, throughput, engine rates,
// several runs combined, and bench.py's line as CPython's f-string formats it.
#include <gtest/gtest.h>

#include "cli/bench/bench_metrics.h"

namespace nanovllm {
namespace {

// Three requests: TTFTs 100/200/300 ms, e2e 1100/600/300 ms; C's single token has no TPOT.
std::vector<RequestTiming> three_requests() {
  return {{0.0, 0.1, 1.1, 7, 11}, {0.0, 0.2, 0.6, 3, 5}, {0.5, 0.8, 0.8, 4, 1}};
}

TEST(BenchMetrics, LatenciesFromTimestamps) {
  BenchRun r = measure_run(three_requests(), 2.0);
  EXPECT_EQ(r.num_seqs, 3);
  EXPECT_EQ(r.prompt_tokens, 14);
  EXPECT_EQ(r.output_tokens, 17);
  EXPECT_DOUBLE_EQ(r.throughput_tok_s, 8.5);
  EXPECT_NEAR(r.ttft_ms.mean, 200, 1e-9);
  EXPECT_NEAR(r.ttft_ms.p50, 200, 1e-9);
  EXPECT_NEAR(r.ttft_ms.p99, 298, 1e-9);  // rank 1.98 between 200 and 300
  EXPECT_NEAR(r.e2e_ms.p50, 600, 1e-9);
  EXPECT_NEAR(r.e2e_ms.max, 1100, 1e-9);
  // A: (1.1 - 0.1) s over 10 tokens; B: 0.4 s over 4 tokens: both 100 ms.
  EXPECT_EQ(r.tpot_ms.count, 2);
  EXPECT_NEAR(r.tpot_ms.mean, 100, 1e-9);
  EXPECT_NEAR(r.tpot_ms.p95, 100, 1e-9);
  EXPECT_FALSE(r.prefill_tok_s.has_value());
}

TEST(BenchMetrics, RejectsBadRuns) {
  EXPECT_THROW(measure_run({}, 1.0), std::invalid_argument);
  EXPECT_THROW(measure_run(three_requests(), 0.0), std::invalid_argument);
  EXPECT_THROW(measure_run({{1.0, 0.5, 2.0, 1, 2}}, 1.0), std::invalid_argument);  // first token before arrival
  EXPECT_THROW(measure_run({{0.0, 0.5, 2.0, 1, 0}}, 1.0), std::invalid_argument);  // no tokens
}

TEST(BenchMetrics, EngineRatesAreDeltasOverTheRun) {
  EngineStats before, after;
  before.prefill_tokens = 100, before.prefill_seconds = 1.0;  // the warm-up
  before.decode_tokens = 50, before.decode_seconds = 1.0;
  before.prefix_cache_queries = 10, before.prefix_cache_hits = 10;
  after = before;
  after.prefill_tokens += 1000, after.prefill_seconds += 0.5;
  after.decode_tokens += 300, after.decode_seconds += 3.0;
  after.prefix_cache_queries += 400, after.prefix_cache_hits += 100;
  after.num_kvcache_blocks = 64, after.peak_device_bytes = 1 << 20, after.num_preemptions = 2;
  BenchRun r = measure_run(three_requests(), 2.0);
  add_engine_stats(r, before, after);
  EXPECT_DOUBLE_EQ(*r.prefill_tok_s, 2000);
  EXPECT_DOUBLE_EQ(*r.decode_tok_s, 100);
  EXPECT_DOUBLE_EQ(*r.prefix_cache_hit_rate, 0.25);
  EXPECT_EQ(*r.kvcache_blocks, 64);
  EXPECT_EQ(*r.peak_memory_bytes, 1 << 20);
  EXPECT_EQ(*r.num_preemptions, 2);
  nlohmann::json j = to_json(r);
  for (const char* k : {"num_seqs", "prompt_tokens", "output_tokens", "time_s", "throughput_tok_s", "ttft_ms", "tpot_ms",
                        "e2e_ms", "prefill_tok_s", "decode_tok_s", "peak_memory_bytes", "kvcache_blocks",
                        "prefix_cache_hit_rate"})
    EXPECT_TRUE(j.contains(k)) << k;
  EXPECT_DOUBLE_EQ(j["ttft_ms"]["p50"].get<double>(), r.ttft_ms.p50);
}

TEST(BenchMetrics, CombineRunsTakesMediansAndSpread) {
  std::vector<nlohmann::json> runs;
  for (double t : {2.0, 1.0, 4.0}) runs.push_back(to_json(measure_run(three_requests(), t)));
  nlohmann::json c = combine_runs(runs);
  EXPECT_DOUBLE_EQ(c["time_s"].get<double>(), 2.0);
  EXPECT_DOUBLE_EQ(c["throughput_tok_s"].get<double>(), 8.5);  // median of 17/1, 17/2, 17/4
  EXPECT_EQ(c["output_tokens"].get<int64_t>(), 17);
  EXPECT_TRUE(c["output_tokens"].is_number_integer());
  EXPECT_EQ(c["repeat"]["n"].get<int>(), 3);
  const auto& s = c["repeat"]["spread"]["throughput_tok_s"];
  EXPECT_DOUBLE_EQ(s["min"].get<double>(), 4.25);
  EXPECT_DOUBLE_EQ(s["max"].get<double>(), 17);
  EXPECT_NEAR(s["stdev"].get<double>(), 6.491982234520774, 1e-12);  // statistics.stdev([17, 8.5, 4.25])
  EXPECT_TRUE(c["repeat"]["spread"].contains("tpot_ms.p99"));
}

TEST(BenchMetrics, BenchPyLineMatchesPythonFormatting) {
  // Reference strings printed by CPython 3.11 with bench.py's f-string.
  EXPECT_EQ(bench_py_line(133966, 9.2267), "Total: 133966tok, Time: 9.23s, Throughput: 14519.38tok/s");
  EXPECT_EQ(bench_py_line(7, 0.125), "Total: 7tok, Time: 0.12s, Throughput: 56.00tok/s");  // half to even
}

TEST(BenchMetrics, ReportHasTheTable) {
  BenchRun r = measure_run(three_requests(), 2.0);
  add_engine_stats(r, EngineStats{}, EngineStats{});
  std::string text = format_report(to_json(r));
  EXPECT_EQ(text.rfind("Total: 17tok, Time: 2.00s, Throughput: 8.50tok/s\n", 0), 0u);
  for (const char* s : {"TTFT (ms)", "TPOT (ms)", "E2E (ms)", "p99", "Prefill:", "Peak memory:"})
    EXPECT_NE(text.find(s), std::string::npos) << s;
}

}  // namespace
}  // namespace nanovllm
