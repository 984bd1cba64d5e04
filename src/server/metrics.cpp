// Metrics: recording and the Prometheus text rendering.
#include "server/metrics.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace nanovllm::server {
namespace {

// The shortest decimal that reads back as x, so bucket bounds print as 0.1, not 0.10000000000000001.
std::string fmt(double x) {
  char buf[64];
  for (int prec = 15; prec <= 17; ++prec) {
    std::snprintf(buf, sizeof buf, "%.*g", prec, x);
    if (std::strtod(buf, nullptr) == x) break;
  }
  return buf;
}

std::string with_label(const std::string& labels, const std::string& extra) {
  return labels.empty() ? extra : labels + "," + extra;
}

void header(std::string& out, const std::string& name, const char* type, const char* help) {
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

void sample(std::string& out, const std::string& name, const std::string& labels, double v) {
  out += name + "{" + labels + "} " + fmt(v) + "\n";
}

// vLLM's bucket bounds, with finer low buckets where a small model on a CPU lands.
const std::vector<double> kTtft = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
                                   2.5,   5.0,   7.5,  10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0};
const std::vector<double> kItl = {0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,
                                  0.3,   0.4,    0.5,   0.75,   1.0,  2.5,   5.0,  7.5,   10.0, 20.0, 40.0, 80.0};
const std::vector<double> kE2e = {0.01, 0.05, 0.1,  0.3,  0.5,  0.8,  1.0,  1.5,   2.0,   2.5,   5.0,   10.0, 15.0,
                                  20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};
const std::vector<double> kLen = {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000};
const std::vector<double> kIterTokens = {1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384};

// prometheus_client's process collector (which vLLM's /metrics includes), from /proc/self.
void render_process(std::string& o) {
  std::ifstream statf("/proc/self/stat");
  std::string stat((std::istreambuf_iterator<char>(statf)), std::istreambuf_iterator<char>());
  const auto close = stat.rfind(')');
  if (close == std::string::npos) return;
  std::istringstream in(stat.substr(close + 2));
  std::vector<std::string> f;  // fields from the 3rd (state) on
  for (std::string x; in >> x;) f.push_back(x);
  if (f.size() < 22) return;
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
  // stat(5): utime 14, stime 15, starttime 22, vsize 23, rss 24 (1-based, from pid).
  const double cpu = (std::stod(f[11]) + std::stod(f[12])) / ticks;
  double boot = 0;
  std::ifstream st("/proc/stat");
  for (std::string line; std::getline(st, line);)
    if (line.rfind("btime ", 0) == 0) boot = std::stod(line.substr(6));
  const double start = boot + std::stod(f[19]) / ticks;
  int fds = 0;
  if (DIR* d = opendir("/proc/self/fd")) {
    while (dirent* e = readdir(d))
      if (e->d_name[0] != '.') ++fds;
    closedir(d);
    --fds;  // the directory's own descriptor
  }
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  header(o, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
  o += "process_virtual_memory_bytes " + fmt(std::stod(f[20])) + "\n";
  header(o, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
  o += "process_resident_memory_bytes " + fmt(std::stod(f[21]) * page) + "\n";
  header(o, "process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.");
  o += "process_start_time_seconds " + fmt(start) + "\n";
  header(o, "process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.");
  o += "process_cpu_seconds_total " + fmt(cpu) + "\n";
  header(o, "process_open_fds", "gauge", "Number of open file descriptors.");
  o += "process_open_fds " + std::to_string(fds) + "\n";
  header(o, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
  o += "process_max_fds " + fmt(static_cast<double>(rl.rlim_cur)) + "\n";
}

}  // namespace

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double x) {
  size_t i = 0;
  while (i < bounds_.size() && x > bounds_[i]) ++i;
  ++counts_[i];
  sum_ += x;
  ++count_;
}

void Histogram::render(std::string& out, const std::string& name, const std::string& labels) const {
  int64_t cum = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cum += counts_[i];
    sample(out, name + "_bucket", with_label(labels, "le=\"" + fmt(bounds_[i]) + "\""), static_cast<double>(cum));
  }
  sample(out, name + "_bucket", with_label(labels, "le=\"+Inf\""), static_cast<double>(count_));
  sample(out, name + "_sum", labels, sum_);
  sample(out, name + "_count", labels, static_cast<double>(count_));
}

Metrics::Metrics(std::string model_name)
    : ttft_(kTtft), itl_(kItl), req_tpot_(kItl), e2e_(kE2e), prompt_len_(kLen), gen_len_(kLen), queue_(kE2e),
      prefill_(kE2e), decode_(kE2e), inference_(kE2e), iteration_tokens_(kIterTokens) {
  // Label values escape backslash, quote and newline (Prometheus text format).
  std::string esc;
  for (char c : model_name) {
    if (c == '\\' || c == '"') esc += '\\', esc += c;
    else if (c == '\n') esc += "\\n";
    else esc += c;
  }
  labels_ = "model_name=\"" + esc + "\"";
}

void Metrics::on_prompt(int n) {
  std::lock_guard lk(mu_);
  prompt_tokens_ += n;
}
void Metrics::on_first_token(double s) {
  std::lock_guard lk(mu_);
  ttft_.observe(s);
}
void Metrics::on_inter_token(double s) {
  std::lock_guard lk(mu_);
  itl_.observe(s);
}
void Metrics::on_request_tpot(double s) {
  std::lock_guard lk(mu_);
  req_tpot_.observe(s);
}
void Metrics::on_generated(int n) {
  std::lock_guard lk(mu_);
  generation_tokens_ += n;
}
void Metrics::on_finished(const std::string& reason, double e2e, int prompt_tokens, int generation_tokens) {
  std::lock_guard lk(mu_);
  ++finished_[reason];
  if (reason != "abort") {
    e2e_.observe(e2e);
    prompt_len_.observe(prompt_tokens);
    gen_len_.observe(generation_tokens);
  }
}
void Metrics::on_http(int status) {
  http_[status >= 100 && status < 600 ? status : 500].fetch_add(1, std::memory_order_relaxed);
}
void Metrics::set_engine(const EngineStats& s, int server_waiting) {
  std::lock_guard lk(mu_);
  engine_ = s;
  server_waiting_ = server_waiting;
}
void Metrics::on_request_phases(double queue_s, double prefill_s, double decode_s, double inference_s) {
  std::lock_guard lk(mu_);
  queue_.observe(queue_s);
  prefill_.observe(prefill_s);
  decode_.observe(decode_s);
  inference_.observe(inference_s);
}
void Metrics::on_iteration_tokens(int n) {
  std::lock_guard lk(mu_);
  iteration_tokens_.observe(n);
}
void Metrics::set_cache_config(std::vector<std::pair<std::string, std::string>> labels) {
  std::lock_guard lk(mu_);
  cache_config_ = std::move(labels);
}
void Metrics::set_extra(std::function<void(std::string&)> render_extra) {
  std::lock_guard lk(mu_);
  extra_ = std::move(render_extra);
}

std::string Metrics::render() const {
  std::lock_guard lk(mu_);
  std::string o;
  o.reserve(16384);
  const std::string& L = labels_;
  auto metric = [&](const char* name, const char* type, const char* help, double value) {
    header(o, name, type, help);
    sample(o, name, L, value);
  };
  auto histogram = [&](const char* name, const char* help, const Histogram& h) {
    header(o, name, "histogram", help);
    h.render(o, name, L);
  };
  metric("vllm:num_requests_running", "gauge", "Number of requests in model execution batches.", engine_.num_running);
  metric("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.",
         engine_.num_waiting + server_waiting_);
  double usage = engine_.num_kvcache_blocks > 0
                     ? 1.0 - static_cast<double>(engine_.num_free_blocks) / engine_.num_kvcache_blocks
                     : 0.0;
  metric("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.", usage);
  metric("vllm:gpu_cache_usage_perc", "gauge", "KV-cache usage (vLLM v0 name). 1 means 100 percent usage.", usage);
  metric("nanovllm:num_kvcache_blocks", "gauge", "KV-cache blocks in total.", engine_.num_kvcache_blocks);
  metric("nanovllm:num_free_kvcache_blocks", "gauge", "KV-cache blocks free.", engine_.num_free_blocks);
  metric("vllm:num_preemptions_total", "counter", "Cumulative number of preemptions from the engine.",
         static_cast<double>(engine_.num_preemptions));
  metric("vllm:prefix_cache_queries_total", "counter", "Prefix cache queries, in tokens.",
         static_cast<double>(engine_.prefix_cache_queries));
  metric("vllm:prefix_cache_hits_total", "counter", "Prefix cache hits, in tokens.",
         static_cast<double>(engine_.prefix_cache_hits));
  metric("vllm:prompt_tokens_total", "counter", "Number of prefill tokens processed.",
         static_cast<double>(prompt_tokens_));
  metric("vllm:generation_tokens_total", "counter", "Number of generation tokens processed.",
         static_cast<double>(generation_tokens_));
  header(o, "vllm:request_success_total", "counter", "Count of successfully processed requests.");
  for (const char* reason : {"stop", "length", "abort"}) {
    auto it = finished_.find(reason);
    sample(o, "vllm:request_success_total", with_label(L, std::string("finished_reason=\"") + reason + "\""),
           it == finished_.end() ? 0.0 : static_cast<double>(it->second));
  }
  histogram("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", ttft_);
  histogram("vllm:time_per_output_token_seconds", "Histogram of time per output token in seconds.", itl_);
  // vLLM's newer names: the same inter-token histogram, and TPOT per finished request.
  histogram("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", itl_);
  histogram("vllm:request_time_per_output_token_seconds", "Histogram of time_per_output_token_seconds per request.",
         req_tpot_);
  histogram("vllm:e2e_request_latency_seconds", "Histogram of end to end request latency in seconds.", e2e_);
  histogram("vllm:request_prompt_tokens", "Number of prefill tokens processed.", prompt_len_);
  histogram("vllm:request_generation_tokens", "Number of generation tokens processed.", gen_len_);
  histogram("vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.", queue_);
  histogram("vllm:request_prefill_time_seconds", "Histogram of time spent in PREFILL phase for request.", prefill_);
  histogram("vllm:request_decode_time_seconds", "Histogram of time spent in DECODE phase for request.", decode_);
  histogram("vllm:request_inference_time_seconds", "Histogram of time spent in RUNNING phase for request.", inference_);
  histogram("vllm:iteration_tokens_total", "Histogram of number of tokens per engine_step.", iteration_tokens_);
  if (!cache_config_.empty()) {
    std::string labels;
    for (const auto& [k, v] : cache_config_) labels += (labels.empty() ? "" : ",") + k + "=\"" + v + "\"";
    header(o, "vllm:cache_config_info", "gauge", "Information of the LLMEngine CacheConfig");
    sample(o, "vllm:cache_config_info", labels, 1.0);
  }
  header(o, "nanovllm:http_responses_total", "counter", "HTTP responses by status code.");
  for (int status = 100; status < 600; ++status)
    if (const int64_t n = http_[status].load(std::memory_order_relaxed); n > 0)
      sample(o, "nanovllm:http_responses_total", with_label(L, "status=\"" + std::to_string(status) + "\""),
             static_cast<double>(n));
  render_process(o);
  if (extra_) extra_(o);
  return o;
}

}  // namespace nanovllm::server
