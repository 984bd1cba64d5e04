// The server's Prometheus rendering: vLLM's names, cumulative buckets, and counts worked out by hand.
#include <gtest/gtest.h>

#include "server/metrics.h"

namespace nanovllm::server {
namespace {

bool has_line(const std::string& text, const std::string& line) {
  return text.find("\n" + line + "\n") != std::string::npos || text.rfind(line + "\n", 0) == 0;
}

TEST(ServerMetrics, HistogramBucketsAreCumulative) {
  Histogram h({0.1, 1.0});
  h.observe(0.05);
  h.observe(0.1);  // on the bound: counted in le="0.1"
  h.observe(0.5);
  h.observe(7.0);
  std::string out;
  h.render(out, "x", "a=\"b\"");
  EXPECT_TRUE(has_line(out, "x_bucket{a=\"b\",le=\"0.1\"} 2")) << out;
  EXPECT_TRUE(has_line(out, "x_bucket{a=\"b\",le=\"1\"} 3")) << out;
  EXPECT_TRUE(has_line(out, "x_bucket{a=\"b\",le=\"+Inf\"} 4")) << out;
  EXPECT_TRUE(has_line(out, "x_sum{a=\"b\"} 7.6500000000000004") || has_line(out, "x_sum{a=\"b\"} 7.65")) << out;
  EXPECT_TRUE(has_line(out, "x_count{a=\"b\"} 4")) << out;
}

TEST(ServerMetrics, VllmNamesAndValues) {
  Metrics m("tiny \"model\"");
  EngineStats s;
  s.num_running = 3;
  s.num_waiting = 2;
  s.num_kvcache_blocks = 8;
  s.num_free_blocks = 6;
  m.set_engine(s);
  m.on_prompt(10);
  m.on_prompt(5);
  m.on_generated(4);
  m.on_first_token(0.02);
  m.on_inter_token(0.003);
  m.on_request_tpot(0.004);
  m.on_finished("stop", 0.2, 15, 4);
  m.on_finished("abort", 0.1, 3, 0);
  std::string t = m.render();
  const std::string L = "model_name=\"tiny \\\"model\\\"\"";
  EXPECT_TRUE(has_line(t, "vllm:num_requests_running{" + L + "} 3")) << t;
  EXPECT_TRUE(has_line(t, "vllm:num_requests_waiting{" + L + "} 2"));
  EXPECT_TRUE(has_line(t, "vllm:kv_cache_usage_perc{" + L + "} 0.25"));
  EXPECT_TRUE(has_line(t, "vllm:prompt_tokens_total{" + L + "} 15"));
  EXPECT_TRUE(has_line(t, "vllm:generation_tokens_total{" + L + "} 4"));
  EXPECT_TRUE(has_line(t, "vllm:request_success_total{" + L + ",finished_reason=\"stop\"} 1"));
  EXPECT_TRUE(has_line(t, "vllm:request_success_total{" + L + ",finished_reason=\"abort\"} 1"));
  EXPECT_TRUE(has_line(t, "vllm:time_to_first_token_seconds_count{" + L + "} 1"));
  EXPECT_TRUE(has_line(t, "vllm:time_per_output_token_seconds_count{" + L + "} 1"));
  EXPECT_TRUE(has_line(t, "vllm:inter_token_latency_seconds_sum{" + L + "} 0.003"));
  EXPECT_TRUE(has_line(t, "vllm:request_time_per_output_token_seconds_bucket{" + L + ",le=\"0.005\"} 1"));
  EXPECT_TRUE(has_line(t, "vllm:request_time_per_output_token_seconds_bucket{" + L + ",le=\"0.0025\"} 0"));
  // Aborted requests do not count toward the latency histogram.
  EXPECT_TRUE(has_line(t, "vllm:e2e_request_latency_seconds_count{" + L + "} 1"));
  EXPECT_NE(t.find("# TYPE vllm:e2e_request_latency_seconds histogram"), std::string::npos);
}

}  // namespace
}  // namespace nanovllm::server
