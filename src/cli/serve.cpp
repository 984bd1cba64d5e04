// `nanovllm serve`: the OpenAI-compatible HTTP server (vLLM's flags), with SIGINT/SIGTERM handled
// by a dedicated thread so a signal never interrupts a handler or the engine mid-step.
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <memory>
#include <thread>

#include "cli/commands.h"
#include "cli/engine_flags.h"
#include "nanovllm/llm.h"
#include "server/openai_server.h"

namespace nanovllm::cli {
namespace {

struct ServeOptions {
  EngineConfig engine;
  server::ServerConfig server;
};

void run_serve(ServeOptions& o) {
  // Block the stop signals before any thread starts, so every thread inherits the mask and only
  // the sigwait thread below ever sees them. SIGPIPE: a client that hung up is a failed write.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  o.server.model_dir = o.engine.model;
  LLM llm(o.engine.model, o.engine);
  server::OpenAIServer srv(llm, o.server);
  srv.bind();
  std::printf("nanovllm serve: model %s on %s, max_model_len %d\n", o.engine.model.c_str(),
              llm.config().device.c_str(), llm.config().max_model_len);
  // Tests and scripts read the port from this line (with --port 0 the kernel picks it).
  std::printf("nanovllm serve: listening on http://%s:%d\n", o.server.host.c_str(), srv.port());
  std::fflush(stdout);

  std::atomic<bool> got_signal{false};
  std::thread signals([&] {
    int sig = 0;
    sigwait(&stop_signals, &sig);
    got_signal = true;
    std::fprintf(stderr, "nanovllm serve: %s, shutting down\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    srv.shutdown();
  });
  srv.serve();
  srv.shutdown();  // no-op when a signal started it
  // The listener can only stop through shutdown(), which the signal thread runs; if it stopped
  // otherwise, wake the thread so it can be joined.
  if (!got_signal) pthread_kill(signals.native_handle(), SIGTERM);
  signals.join();
  std::printf("nanovllm serve: stopped\n");
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
      ->check(CLI::PositiveNumber);
  cmd->add_option("--http-threads", opts->server.http_threads,
                  "HTTP worker threads (each streaming client holds one)")
      ->check(CLI::PositiveNumber);
  cmd->callback([opts] { run_serve(*opts); });
}

}  // namespace nanovllm::cli
