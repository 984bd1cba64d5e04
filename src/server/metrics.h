// Metrics: the server's Prometheus counters, gauges and histograms, under vLLM's metric names so
// vLLM dashboards and scrapers work unchanged. Thread-safe: handlers and the engine loop record.
#pragma once
#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "nanovllm/output.h"

namespace nanovllm::server {

// A Prometheus histogram with fixed upper bounds (the +Inf bucket is implicit).
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double x);
  // Appends the _bucket/_sum/_count lines for `name` with `labels` ("k=\"v\"", may be empty).
  void render(std::string& out, const std::string& name, const std::string& labels) const;
  int64_t count() const { return count_; }

 private:
  std::vector<double> bounds_;
  std::vector<int64_t> counts_;  // per bucket, not cumulative; last is +Inf
  double sum_ = 0;
  int64_t count_ = 0;
};

class Metrics {
 public:
  explicit Metrics(std::string model_name);

  void on_prompt(int num_prompt_tokens);
  void on_first_token(double seconds_since_arrival);
  void on_inter_token(double seconds);
  void on_request_tpot(double seconds);  // a finished request's mean time per output token
  void on_generated(int num_tokens);
  // A request left the engine: finish_reason is "stop", "length" or "abort".
  void on_finished(const std::string& finish_reason, double e2e_seconds, int prompt_tokens, int generation_tokens);
  // One answered HTTP request. Lock-free: the I/O thread calls it for every response, /health's
  // too, and must never wait for a lock that a descheduled engine thread holds.
  void on_http(int status);
  // The engine loop's latest snapshot, and the sequences the server holds back (waiting for room
  // under --max-pending, or for their turn into the engine): they count as waiting.
  void set_engine(const EngineStats& stats, int server_waiting = 0);
  // A finished request's phases (vLLM's queue, prefill, decode and inference times).
  void on_request_phases(double queue_s, double prefill_s, double decode_s, double inference_s);
  void on_iteration_tokens(int num_tokens);  // tokens one engine step computed
  // vLLM's cache_config_info labels (block_size, cache_dtype, enable_prefix_caching, ...).
  void set_cache_config(std::vector<std::pair<std::string, std::string>> labels);
  // Appends more exposition text at the end of render() (the HTTP front end's own gauges).
  void set_extra(std::function<void(std::string&)> render_extra);

  std::string render() const;  // Prometheus text exposition format 0.0.4

 private:
  mutable std::mutex mu_;
  std::string labels_;
  EngineStats engine_;
  int server_waiting_ = 0;
  std::vector<std::pair<std::string, std::string>> cache_config_;
  std::function<void(std::string&)> extra_;
  int64_t prompt_tokens_ = 0, generation_tokens_ = 0;
  std::map<std::string, int64_t> finished_;  // by finish reason
  std::array<std::atomic<int64_t>, 600> http_{};  // by status (100-599; anything else counts as 500)
  Histogram ttft_, itl_, req_tpot_, e2e_, prompt_len_, gen_len_;
  Histogram queue_, prefill_, decode_, inference_, iteration_tokens_;
};

}  // namespace nanovllm::server
