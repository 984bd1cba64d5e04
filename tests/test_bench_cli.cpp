// `nanovllm bench` through the real executable: the dry-run totals of nano-vLLM's workload, and
// CPU runs of a tiny random model (single run, --repeat, --sweep, --online against `serve`)
// whose JSON must be complete and self-consistent.
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <string>
#include <thread>

#include "cli/bench/workload.h"

extern char** environ;

namespace nanovllm {
namespace {
namespace fs = std::filesystem;

// Per-process scratch paths: ctest may run this file's tests as parallel processes.
// Each is removed when the process exits.
std::string scratch(const std::string& name) {
  struct Cleanup {
    std::vector<std::string> paths;
    ~Cleanup() {
      std::error_code ec;
      for (const auto& p : paths) fs::remove_all(p, ec);
    }
  };
  static Cleanup cleanup;
  std::string path = ::testing::TempDir() + "nanovllm_bench_" + std::to_string(getpid()) + "_" + name;
  cleanup.paths.push_back(path);
  return path;
}

struct CliResult {
  int rc;
  std::string out, err;
};

CliResult run_cli(const std::string& args) {
  const std::string err_path = scratch("stderr.txt");
  const std::string cmd = std::string(NANOVLLM_BINARY) + " " + args + " 2>" + err_path;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) throw std::runtime_error("popen failed: " + cmd);
  std::string out;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  int status = pclose(p);
  std::ifstream e(err_path);
  std::stringstream ss;
  ss << e.rdbuf();
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out, ss.str()};
}

// One tiny random Qwen3 checkpoint shared by the tests of this file.
const std::string& tiny_model() {
  static const std::string dir = [] {
    std::string d = scratch("tiny_model");
    fs::remove_all(d);
    // The real tokenizer, when scripts/setup.sh fetched it: `serve` needs one; `bench` does not.
    const std::string tok = std::string(NANOVLLM_SOURCE_DIR) + "/models/qwen3-tokenizer";
    const std::string tok_flag = fs::exists(tok + "/tokenizer.json") ? " --tokenizer " + tok : "";
    CliResult r = run_cli("make-model --preset tiny --out " + d + tok_flag);
    if (r.rc != 0) throw std::runtime_error("make-model failed: " + r.err);
    return d;
  }();
  return dir;
}

// A small workload: 4 requests, prompts of 8..40 tokens, 3..12 output tokens.
const char* kSmall = "--num-seqs 4 --min-input 8 --max-input 40 --min-output 3 --max-output 12 --num-kvcache-blocks 32";
WorkloadSpec small_spec() {
  return WorkloadSpec{.num_seqs = 4, .min_input = 8, .max_input = 40, .min_output = 3, .max_output = 12};
}

void expect_summary_ordered(const nlohmann::json& s, const std::string& name) {
  for (const char* k : {"mean", "p50", "p95", "p99"}) ASSERT_TRUE(s.contains(k) && s[k].is_number()) << name << "." << k;
  EXPECT_LE(s["p50"].get<double>(), s["p95"].get<double>()) << name;
  EXPECT_LE(s["p95"].get<double>(), s["p99"].get<double>()) << name;
  EXPECT_GE(s["p50"].get<double>(), 0) << name;
}

// Checks a run's JSON for completeness and internal consistency against the workload it ran.
void expect_consistent_run(const nlohmann::json& j, const Workload& w) {
  for (const char* k : {"num_seqs", "prompt_tokens", "output_tokens", "time_s", "throughput_tok_s", "ttft_ms", "tpot_ms",
                        "e2e_ms", "prefill_tok_s", "decode_tok_s", "peak_memory_bytes", "kvcache_blocks",
                        "prefix_cache_hit_rate", "device", "config"})
    ASSERT_TRUE(j.contains(k)) << "missing " << k << " in " << j.dump();
  EXPECT_EQ(j["num_seqs"].get<int64_t>(), int64_t(w.prompts.size()));
  EXPECT_EQ(j["prompt_tokens"].get<int64_t>(), w.prompt_tokens());
  EXPECT_EQ(j["output_tokens"].get<int64_t>(), w.output_tokens());  // ignore_eos: every request runs to max_tokens
  const double t = j["time_s"].get<double>();
  EXPECT_GT(t, 0);
  EXPECT_NEAR(j["throughput_tok_s"].get<double>(), double(w.output_tokens()) / t, 1e-6 * j["throughput_tok_s"].get<double>());
  for (const char* k : {"ttft_ms", "tpot_ms", "e2e_ms"}) expect_summary_ordered(j[k], k);
  // Per request TTFT <= e2e, so every order statistic and the mean keep that order too.
  for (const char* k : {"mean", "p50", "p95", "p99"})
    EXPECT_LE(j["ttft_ms"][k].get<double>(), j["e2e_ms"][k].get<double>()) << k;
  EXPECT_LE(j["e2e_ms"]["max"].get<double>(), t * 1e3 * 1.001 + 1);  // no request outlives the timed run
  EXPECT_GT(j["decode_tok_s"].get<double>(), 0);
  EXPECT_GT(j["prefill_tok_s"].get<double>(), 0);
  EXPECT_GT(j["kvcache_blocks"].get<int64_t>(), 0);
  EXPECT_GT(j["peak_memory_bytes"].get<int64_t>(), 0);
  const double hit = j["prefix_cache_hit_rate"].get<double>();
  EXPECT_TRUE(hit >= 0 && hit <= 1) << hit;
  EXPECT_EQ(j["device"].get<std::string>(), "cpu");
  EXPECT_EQ(j["config"]["device"].get<std::string>(), "cpu");
}

