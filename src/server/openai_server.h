// OpenAIServer: `nanovllm serve`'s HTTP front end (cpp-httplib): /v1/completions,
// /v1/chat/completions, /v1/models, /health, /metrics, over one EngineLoop thread.
#pragma once
#include <atomic>
#include <memory>
#include <mutex>
#include <string>

#include "nanovllm/llm.h"
#include "server/engine_loop.h"
#include "server/metrics.h"
#include "server/prepare.h"
#include "tokenizer/tokenizer.h"

namespace httplib {
class Server;
struct Request;
struct Response;
}

namespace nanovllm::server {

struct ServerConfig {
  std::string model_dir;          // the served model (its tokenizer.json and config.json)
  std::string host = "127.0.0.1";
  int port = 8000;
  std::string served_model_name;  // "" = the --model argument, as vLLM does
  std::string api_key;            // "" = no authentication
  int max_pending = 4096;         // admitted, unfinished choices; beyond it requests get 503
  int http_threads = 512;         // each streaming client holds one while it streams
  size_t max_body_bytes = 32u << 20;
  // Seconds an idle keep-alive connection stays open. Longer than clients' own idle limits (Node's
  // fetch 4 s, httpx 5 s), so the client is the side that closes: a server that closes first races
  // a client reusing the connection, and that client's POST fails with "other side closed".
  int keep_alive_s = 30;
};

class OpenAIServer {
 public:
  OpenAIServer(LLM& llm, ServerConfig config);
  ~OpenAIServer();

  // Binds host:port (port 0: any free port; see port()). Throws std::runtime_error naming the
  // address when it cannot bind.
  void bind();
  int port() const { return port_; }
  // Serves until shutdown(); the engine loop runs for the duration.
  void serve();
  // Thread-safe, idempotent: refuse new requests (503), abort the ones in flight (streams get a
  // final chunk and [DONE]), wait a little for handlers to finish, stop listening.
  void shutdown();

 private:
  // routes() installs everything httplib serves, in these parts:
  void routes();
  void set_http_options();  // thread pool, socket and body limits
  void set_hooks();         // API key check, OpenAI-shaped errors, metrics of every response
  void route_status();      // /health, /metrics, /v1/models
  void route_generate();    // /v1/completions, /v1/chat/completions
  class ActiveGuard;
  struct Call;
  // Parses, tokenizes and submits one generate request; returns once the engine admitted it.
  // Throws ApiError for a request the client must fix, or when the server cannot take it now.
  std::shared_ptr<Call> admit(const httplib::Request& req, Endpoint endpoint);
  // Sends the call's tokens as server-sent events while they come.
  static void stream_events(std::shared_ptr<Call> call, std::shared_ptr<ActiveGuard> guard, httplib::Response& res);

  LLM& llm_;
  ServerConfig config_;
  ModelLimits limits_;
  SamplingDefaults defaults_;  // what a request that leaves a sampling field out gets
  Metrics metrics_;
  EngineLoop engine_;
  std::unique_ptr<httplib::Server> http_;
  int port_ = 0;
  int listen_fd_ = -1;  // httplib's listening socket, to raise its backlog
  std::atomic<bool> accepting_{true};
  std::atomic<bool> listener_done_{false};
  std::atomic<int> active_{0};  // handlers (and streams) in progress
  std::once_flag shutdown_once_;
};

}  // namespace nanovllm::server
