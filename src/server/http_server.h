// http::Server: the server's HTTP/1.1 front end on one event-driven I/O thread (Boost.Asio and
// Beast), so that a connection costs a socket and a little memory, never a thread. It enforces the
// limits that keep slow or idle clients from holding the server: a connection limit, absolute
// deadlines for a request's headers and body (not reset by each byte), an idle keep-alive limit,
// a body size limit checked on Content-Length before reading, and a budget of body bytes held in
// memory at once. It knows nothing of OpenAI: a request goes to the handler as an Exchange, which
// any thread answers whole (reply) or as a chunked stream (stream + wake).
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace nanovllm::server::http {

struct Request {
  std::string method;   // "GET", "POST", "OPTIONS", ...
  std::string target;   // as sent: "/v1/completions?x=1"
  std::string path;     // the target without its query
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;
  std::string remote;   // the peer's address, for logs
  // The header's value ("" when absent); `name` lower-case.
  std::string header(std::string_view name) const;
};

struct Response {
  int status = 200;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;  // beyond Content-Type/Length, Connection
  std::string body;
};

// A streamed body (server-sent events), pulled on the I/O thread.
class BodySource {
 public:
  virtual ~BodySource() = default;
  // Appends what is ready to `out`; true once the body is complete (nothing more will come).
  virtual bool read(std::string& out) = 0;
};

// One request and its response. Thread-safe: any thread may answer.
class Exchange {
 public:
  virtual ~Exchange() = default;
  virtual const Request& request() const = 0;
  // Frees the body and returns its bytes to the budget (done once the body is parsed and tokenized;
  // otherwise when the exchange ends).
  virtual void release_body() = 0;
  // The whole response, once.
  virtual void reply(Response r) = 0;
  // Instead of reply: `head`'s status and headers, then a chunked body that `source` yields on the
  // I/O thread; call wake() whenever the source has more.
  virtual void stream(Response head, std::shared_ptr<BodySource> source) = 0;
  virtual void wake() = 0;
  // `f` runs once, on the I/O thread, if the client goes away (closes, resets, or a write fails)
  // before the response is complete; at once when it already has.
  virtual void on_gone(std::function<void()> f) = 0;
  // Keeps `owner` (the handler's state) alive as long as the exchange: until its response has gone
  // out, or its client has gone.
  virtual void attach(std::shared_ptr<void> owner) = 0;
};

struct Limits {
  int max_connections = 10000;           // open connections; past it the longest-idle keep-alive
                                         // one is closed for the new one, else the new one is refused
  size_t max_request_bytes = 32u << 20;  // a request body, at most (413 beyond, before reading it)
  size_t max_header_bytes = 64u << 10;   // a request's headers (431 beyond)
  size_t max_buffered_body_bytes = 256u << 20;  // bodies held at once, from reading until parsed
  double keep_alive_s = 30;              // an idle keep-alive connection is closed after this
  double headers_timeout_s = 10;         // a request's headers complete within this of their first byte
  double body_timeout_s = 60;            // its body within this of its headers
  double write_timeout_s = 60;           // each write of a response (a client that stops reading)
};

// Counters for /metrics.
struct Stats {
  int64_t open_connections = 0, idle_connections = 0;
  int64_t accepted_total = 0, refused_total = 0, evicted_idle_total = 0;
  int64_t header_timeouts_total = 0, body_timeouts_total = 0, keep_alive_closes_total = 0;
  int64_t buffered_body_bytes = 0;
};

class Server {
 public:
  // `handler` runs on the I/O thread for each complete request: it must not block (hand slow work to
  // other threads). `decorate` sees every response before it goes out (the server's own errors
  // too, with an empty Request): to add headers (CORS), to count statuses.
  using Handler = std::function<void(std::shared_ptr<Exchange>)>;
  using Decorate = std::function<void(const Request&, Response&)>;
  Server(Limits limits, Handler handler, Decorate decorate);
  ~Server();

  // Binds host:port (0: any free port). Throws std::runtime_error naming the address.
  void bind(const std::string& host, int port);
  int port() const;
  // Serves on this thread until stop().
  void run();
  // Thread-safe: stops accepting and closes idle connections; responses in progress go on.
  void stop_accepting();
  // Thread-safe: closes every connection and ends run().
  void stop();
  Stats stats() const;
  int64_t active_exchanges() const;  // requests read and not yet answered in full

  struct Impl;  // http_server.cpp's connections reach it

 private:
  std::unique_ptr<Impl> impl_;
};

// An error body in OpenAI's shape: {"error": {"message", "type", "param": null, "code"}}.
std::string error_json(int status, const std::string& message, const std::string& code = "");

// Raises RLIMIT_NOFILE's soft limit to its hard limit; returns the soft limit now in force.
int64_t raise_fd_limit();

}  // namespace nanovllm::server::http
