// `bench --online`: the workload sent to a running `nanovllm serve` (/v1/completions, token-id
// prompts, streamed), with seeded Poisson arrivals; latencies are measured at the client.
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "cli/bench.h"
#include "cli/bench/bench_metrics.h"
#include "cli/bench/py_random.h"

namespace nanovllm::cli {

namespace {
using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

struct Outcome {
  RequestTiming timing;
  std::string error;  // empty on success
};

// Reads `data: ...` events out of the byte stream as they arrive; calls on_event per payload.
class SseReader {
 public:
  template <class F>
  void feed(const char* data, size_t n, F&& on_event) {
    buf_.append(data, n);
    for (size_t end; (end = buf_.find("\n\n")) != std::string::npos;) {
      std::string event = buf_.substr(0, end);
      buf_.erase(0, end + 2);
      for (size_t pos = 0; pos < event.size();) {
        size_t eol = event.find('\n', pos);
        if (eol == std::string::npos) eol = event.size();
        std::string line = event.substr(pos, eol - pos);
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.rfind("data:", 0) == 0) on_event(line.substr(line[5] == ' ' ? 6 : 5));
        pos = eol + 1;
      }
    }
  }

 private:
  std::string buf_;
};

Outcome send_one(httplib::Client& client, const nlohmann::json& body, Clock::time_point t0) {
  Outcome out;
  out.timing.arrival = seconds_since(t0);
  out.timing.num_prompt_tokens = int64_t(body["prompt"].size());
  bool seen_token = false, done = false;
  int64_t chunks = 0, usage_tokens = -1;
  SseReader reader;
  std::string raw;  // kept for the error message when the server answers without streaming
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.headers = {{"Content-Type", "application/json"}, {"Accept", "text/event-stream"}};
  req.body = body.dump();
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    const double now = seconds_since(t0);
    if (raw.size() < 2048) raw.append(data, std::min(n, 2048 - raw.size()));
    reader.feed(data, n, [&](const std::string& payload) {
      if (payload == "[DONE]") {
        done = true;
        out.timing.finish = now;
        return;
      }
      nlohmann::json j = nlohmann::json::parse(payload, nullptr, false);
      if (j.is_discarded()) return;
      if (j.contains("error")) out.error = j["error"].dump();
      if (j.contains("usage") && j["usage"].is_object()) usage_tokens = j["usage"].value("completion_tokens", int64_t(-1));
      if (j.contains("choices") && j["choices"].is_array() && !j["choices"].empty()) {
        ++chunks;
        if (!seen_token) seen_token = true, out.timing.first_token = now;
        out.timing.finish = now;
      }
    });
    return true;
  };
  auto res = client.send(req);
  if (!res) {
    out.error = "HTTP request failed: " + httplib::to_string(res.error());
  } else if (res->status != 200) {
    out.error = "HTTP " + std::to_string(res->status) + ": " + raw;
  } else if (out.error.empty() && (!done || !seen_token)) {
    out.error = "stream ended without " + std::string(seen_token ? "[DONE]" : "any token") + ": " + raw.substr(0, 300);
  }
  // The server's own count when it gives one (a chunk may carry several tokens, or none).
  out.timing.num_output_tokens = usage_tokens >= 0 ? usage_tokens : chunks;
  return out;
}

// The server's Prometheus counters and gauges (GET /metrics), summed over label sets; empty
// when the server has no /metrics, so the engine-side fields stay null.
std::map<std::string, double> scrape_metrics(const std::string& url) {
  std::map<std::string, double> m;
  httplib::Client client(url);
  client.set_connection_timeout(10);
  auto res = client.Get("/metrics");
  if (!res || res->status != 200) return m;
  std::istringstream in(res->body);
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    const size_t name_end = line.find_first_of("{ ");
    const size_t value_at = line.find_last_of(' ');
    if (name_end == std::string::npos || value_at == std::string::npos) continue;
    char* end = nullptr;
    const double v = std::strtod(line.c_str() + value_at + 1, &end);
    if (end != line.c_str() + value_at + 1) m[line.substr(0, name_end)] += v;
  }
  return m;
}

