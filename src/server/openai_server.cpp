// OpenAIServer: routes, authentication, error shapes, and the wiring of handler threads to the
// engine loop. Handlers tokenize on their own threads; only the engine loop touches the LLM.
#include "server/openai_server.h"

#include <chrono>
#include <cstdio>
#include <stdexcept>
#include <thread>

#include <httplib.h>
#include <sys/socket.h>

#include <nlohmann/json.hpp>

#include "model/generation_config.h"
#include "server/api_error.h"
#include "server/connection.h"
#include "server/generation.h"
#include "server/request.h"
#include "server/sse.h"

namespace nanovllm::server {
namespace {

using json = nlohmann::json;

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(dump_json(body), "application/json");
}

void send_error(httplib::Response& res, const ApiError& e) { send_json(res, e.status(), e.to_json()); }

}  // namespace

// What one generate call keeps alive while its response streams.
struct OpenAIServer::Call {
  CompletionRequest req;
  PreparedRequest prep;
  std::unique_ptr<Generation> gen;
};

// Counts a handler (and, for a stream, its content provider) as in progress while it lives.
class OpenAIServer::ActiveGuard {
 public:
  explicit ActiveGuard(std::atomic<int>& n) : n_(n) { ++n_; }
  ~ActiveGuard() { --n_; }

 private:
  std::atomic<int>& n_;
};

OpenAIServer::OpenAIServer(LLM& llm, ServerConfig config)
    : llm_(llm), config_(std::move(config)),
      metrics_(config_.served_model_name.empty() ? config_.model_dir : config_.served_model_name),
      engine_(llm, metrics_, config_.max_pending), http_(std::make_unique<httplib::Server>()) {
  if (config_.served_model_name.empty()) config_.served_model_name = config_.model_dir;
  if (!llm.has_tokenizer())
    throw std::runtime_error("serve: the model directory '" + config_.model_dir +
                             "' has no tokenizer.json; the server needs one to read and write text");
  limits_.max_model_len = llm.config().max_model_len;
  limits_.vocab_size = llm.vocab_size();  // can exceed the tokenizer's: padded rows
  limits_.max_logprobs = llm.config().max_logprobs;
  defaults_.params = llm.default_sampling_params();
  // Whether the generation config sets max_new_tokens is not in default_sampling_params(), whose
  // max_tokens always has a value: read the same file the engine read.
  defaults_.max_new_tokens =
      load_generation_defaults(llm.config().model, llm.config().generation_config).max_new_tokens;
  routes();
}

OpenAIServer::~OpenAIServer() { engine_.stop(); }

void OpenAIServer::bind() {
  // httplib 0.11 listens with a backlog of 5: hundreds of clients connecting at once overflow it
  // and the kernel drops their handshakes (clients then fail reading). Remember the listening
  // socket and listen() again on it with the system's maximum.
  http_->set_socket_options([this](int fd) {
    int yes = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);  // what httplib's default sets (less SO_REUSEPORT)
    listen_fd_ = fd;
  });
  if (config_.port == 0) {
    port_ = http_->bind_to_any_port(config_.host);
    if (port_ < 0) throw std::runtime_error("serve: cannot bind " + config_.host + " on any port");
  } else {
    if (!http_->bind_to_port(config_.host, config_.port))
      throw std::runtime_error("serve: cannot bind " + config_.host + ":" + std::to_string(config_.port) +
                               " (in use, or not a local address)");
    port_ = config_.port;
  }
  if (listen_fd_ >= 0) ::listen(listen_fd_, SOMAXCONN);
}

void OpenAIServer::serve() {
  engine_.start();
  const bool ok = http_->listen_after_bind();
  listener_done_ = true;
  engine_.stop();
  if (!ok && accepting_) throw std::runtime_error("serve: the HTTP listener failed on port " + std::to_string(port_));
}

void OpenAIServer::shutdown() {
  std::call_once(shutdown_once_, [this] {
    accepting_ = false;
    engine_.stop();  // every live request ends with "abort"; waiting handlers wake up
    // Let the handlers write their last chunk and [DONE] before the listener goes away.
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (active_.load() > 0 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    // httplib's stop() does nothing before the listener runs: a signal during start-up must
    // wait for serve() to get there (or to have failed).
    deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!http_->is_running() && !listener_done_ && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    http_->stop();
    // No connection can arrive now; the ones left are idle keep-alives (or handlers past the
    // deadline): close them, or httplib's threads would each wait out --timeout-keep-alive.
    shutdown_connections(port_);
  });
}

void OpenAIServer::routes() {
  set_http_options();
  set_hooks();
  route_status();
  route_generate();
}

void OpenAIServer::set_http_options() {
  httplib::Server& s = *http_;
  const int threads = config_.http_threads;
  s.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  s.set_tcp_nodelay(true);  // tokens are small writes; Nagle would hold them back
  s.set_payload_max_length(config_.max_body_bytes);
  s.set_keep_alive_timeout(config_.keep_alive_s);
}

void OpenAIServer::set_hooks() {
  httplib::Server& s = *http_;
  s.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (config_.api_key.empty() || req.path.rfind("/v1", 0) != 0) return httplib::Server::HandlerResponse::Unhandled;
    if (req.get_header_value("Authorization") == "Bearer " + config_.api_key)
      return httplib::Server::HandlerResponse::Unhandled;
    send_error(res, ApiError(401, "Incorrect or missing API key: send 'Authorization: Bearer <key>'", "",
                             "invalid_api_key"));
    return httplib::Server::HandlerResponse::Handled;
  });
  // httplib calls this for every status >= 400: keep our own error bodies, fill in its own
  // (404 no route, 413 body too large, 400 bad HTTP) with OpenAI's shape.
  s.set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    std::string msg = res.status == 404   ? "no route for " + req.method + " " + req.path
                      : res.status == 413 ? std::string("request body too large")
                                          : "HTTP error " + std::to_string(res.status);
    send_json(res, res.status, ApiError(res.status, msg, "", res.status == 404 ? "unknown_url" : "").to_json());
    return httplib::Server::HandlerResponse::Handled;
  }));
  s.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "internal error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = std::string("internal error: ") + e.what();
    } catch (...) {
    }
    send_error(res, ApiError(500, what));
  });
  s.set_logger([this](const httplib::Request&, const httplib::Response& res) { metrics_.on_http(res.status); });
}

