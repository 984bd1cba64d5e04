// OpenAIServer: `nanovllm serve`'s routes over the event-driven HTTP front end (http_server.h):
// /v1/completions, /v1/chat/completions, /v1/models, /tokenize, /detokenize, /version, /health,
// /metrics, CORS; one EngineLoop thread owns the LLM, a WorkPool parses, tokenizes and renders.
#pragma once
#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "nanovllm/llm.h"
#include "server/engine_loop.h"
#include "server/http_server.h"
#include "server/metrics.h"
#include "server/prepare.h"
#include "server/request.h"
#include "server/work_pool.h"

namespace nanovllm::server {

struct ServerConfig {
  std::string model_dir;          // the served model (its tokenizer.json and config.json)
  std::string host = "127.0.0.1";
  int port = 8000;
  std::string served_model_name;  // "" = the model argument, as vLLM does
  std::string api_key;            // "" = no authentication
  int max_pending = 4096;         // admitted, unfinished sequences; beyond it requests wait
  double max_queue_wait_s = 30;   // how long a request waits for room under max_pending (then 503)
  int max_seqs_per_request = 256; // prompts x n of one request, at most (400 beyond)
  int http_threads = 0;           // threads that parse, tokenize and render (0: the cores, at least 2)
  int max_connections = 0;        // 0: as many as the descriptor limit allows (less a reserve)
  size_t max_request_bytes = 32u << 20;
  size_t max_buffered_request_bytes = 256u << 20;  // bodies held at once, read but not yet tokenized
  // Seconds an idle keep-alive connection stays open. Longer than clients' own idle limits (Node's
  // fetch 4 s, httpx 5 s), so the client is the side that closes: a server that closes first races
  // a client reusing the connection, and that client's POST fails with "other side closed".
  int keep_alive_s = 30;
  double headers_timeout_s = 10;  // a request's headers must arrive within this of their first byte
  double body_timeout_s = 60;     // and its body within this of its headers
  std::vector<std::string> allowed_origins = {"*"};  // CORS (vLLM's --allowed-origins)
  int engine_nice = 10;           // the engine thread's nice value above the I/O thread's
};

class OpenAIServer {
 public:
  OpenAIServer(LLM& llm, ServerConfig config);
  ~OpenAIServer();

  // Binds host:port (port 0: any free port; see port()). Throws std::runtime_error naming the
  // address when it cannot bind.
  void bind();
  int port() const;
  // Serves until shutdown(); the engine loop runs for the duration.
  void serve();
  // Thread-safe, idempotent: refuse new requests (503), abort the ones in flight (streams get a
  // final chunk and [DONE]), wait a little for their responses to go out, stop listening.
  void shutdown();

 private:
  struct Call;
  class CallStream;
  void handle(const std::shared_ptr<http::Exchange>& ex);  // on the I/O thread
  void decorate(const http::Request& req, http::Response& res);  // CORS, and counts statuses
  bool preflight(const std::shared_ptr<http::Exchange>& ex);
  void generate(const std::shared_ptr<http::Exchange>& ex, Endpoint endpoint);  // on a worker
  void on_channel(const std::shared_ptr<Call>& call);  // engine thread: the call has news
  void drain(const std::shared_ptr<Call>& call);      // on a worker
  void tokenize(const std::shared_ptr<http::Exchange>& ex);
  void detokenize(const std::shared_ptr<http::Exchange>& ex);
  std::string models_json() const;
  void render_http_metrics(std::string& out) const;

  LLM& llm_;
  ServerConfig config_;
  ModelLimits limits_;
  SamplingDefaults defaults_;  // what a request that leaves a sampling field out gets
  Metrics metrics_;
  EngineLoop engine_;
  std::unique_ptr<http::Server> http_;
  // After http_: destroyed first, so a job still queued at exit answers an exchange whose server
  // (and io_context) still exist.
  WorkPool pool_;
  std::atomic<bool> accepting_{true};
  std::once_flag shutdown_once_;
};

}  // namespace nanovllm::server