TEST(BenchCli, DryRunGivesNanoVllmTotalsWithoutAModel) {
  CliResult r = run_cli("bench --dry-run --json");
  ASSERT_EQ(r.rc, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["num_seqs"].get<int>(), 256);
  EXPECT_EQ(j["prompt_tokens"].get<int64_t>(), 142827);
  EXPECT_EQ(j["output_tokens"].get<int64_t>(), 133966);
  CliResult text = run_cli("bench --dry-run");
  ASSERT_EQ(text.rc, 0) << text.err;
  EXPECT_NE(text.out.find("256 sequences, 142827 prompt tokens, 133966 output tokens"), std::string::npos) << text.out;
}

TEST(BenchCli, BadArgumentsFailWithAMessage) {
  CliResult r = run_cli("bench --dry-run --min-input 50 --max-input 10");
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.err.find("max_input"), std::string::npos) << r.err;
  r = run_cli("bench --num-seqs 2");  // a real run needs a model
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.err.find("--model"), std::string::npos) << r.err;
  r = run_cli("bench --online --repeat 2");
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.err.find("--repeat"), std::string::npos) << r.err;
  r = run_cli("bench --online --profile");
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.err.find("--profile"), std::string::npos) << r.err;
  r = run_cli("bench --model " + tiny_model() + " --sweep no_such_field=1,2");
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.err.find("no_such_field"), std::string::npos) << r.err;
  r = run_cli("bench --model " + tiny_model() + " --sweep max_num_seqs=1,x");
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.err.find("'x'"), std::string::npos) << r.err;
}

TEST(BenchCli, TinyModelRunJsonIsCompleteAndConsistent) {
  CliResult r = run_cli("bench --model " + tiny_model() + " --device cpu " + kSmall + " --json");
  ASSERT_EQ(r.rc, 0) << r.err;
  expect_consistent_run(nlohmann::json::parse(r.out), make_workload(small_spec()));
  // --profile (the profiler range; nothing to open on the CPU) runs the same workload.
  r = run_cli("bench --model " + tiny_model() + " --device cpu " + kSmall + " --profile --json");
  ASSERT_EQ(r.rc, 0) << r.err;
  expect_consistent_run(nlohmann::json::parse(r.out), make_workload(small_spec()));
}

TEST(BenchCli, TinyModelTextReportStartsWithBenchPyLine) {
  CliResult r = run_cli("bench --model " + tiny_model() + " --device cpu " + kSmall);
  ASSERT_EQ(r.rc, 0) << r.err;
  const int64_t total = make_workload(small_spec()).output_tokens();
  EXPECT_TRUE(std::regex_search(
      r.out, std::regex("^Total: " + std::to_string(total) + "tok, Time: [0-9]+\\.[0-9]{2}s, Throughput: [0-9]+\\.[0-9]{2}tok/s\n")))
      << r.out;
  for (const char* s : {"TTFT (ms)", "TPOT (ms)", "E2E (ms)", "Prefill:", "Peak memory:"})
    EXPECT_NE(r.out.find(s), std::string::npos) << s;
}