void OpenAIServer::route_status() {
  httplib::Server& s = *http_;
  s.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    if (accepting_) send_json(res, 200, {{"status", "ok"}});
    else send_error(res, ApiError(503, "server is shutting down"));
  });
  s.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics_.render(), "text/plain; version=0.0.4; charset=utf-8");
  });
  s.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    json model = {{"id", config_.served_model_name},
                  {"object", "model"},
                  {"created", std::chrono::duration_cast<std::chrono::seconds>(
                                  std::chrono::system_clock::now().time_since_epoch())
                                  .count()},
                  {"owned_by", "nanovllm"},
                  {"root", config_.model_dir},
                  {"parent", nullptr},
                  {"max_model_len", limits_.max_model_len}};
    send_json(res, 200, {{"object", "list"}, {"data", json::array({model})}});
  });
}

void OpenAIServer::route_generate() {
  auto generate = [this](Endpoint endpoint) {
    return [this, endpoint](const httplib::Request& req, httplib::Response& res) {
      auto guard = std::make_shared<ActiveGuard>(active_);
      try {
        std::shared_ptr<Call> call = admit(req, endpoint);
        if (!call->req.stream) {
          send_json(res, 200, call->gen->run_to_completion());
          return;
        }
        stream_events(std::move(call), std::move(guard), res);
      } catch (const ApiError& e) {
        send_error(res, e);
      }
    };
  };
  http_->Post("/v1/completions", generate(Endpoint::completions));
  http_->Post("/v1/chat/completions", generate(Endpoint::chat));
}

std::shared_ptr<OpenAIServer::Call> OpenAIServer::admit(const httplib::Request& req, Endpoint endpoint) {
  if (!accepting_) throw ApiError(503, "server is shutting down", "", "shutting_down");
  auto call = std::make_shared<Call>();
  call->req = parse_request(req.body, endpoint);
  if (!call->req.model.empty() && call->req.model != config_.served_model_name)
    throw ApiError(400, "The model '" + call->req.model + "' does not exist; this server serves '" +
                            config_.served_model_name + "'",
                   "model", "model_not_found");
  call->prep = prepare(call->req, llm_.tokenizer(), limits_, defaults_);
  auto channel = std::make_shared<RequestChannel>();
  call->gen = std::make_unique<Generation>(call->req, call->prep, llm_.tokenizer(), config_.served_model_name, engine_,
                                           channel);
  // Looked up only once a request outlasts a wait (short requests never pay for the scan).
  call->gen->set_client_gone([fd = -2, addr = req.remote_addr, rport = req.remote_port,
                              lport = req.local_port]() mutable {
    if (fd == -2) fd = find_connection_socket(addr, rport, lport);
    return fd >= 0 && peer_closed(fd);
  });
  switch (engine_.submit(channel, std::move(call->prep.subs))) {
    case Admission::accepted: break;
    case Admission::queue_full:
      throw ApiError(503, "the server has too many pending requests (--max-pending " +
                              std::to_string(config_.max_pending) + "); retry later",
                     "", "queue_full");
    case Admission::shutting_down: throw ApiError(503, "server is shutting down", "", "shutting_down");
  }
  if (std::string err = channel->wait_admitted(); !err.empty()) throw ApiError(400, err, "", "invalid_value");
  return call;
}

// The call and the guard live as long as httplib keeps the content provider, not the handler.
void OpenAIServer::stream_events(std::shared_ptr<Call> call, std::shared_ptr<ActiveGuard> guard,
                                 httplib::Response& res) {
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [call, guard](size_t, httplib::DataSink& sink) {
        bool ok = false;
        try {
          ok = call->gen->stream([&](const std::string& s) { return sink.write(s.data(), s.size()); });
        } catch (const std::exception& e) {
          // Past the headers there is no status left to send: log, and cut the stream.
          std::fprintf(stderr, "nanovllm serve: stream failed: %s\n", e.what());
        }
        if (ok) sink.done();
        return ok;
      },
      [call](bool success) {
        if (!success) call->gen->abort();  // the client left, or the write timed out
      });
}

}  // namespace nanovllm::server
