// `nanovllm serve`: the OpenAI-compatible HTTP server (vLLM's flags). SIGINT/SIGTERM only write a
// byte to a pipe (async-signal-safe, whichever thread takes the signal, including threads that
// libraries start before main); a watcher thread reads it and shuts the server down cleanly.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>

#include "cli/commands.h"
#include "cli/engine_flags.h"
#include "nanovllm/llm.h"
#include "server/openai_server.h"
#include "tokenizer/tokenizer.h"

namespace nanovllm::cli {
namespace {

struct ServeOptions {
  EngineConfig engine;
  server::ServerConfig server;
};

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
  install_stop_signals();
  o.server.model_dir = o.engine.model;
  // Before the (slow) model load: the server cannot work without a tokenizer.
  if (!Tokenizer::present(o.engine.model))
    throw std::runtime_error("serve: the model directory '" + o.engine.model +
                             "' has no tokenizer.json; the server needs one to read and write text");
  LLM llm(o.engine.model, o.engine);
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
  add_engine_flags(cmd, opts->engine);
  cmd->add_option("--host", opts->server.host, "address to listen on");
  cmd->add_option("--port", opts->server.port, "port to listen on (0: any free port)")->check(CLI::Range(0, 65535));
  cmd->add_option("--served-model-name", opts->server.served_model_name,
                  "the model name clients must send (default: the --model argument)");
  cmd->add_option("--api-key", opts->server.api_key, "require 'Authorization: Bearer KEY' on /v1 routes");
  cmd->add_option("--max-pending", opts->server.max_pending,
                  "admitted, unfinished sequences at most; beyond it requests get 503")
      ->check(kPositive);
  cmd->add_option("--http-threads", opts->server.http_threads,
                  "HTTP worker threads (each streaming client holds one)")
      ->check(kPositive);
  cmd->add_option("--timeout-keep-alive", opts->server.keep_alive_s,
                  "seconds an idle keep-alive connection stays open (as uvicorn's --timeout-keep-alive)")
      ->check(kPositive);
  cmd->callback([opts] { run_serve(*opts); });
}

}  // namespace nanovllm::cli
