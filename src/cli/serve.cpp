// `nanovllm serve`: the OpenAI-compatible HTTP server (vLLM's flags). SIGINT/SIGTERM only write a
// byte to a pipe (async-signal-safe, whichever thread takes the signal, including threads that
// libraries start before main); a watcher thread reads it and shuts the server down cleanly.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/engine_flags.h"
#include "model/hf_config.h"
#include "nanovllm/llm.h"
#include "server/openai_server.h"
#include "tokenizer/tokenizer.h"
#include "util/thread_nice.h"

namespace nanovllm::cli {
namespace {

struct ServeOptions {
  EngineConfig engine;
  server::ServerConfig server;
  std::string model_tag;         // `nanovllm serve MODEL`, vLLM's positional form of --model
  std::string dtype = "auto";    // vLLM's --dtype, checked against what the device computes in
  bool max_model_len_given = false;
};

// vLLM's --allowed-origins takes a JSON list ('["https://a.example"]'); a comma-separated list
// works too.
std::vector<std::string> parse_origins(const std::string& s) {
  std::vector<std::string> out;
  if (!s.empty() && s.front() == '[') {
    const nlohmann::json j = nlohmann::json::parse(s, nullptr, false);
    if (j.is_discarded() || !j.is_array())
      throw std::invalid_argument("--allowed-origins '" + s + "' is not a JSON list of strings");
    for (const auto& o : j) {
      if (!o.is_string()) throw std::invalid_argument("--allowed-origins '" + s + "' is not a JSON list of strings");
      out.push_back(o.get<std::string>());
    }
    return out;
  }
  size_t pos = 0;
  while (pos <= s.size()) {
    const size_t comma = s.find(',', pos);
    std::string item = s.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    if (!item.empty()) out.push_back(item);
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return out;
}

// The model comes as `serve MODEL` or `serve --model MODEL` (not both, unless they agree).
void resolve_model(ServeOptions& o) {
  if (!o.model_tag.empty() && !o.engine.model.empty() && o.model_tag != o.engine.model)
    throw std::invalid_argument("serve: the model is given twice, as '" + o.model_tag + "' and --model '" +
                                o.engine.model + "'");
  if (o.engine.model.empty()) o.engine.model = o.model_tag;
  if (o.engine.model.empty()) throw std::invalid_argument("serve: no model: nanovllm serve MODEL_DIR [options]");
}

// vLLM refuses a --max-model-len beyond the model's own limit (unless told otherwise); so does
// serve, before loading anything. Left out, it is capped to the model's as before.
void check_max_model_len(const ServeOptions& o) {
  if (!o.max_model_len_given) return;
  const ModelConfig mc = load_model_config(o.engine.model);
  if (mc.max_position_embeddings > 0 && o.engine.max_model_len > mc.max_position_embeddings)
    throw std::invalid_argument("--max-model-len " + std::to_string(o.engine.max_model_len) +
                                " is above the model's limit: " + o.engine.model +
                                "/config.json has max_position_embeddings = " +
                                std::to_string(mc.max_position_embeddings));
}

// --dtype: the CPU backend computes in float32, the CUDA backend in bfloat16; "auto" takes the
// device's, and naming the other is an error rather than silently ignored.
void check_dtype(const std::string& dtype, DeviceKind device) {
  if (dtype == "auto") return;
  const bool f32 = dtype == "float32" || dtype == "float";
  const bool bf16 = dtype == "bfloat16";
  if ((device == DeviceKind::cpu && f32) || (device != DeviceKind::cpu && bf16)) return;
  throw std::invalid_argument("--dtype " + dtype + ": the " + std::string(to_string(device)) +
                              " backend computes in " + (device == DeviceKind::cpu ? "float32" : "bfloat16") +
                              " (use auto or " + (device == DeviceKind::cpu ? "float32" : "bfloat16") + ")");
}

// Loads the model on a thread made `nice` nicer, so the threads the backend starts there (the CPU
// backend's pool, which runs most of each step) inherit it and yield the CPU to the I/O thread,
// which stays at the process's nice value. Nice only matters when threads compete for a CPU: on
// an otherwise idle machine the steps run as fast as before.
std::unique_ptr<LLM> load_niced(const EngineConfig& config, int nice) {
  std::unique_ptr<LLM> llm;
  std::exception_ptr error;
  std::thread([&] {
    raise_thread_nice(nice);
    try {
      llm = std::make_unique<LLM>(config.model, config);
    } catch (...) {
      error = std::current_exception();
    }
  }).join();
  if (error) std::rethrow_exception(error);
  return llm;
}

int g_signal_pipe[2] = {-1, -1};

extern "C" void on_stop_signal(int sig) {
  const int saved = errno;
  unsigned char b = static_cast<unsigned char>(sig);
  [[maybe_unused]] ssize_t n = write(g_signal_pipe[1], &b, 1);
  errno = saved;
}

void install_stop_signals() {
  if (pipe2(g_signal_pipe, O_CLOEXEC) != 0)
    throw std::runtime_error(std::string("serve: cannot create the signal pipe: ") + std::strerror(errno));
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);  // a client that hung up is a failed write, not the end of the server
}

void run_serve(ServeOptions& o) {
  resolve_model(o);
  check_max_model_len(o);
  if (o.engine.device) check_dtype(o.dtype, *o.engine.device);
  install_stop_signals();
  o.server.model_dir = o.engine.model;
  // Before the (slow) model load: the server cannot work without a tokenizer.
  if (!Tokenizer::present(o.engine.model))
    throw std::runtime_error("serve: the model directory '" + o.engine.model +
                             "' has no tokenizer.json; the server needs one to read and write text");
  std::unique_ptr<LLM> owned = load_niced(o.engine, o.server.engine_nice);
  LLM& llm = *owned;
  check_dtype(o.dtype, *llm.config().device);
  server::OpenAIServer srv(llm, o.server);
  srv.bind();
  std::printf("nanovllm serve: model %s on %s, max_model_len %d\n", o.engine.model.c_str(),
              std::string(to_string(*llm.config().device)).c_str(), llm.config().max_model_len);
  // Tests and scripts read the port from this line (with --port 0 the kernel picks it).
  std::printf("nanovllm serve: listening on http://%s:%d\n", o.server.host.c_str(), srv.port());
  std::fflush(stdout);

  std::thread watcher([&] {
    unsigned char sig = 0;
    while (read(g_signal_pipe[0], &sig, 1) < 0 && errno == EINTR) {
    }
    if (sig != 0) std::fprintf(stderr, "nanovllm serve: %s, shutting down\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    srv.shutdown();
  });
  srv.serve();
  srv.shutdown();  // no-op when a signal started it
  // Wake the watcher if no signal came (a zero byte means "just exit").
  unsigned char zero = 0;
  [[maybe_unused]] ssize_t n = write(g_signal_pipe[1], &zero, 1);
  watcher.join();
  std::printf("nanovllm serve: stopped\n");
  std::fflush(stdout);
}

}  // namespace

void add_serve_command(CLI::App& app) {
  auto opts = std::make_shared<ServeOptions>();
  auto* cmd = app.add_subcommand("serve", "OpenAI-compatible HTTP server (/v1/completions, /v1/chat/completions)");
  cmd->add_option("model_tag", opts->model_tag, "Hugging Face model directory (or give --model)")
      ->check(CLI::ExistingDirectory);
  add_engine_flags(cmd, opts->engine);
  cmd->get_option("--model")->required(false);  // serve MODEL is vLLM's form
  cmd->add_option("--dtype", opts->dtype, "vLLM's --dtype: auto, or the device's own (CPU float32, CUDA bfloat16)")
      ->check(CLI::IsMember({"auto", "half", "float16", "bfloat16", "float", "float32"}))
      ->capture_default_str();
  cmd->add_option("--host", opts->server.host, "address to listen on");
  cmd->add_option("--port", opts->server.port, "port to listen on (0: any free port)")->check(CLI::Range(0, 65535));
  cmd->add_option("--served-model-name", opts->server.served_model_name,
                  "the model name clients must send (default: the --model argument)");
  cmd->add_option("--api-key", opts->server.api_key, "require 'Authorization: Bearer KEY' on /v1 routes");
  cmd->add_option("--max-pending", opts->server.max_pending,
                  "admitted, unfinished sequences at most; beyond it requests wait (--max-queue-wait)")
      ->capture_default_str()
      ->check(kPositive);
  cmd->add_option("--max-queue-wait", opts->server.max_queue_wait_s,
                  "seconds a request waits for room under --max-pending before a 503 (0: 503 at once)")
      ->capture_default_str()
      ->check(kNonNegative);
  cmd->add_option("--max-seqs-per-request", opts->server.max_seqs_per_request,
                  "prompts x n of one request, at most (400 beyond)")
      ->capture_default_str()
      ->check(kPositive);
  cmd->add_option("--max-connections", opts->server.max_connections,
                  "open connections at most; past it idle keep-alive ones are closed, else new ones refused "
                  "(0: what RLIMIT_NOFILE allows)")
      ->capture_default_str()
      ->check(kNonNegative);
  cmd->add_option("--max-request-bytes", opts->server.max_request_bytes,
                  "request body size limit, checked on Content-Length before reading (413 beyond)")
      ->capture_default_str()
      ->check(kPositive);
  cmd->add_option("--max-buffered-request-bytes", opts->server.max_buffered_request_bytes,
                  "request bodies held in memory at once, from reading until tokenized; more wait")
      ->capture_default_str()
      ->check(kPositive);
  cmd->add_option("--http-threads", opts->server.http_threads,
                  "threads that parse, tokenize and render requests (0: the cores, at least 2)")
      ->capture_default_str()
      ->check(kNonNegative);
  cmd->add_option("--timeout-keep-alive", opts->server.keep_alive_s,
                  "seconds an idle keep-alive connection stays open (as uvicorn's --timeout-keep-alive)")
      ->capture_default_str()
      ->check(kPositive);
  cmd->add_option("--timeout-headers", opts->server.headers_timeout_s,
                  "seconds a request's headers may take from their first byte (not reset by each byte)")
      ->capture_default_str()
      ->check(kPositive);
  cmd->add_option("--timeout-body", opts->server.body_timeout_s,
                  "seconds a request's body may take after its headers (not reset by each byte)")
      ->capture_default_str()
      ->check(kPositive);
  cmd->add_option("--scheduling-policy", opts->engine.scheduling_policy,
                  "vLLM's: fcfs (arrival order; a request's 'priority' must be 0) or priority (lower 'priority' "
                  "first, then arrival; preemption takes the lowest priority first)")
      ->check(CLI::IsMember({"fcfs", "priority"}))
      ->capture_default_str();
  cmd->add_option("--engine-nice", opts->server.engine_nice,
                  "how much nicer than the HTTP threads the threads that run model steps are, so /health and "
                  "streams are served first when the CPUs are busy (0: the same)")
      ->capture_default_str()
      ->check(CLI::Range(0, 19));
  cmd->add_option_function<std::string>(
         "--allowed-origins", [opts](const std::string& s) { opts->server.allowed_origins = parse_origins(s); },
         "CORS origins, a JSON list as vLLM's (default [\"*\"]) or comma-separated");
  cmd->callback([opts, cmd] {
    opts->max_model_len_given = cmd->get_option("--max-model-len")->count() > 0;
    run_serve(*opts);
  });
}

}  // namespace nanovllm::cli