// Engine-side fields from /metrics snapshots around the run: what the server exposes of them.
void add_server_stats(nlohmann::json& result, const std::map<std::string, double>& before,
                      const std::map<std::string, double>& after) {
  auto delta = [&](const char* name) -> std::optional<double> {
    auto a = after.find(name), b = before.find(name);
    if (a == after.end() || b == before.end()) return std::nullopt;
    return a->second - b->second;
  };
  auto queries = delta("vllm:prefix_cache_queries_total"), hits = delta("vllm:prefix_cache_hits_total");
  if (queries && hits) result["prefix_cache_hit_rate"] = *queries > 0 ? *hits / *queries : 0.0;
  if (auto p = delta("vllm:num_preemptions_total")) result["num_preemptions"] = int64_t(*p);
  if (auto it = after.find("nanovllm:num_kvcache_blocks"); it != after.end()) result["kvcache_blocks"] = int64_t(it->second);
}

std::string served_model(const std::string& url) {
  httplib::Client client(url);
  client.set_connection_timeout(10);
  auto res = client.Get("/v1/models");
  if (!res) throw std::runtime_error("--url " + url + ": cannot reach the server (" + httplib::to_string(res.error()) + ")");
  nlohmann::json j = nlohmann::json::parse(res->body, nullptr, false);
  if (res->status != 200 || j.is_discarded() || !j.contains("data") || j["data"].empty())
    throw std::runtime_error("--url " + url + ": GET /v1/models answered " + std::to_string(res->status) + " " +
                             res->body.substr(0, 200));
  return j["data"][0].value("id", "");
}
}  // namespace

nlohmann::json run_online(const Workload& workload, const BenchOptions& opts, uint64_t seed) {
  const std::string model = opts.served_model.empty() ? served_model(opts.url) : opts.served_model;
  const size_t n = workload.prompts.size();

  // vLLM's benchmark_serving: send a request, then wait an exponential interval (rate r: mean 1/r).
  std::vector<double> send_at(n, 0.0);
  PyRandom rng = PyRandom::from_unsigned(seed);
  if (opts.request_rate > 0)
    for (size_t i = 1; i < n; ++i) send_at[i] = send_at[i - 1] + rng.expovariate(opts.request_rate);

  std::vector<nlohmann::json> bodies(n);
  for (size_t i = 0; i < n; ++i) {
    bodies[i] = {{"model", model},
                 {"prompt", workload.prompts[i]},
                 {"max_tokens", workload.max_tokens[i]},
                 {"temperature", float_json(opts.temperature)},
                 {"ignore_eos", true},
                 {"stream", true},
                 {"stream_options", {{"include_usage", true}}}};
    if (opts.top_p < 1.0f) bodies[i]["top_p"] = float_json(opts.top_p);
    if (opts.top_k > 0) bodies[i]["top_k"] = opts.top_k;
    if (opts.min_p > 0.0f) bodies[i]["min_p"] = float_json(opts.min_p);
    if (opts.repetition_penalty != 1.0f) bodies[i]["repetition_penalty"] = float_json(opts.repetition_penalty);
    if (opts.logprobs >= 0) bodies[i]["logprobs"] = opts.logprobs;
  }

  const auto metrics_before = scrape_metrics(opts.url);
  std::vector<Outcome> outcomes(n);
  std::atomic<size_t> next{0};
  const auto t0 = Clock::now();
  auto worker = [&] {
    httplib::Client client(opts.url);
    client.set_connection_timeout(30);
    client.set_read_timeout(3600);  // a long request streams slowly under load
    client.set_write_timeout(60);
    for (size_t i; (i = next.fetch_add(1)) < n;) {
      std::this_thread::sleep_until(t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(send_at[i])));
      outcomes[i] = send_one(client, bodies[i], t0);
    }
  };
  const int threads = int(std::min<size_t>(size_t(opts.max_concurrency), n));
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) pool.emplace_back(worker);
  for (auto& t : pool) t.join();
  const double elapsed = seconds_since(t0);
  const auto metrics_after = scrape_metrics(opts.url);

  std::vector<RequestTiming> ok;
  std::string first_error;
  for (const auto& o : outcomes) {
    if (o.error.empty()) ok.push_back(o.timing);
    else if (first_error.empty()) first_error = o.error;
  }
  if (ok.empty()) throw std::runtime_error("--online: every request failed; the first: " + first_error);
  nlohmann::json result = to_json(measure_run(ok, elapsed));
  add_server_stats(result, metrics_before, metrics_after);
  result["failed_requests"] = n - ok.size();
  if (!first_error.empty()) result["first_error"] = first_error;
  result["device"] = "server " + opts.url;
  result["config"] = {{"url", opts.url},         {"model", model},
                      {"request_rate", opts.request_rate}, {"max_concurrency", opts.max_concurrency},
                      {"seed", seed}};
  result["workload"] = workload_json(opts);
  return result;
}

}  // namespace nanovllm::cli