TEST(BenchCli, RepeatReportsMediansAndSpread) {
  CliResult r = run_cli("bench --model " + tiny_model() + " --device cpu " + kSmall + " --repeat 3 --json");
  ASSERT_EQ(r.rc, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  expect_consistent_run(j, make_workload(small_spec()));
  ASSERT_EQ(j["runs"].size(), 3u);
  EXPECT_EQ(j["repeat"]["n"].get<int>(), 3);
  const auto& s = j["repeat"]["spread"]["throughput_tok_s"];
  EXPECT_LE(s["min"].get<double>(), j["throughput_tok_s"].get<double>());
  EXPECT_GE(s["max"].get<double>(), j["throughput_tok_s"].get<double>());
  EXPECT_GE(s["stdev"].get<double>(), 0);
  for (auto run : j["runs"]) {
    run["device"] = j["device"];  // what the runs share is reported once, at the top
    run["config"] = j["config"];
    expect_consistent_run(run, make_workload(small_spec()));
  }
}

TEST(BenchCli, SweepWritesCsvAndSvg) {
  const std::string dir = scratch("sweep");
  fs::create_directories(dir);
  const std::string prefix = dir + "/curve";
  CliResult r = run_cli("bench --model " + tiny_model() + " --device cpu " + kSmall +
                  " --sweep max_num_seqs=1,2,4 --json --out-prefix " + prefix);
  ASSERT_EQ(r.rc, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["sweep"]["field"].get<std::string>(), "max_num_seqs");
  ASSERT_EQ(j["points"].size(), 3u);
  const char* values[] = {"1", "2", "4"};
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(j["points"][i]["value"].get<std::string>(), values[i]);
    EXPECT_EQ(j["points"][i]["config"]["max_num_seqs"].get<int>(), std::stoi(values[i]));  // a fresh engine each
    expect_consistent_run(j["points"][i], make_workload(small_spec()));
  }
  std::ifstream csv(prefix + ".csv");
  std::string header, line;
  ASSERT_TRUE(std::getline(csv, header));
  EXPECT_EQ(header.rfind("max_num_seqs,time_s,throughput_tok_s,", 0), 0u) << header;
  EXPECT_NE(header.find("tpot_ms_p50"), std::string::npos);
  EXPECT_NE(header.find("tpot_ms_p99"), std::string::npos);
  int rows = 0;
  while (std::getline(csv, line)) EXPECT_EQ(line.rfind(values[rows++], 0), 0u) << line;
  EXPECT_EQ(rows, 3);
  std::ifstream svg_file(prefix + ".svg");
  std::stringstream svg;
  svg << svg_file.rdbuf();
  EXPECT_NE(svg.str().find("<svg"), std::string::npos);
  EXPECT_NE(svg.str().find("</svg>"), std::string::npos);
  EXPECT_NE(svg.str().find("TPOT p99"), std::string::npos);
}

// `nanovllm serve` on a free port; stopped with SIGTERM when the test ends.
class Server {
 public:
  explicit Server(const std::string& model) {
    log_ = scratch("serve.log");
    std::string cmd = std::string("exec ") + NANOVLLM_BINARY + " serve --model " + model +
                      " --device cpu --num-kvcache-blocks 32 --host 127.0.0.1 --port 0 > " + log_ + " 2>&1";
    const char* argv[] = {"/bin/sh", "-c", cmd.c_str(), nullptr};
    if (posix_spawn(&pid_, "/bin/sh", nullptr, nullptr, const_cast<char**>(argv), environ) != 0)
      throw std::runtime_error("cannot start nanovllm serve");
    const std::regex listening("listening on (http://[0-9.]+:[0-9]+)");
    for (int i = 0; i < 600 && url_.empty(); ++i) {  // up to a minute for the model to load
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      std::ifstream f(log_);
      std::stringstream ss;
      ss << f.rdbuf();
      std::smatch m;
      std::string text = ss.str();
      if (std::regex_search(text, m, listening)) url_ = m[1];
      if (waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = 0;
        throw std::runtime_error("nanovllm serve exited: " + text);
      }
    }
  }
  ~Server() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      waitpid(pid_, nullptr, 0);
    }
  }
  const std::string& url() const { return url_; }

 private:
  pid_t pid_ = 0;
  std::string log_, url_;
};

TEST(BenchCli, OnlineAgainstServeReportsTheSameTable) {
  if (!fs::exists(tiny_model() + "/tokenizer.json"))
    GTEST_SKIP() << "serve needs a tokenizer: run scripts/setup.sh to fetch models/qwen3-tokenizer";
  Server server(tiny_model());
  ASSERT_FALSE(server.url().empty()) << "serve did not report its port";
  CliResult r = run_cli("bench --online --url " + server.url() + " --request-rate 50 " + kSmall + " --json");
  ASSERT_EQ(r.rc, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  const Workload w = make_workload(small_spec());
  EXPECT_EQ(j["failed_requests"].get<int>(), 0) << j.value("first_error", "");
  EXPECT_EQ(j["num_seqs"].get<int>(), 4);
  EXPECT_EQ(j["prompt_tokens"].get<int64_t>(), w.prompt_tokens());
  EXPECT_EQ(j["output_tokens"].get<int64_t>(), w.output_tokens());  // the server's usage counts
  // What the server's /metrics tells: its KV cache (started with 32 blocks), the hit rate over the run.
  EXPECT_EQ(j["kvcache_blocks"].get<int64_t>(), 32);
  const double hit = j["prefix_cache_hit_rate"].get<double>();
  EXPECT_TRUE(hit >= 0 && hit <= 1) << hit;
  EXPECT_EQ(j["num_preemptions"].get<int64_t>(), 0);
  for (const char* k : {"ttft_ms", "tpot_ms", "e2e_ms"}) expect_summary_ordered(j[k], k);
  for (const char* k : {"mean", "p50", "p95", "p99"})
    EXPECT_LE(j["ttft_ms"][k].get<double>(), j["e2e_ms"][k].get<double>()) << k;
}

}  // namespace
}  // namespace nanovllm
