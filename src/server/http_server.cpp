// http::Server: one I/O thread running an Asio io_context; one coroutine per connection reads a
// request (Beast's parser), hands it to the handler and writes what the handler answers. Deadlines
// are absolute time points on the stream, so a client that trickles bytes gains nothing.
#include "server/http_server.h"

#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <deque>
#include <list>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>
#include <unordered_set>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

namespace nanovllm::server::http {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;
constexpr auto kAwait = net::as_tuple(net::use_awaitable);

Clock::duration seconds(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

const char* status_type(int status) {
  if (status == 401) return "authentication_error";
  if (status == 404) return "not_found_error";
  if (status == 503) return "service_unavailable";
  if (status >= 500) return "server_error";
  return "invalid_request_error";
}

}  // namespace

std::string Request::header(std::string_view name) const {
  for (const auto& [k, v] : headers)
    if (k == name) return v;
  return "";
}

std::string error_json(int status, const std::string& message, const std::string& code) {
  nlohmann::json err = {{"message", message}, {"type", status_type(status)}, {"param", nullptr},
                        {"code", code.empty() ? nlohmann::json(nullptr) : nlohmann::json(code)}};
  return nlohmann::json{{"error", std::move(err)}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

int64_t raise_fd_limit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 1024;
  if (rl.rlim_cur < rl.rlim_max) {
    rlimit want = rl;
    want.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &want) == 0) rl = want;
  }
  return rl.rlim_cur == RLIM_INFINITY ? int64_t{1} << 30 : static_cast<int64_t>(rl.rlim_cur);
}

// ---- the body budget: bytes of request bodies held at once, granted in arrival order ----

class BodyBudget {
 public:
  explicit BodyBudget(size_t capacity) : available_(capacity) {}
  // Takes n bytes now (true), or queues `grant` to run (on whatever thread releases) once they are
  // taken for it; `id` names the wait for cancel().
  bool acquire(size_t n, uint64_t id, std::function<void()> grant) {
    std::lock_guard lk(mu_);
    if (waiters_.empty() && n <= available_) {
      available_ -= n;
      held_ += n;
      return true;
    }
    waiters_.push_back({n, id, std::move(grant)});
    return false;
  }
  // Gives up a queued wait; false when it was granted meanwhile (the caller then holds the bytes).
  bool cancel(uint64_t id) {
    std::lock_guard lk(mu_);
    for (auto it = waiters_.begin(); it != waiters_.end(); ++it)
      if (it->id == id) {
        waiters_.erase(it);
        return true;
      }
    return false;
  }
  void release(size_t n) {
    std::vector<std::function<void()>> grants;
    {
      std::lock_guard lk(mu_);
      available_ += n;
      held_ -= n;
      while (!waiters_.empty() && waiters_.front().n <= available_) {
        available_ -= waiters_.front().n;
        held_ += waiters_.front().n;
        grants.push_back(std::move(waiters_.front().grant));
        waiters_.pop_front();
      }
    }
    for (auto& g : grants) g();
  }
  size_t held() const {
    std::lock_guard lk(mu_);
    return held_;
  }

 private:
  struct Waiter {
    size_t n;
    uint64_t id;
    std::function<void()> grant;
  };
  mutable std::mutex mu_;
  size_t available_, held_ = 0;
  std::deque<Waiter> waiters_;
};

// Bytes of the budget one request holds; given back when released or destroyed (any thread).
class BodyLease {
 public:
  BodyLease() = default;
  BodyLease(BodyBudget* b, size_t n) : budget_(b), n_(n) {}
  BodyLease(BodyLease&& o) noexcept : budget_(std::exchange(o.budget_, nullptr)), n_(o.n_) {}
  BodyLease& operator=(BodyLease&& o) noexcept {
    release();
    budget_ = std::exchange(o.budget_, nullptr);
    n_ = o.n_;
    return *this;
  }
  ~BodyLease() { release(); }
  void release() {
    if (budget_) std::exchange(budget_, nullptr)->release(n_);
  }

 private:
  BodyBudget* budget_ = nullptr;
  size_t n_ = 0;
};

class Connection;

struct Server::Impl {
  Impl(Limits l, Handler h, Decorate d)
      : limits(l), handler(std::move(h)), decorate(std::move(d)), budget(l.max_buffered_body_bytes) {}

  Limits limits;
  Handler handler;
  Decorate decorate;
  net::io_context ioc{1};
  tcp::acceptor acceptor{ioc};
  BodyBudget budget;
  int port = 0;
  bool accepting = true;  // I/O thread

  // I/O thread only: every open connection, and the idle keep-alive ones oldest first.
  std::unordered_set<Connection*> conns;
  std::list<Connection*> idle;

  std::atomic<int64_t> accepted{0}, refused{0}, evicted{0}, header_timeouts{0}, body_timeouts{0},
      keep_alive_closes{0}, open{0}, idle_count{0}, exchanges{0};
  // Connections over the limit that may still ask for /health or /metrics (I/O thread).
  int probes = 0;
  static constexpr int kMaxProbes = 64;
  static constexpr double kProbeHeadersS = 2;
  std::atomic<uint64_t> next_wait_id{1};

  net::awaitable<void> accept_loop();
  void refuse(tcp::socket& sock);
  bool evict_idle();
};

// ---- one exchange ----

class ExchangeImpl final : public Exchange, public std::enable_shared_from_this<ExchangeImpl> {
 public:
  ExchangeImpl(Server::Impl& srv, std::weak_ptr<Connection> conn, Request req, BodyLease lease)
      : srv_(srv), conn_(std::move(conn)), req_(std::move(req)), lease_(std::move(lease)) {
    ++srv_.exchanges;
  }
  ~ExchangeImpl() override { --srv_.exchanges; }

  const Request& request() const override { return req_; }
  void release_body() override {
    std::lock_guard lk(body_mu_);
    std::string().swap(req_.body);
    lease_.release();
  }
  void reply(Response r) override {
    on_io([r = std::move(r)](ExchangeImpl& self) mutable {
      if (self.answered) return;
      self.answered = true;
      self.response = std::move(r);
    });
  }
  void stream(Response head, std::shared_ptr<BodySource> source) override {
    on_io([head = std::move(head), source = std::move(source)](ExchangeImpl& self) mutable {
      if (self.answered) return;
      self.answered = true;
      self.response = std::move(head);
      self.source = std::move(source);
    });
  }
  void wake() override {
    on_io([](ExchangeImpl&) {});
  }
  void attach(std::shared_ptr<void> owner) override {
    std::lock_guard lk(body_mu_);
    attached_ = std::move(owner);
  }
  void on_gone(std::function<void()> f) override {
    on_io([f = std::move(f)](ExchangeImpl& self) mutable {
      if (self.gone) f();
      else self.gone_callbacks.push_back(std::move(f));
    });
  }
  // I/O thread: the client left before the response was complete.
  void set_gone() {
    if (gone) return;
    gone = true;
    auto callbacks = std::move(gone_callbacks);
    for (auto& f : callbacks) f();
  }

  // I/O thread state.
  bool answered = false, gone = false, complete = false;
  std::optional<Response> response;
  std::shared_ptr<BodySource> source;
  std::vector<std::function<void()>> gone_callbacks;

 private:
  // Runs `f` on the I/O thread (at once when already there), then wakes the connection.
  template <class F>
  void on_io(F&& f);

  Server::Impl& srv_;
  std::weak_ptr<Connection> conn_;
  Request req_;
  std::mutex body_mu_;  // the body and the attachment, which workers set
  BodyLease lease_;
  std::shared_ptr<void> attached_;
};

// ---- one connection ----

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  // A `probe` came past the connection limit: it may ask for /health or /metrics, once; anything
  // else gets a 503.
  Connection(Server::Impl& srv, tcp::socket sock, bool probe)
      : srv_(srv), stream_(std::move(sock)), signal_(srv.ioc), accepted_at_(Clock::now()), probe_(probe) {
    if (probe_) ++srv_.probes;
    else srv_.conns.insert(this);
    ++srv_.open;
    boost::system::error_code ec;
    const auto ep = stream_.socket().remote_endpoint(ec);
    if (!ec) remote_ = ep.address().to_string();
  }
  ~Connection() {
    set_idle(false);
    if (probe_) --srv_.probes;
    else srv_.conns.erase(this);
    --srv_.open;
  }

  net::awaitable<void> run();
  // I/O thread: something for the current exchange happened.
  void notify() {
    signalled_ = true;
    signal_.cancel();
  }
  void close() {
    set_idle(false);
    boost::system::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.socket().close(ec);
    notify();
  }

 private:
  net::awaitable<void> wait_signal();
  // Reads one request; returns false when the connection is to close (an error answered or not).
  net::awaitable<bool> read_request(bool first, Request& out, BodyLease& lease, bool& keep_alive);
  net::awaitable<bool> read_body(bhttp::request_parser<bhttp::string_body>& parser, BodyLease& lease);
  net::awaitable<bool> respond(ExchangeImpl& ex, bool keep_alive);
  net::awaitable<bool> write_error(int status, const std::string& message, const Request* req = nullptr);
  friend struct Server::Impl;
  net::awaitable<bool> write_response(Response& r, const Request* req, bool keep_alive);
  void watch_for_close(const std::shared_ptr<ExchangeImpl>& ex);
  void set_idle(bool idle);

  Server::Impl& srv_;
  beast::tcp_stream stream_;
  beast::flat_buffer buf_;
  net::steady_timer signal_;
  bool signalled_ = false;
  bool idle_ = false;
  bool watching_ = false;
  std::list<Connection*>::iterator idle_it_;
  Clock::time_point accepted_at_;
  bool probe_ = false;
  std::string remote_;
};

template <class F>
void ExchangeImpl::on_io(F&& f) {
  auto run = [self = shared_from_this(), f = std::forward<F>(f)]() mutable {
    f(*self);
    if (auto c = self->conn_.lock()) c->notify();
  };
  if (srv_.ioc.get_executor().running_in_this_thread()) run();
  else net::post(srv_.ioc, std::move(run));
}

void Connection::set_idle(bool idle) {
  if (idle == idle_) return;
  idle_ = idle;
  if (idle) {
    idle_it_ = srv_.idle.insert(srv_.idle.end(), this);
    ++srv_.idle_count;
  } else {
    srv_.idle.erase(idle_it_);
    --srv_.idle_count;
  }
}

net::awaitable<void> Connection::wait_signal() {
  if (!signalled_) {
    signal_.expires_at(Clock::time_point::max());
    co_await signal_.async_wait(kAwait);
  }
  signalled_ = false;
}

net::awaitable<void> Connection::run() {
  auto self = shared_from_this();  // the coroutine keeps its connection
  bool first = true;
  for (;;) {
    Request req;
    BodyLease lease;
    bool keep_alive = true;
    if (!co_await read_request(first, req, lease, keep_alive)) break;
    first = false;
    if (probe_) {
      // Over the limit: status pages only (they cost nothing), then close.
      if (req.method != "GET" || (req.path != "/health" && req.path != "/metrics")) {
        co_await write_error(503, "the server is at its connection limit (--max-connections); retry later", &req);
        break;
      }
      keep_alive = false;
    }
    auto ex = std::make_shared<ExchangeImpl>(srv_, weak_from_this(), std::move(req), std::move(lease));
    srv_.handler(ex);
    const bool again = co_await respond(*ex, keep_alive && srv_.accepting);
    ex->complete = true;
    ex->release_body();
    if (!again) break;
  }
  close();
}

net::awaitable<bool> Connection::read_request(bool first, Request& out, BodyLease& lease, bool& keep_alive) {
  const Limits& lim = srv_.limits;
  // The request's first byte: within the keep-alive limit between requests, within the header
  // deadline on a new connection. An idle connection holds only its socket (the buffer is freed).
  if (buf_.size() == 0) {
    if (first) {
      stream_.expires_at(accepted_at_ + seconds(probe_ ? std::min(lim.headers_timeout_s, Server::Impl::kProbeHeadersS)
                                                        : lim.headers_timeout_s));
    } else {
      buf_.shrink_to_fit();
      stream_.expires_after(seconds(lim.keep_alive_s));
      set_idle(true);
    }
    auto [ec, n] = co_await stream_.async_read_some(buf_.prepare(1024), kAwait);
    set_idle(false);
    if (ec) {
      if (ec == beast::error::timeout) ++(first ? srv_.header_timeouts : srv_.keep_alive_closes);
      co_return false;
    }
    buf_.commit(n);
  }
  if (!first) stream_.expires_after(seconds(lim.headers_timeout_s));

  bhttp::request_parser<bhttp::string_body> parser;
  parser.header_limit(static_cast<uint32_t>(lim.max_header_bytes));
  parser.body_limit(boost::none);  // checked below, on Content-Length, before any body byte is read
  {
    auto [ec, n] = co_await bhttp::async_read_header(stream_, buf_, parser, kAwait);
    if (ec == beast::error::timeout) {
      ++srv_.header_timeouts;
      co_return false;
    }
    if (ec == bhttp::error::header_limit)
      co_return co_await write_error(431, "request headers over " + std::to_string(lim.max_header_bytes) + " bytes");
    if (ec == bhttp::error::end_of_stream || ec == net::error::eof || ec == net::error::connection_reset ||
        ec == net::error::operation_aborted)
      co_return false;
    if (ec) co_return co_await write_error(400, "malformed HTTP request: " + ec.message());
  }
  const auto& h = parser.get();
  out.method = std::string(h.method_string());
  out.target = std::string(h.target());
  out.path = out.target.substr(0, out.target.find('?'));
  out.remote = remote_;
  for (const auto& f : h) out.headers.emplace_back(lower(f.name_string()), std::string(f.value()));
  keep_alive = h.keep_alive();
  if (!parser.is_done()) {
    if (probe_) co_return co_await write_error(503, "the server is at its connection limit (--max-connections)");
    if (!co_await read_body(parser, lease)) co_return false;
  }
  out.body = std::move(parser.get().body());
  co_return true;
}

net::awaitable<bool> Connection::read_body(bhttp::request_parser<bhttp::string_body>& parser, BodyLease& lease) {
  const Limits& lim = srv_.limits;
  const auto deadline = Clock::now() + seconds(lim.body_timeout_s);
  size_t need = lim.max_request_bytes;  // a chunked body may grow to the limit
  if (auto cl = parser.content_length()) {
    if (*cl > lim.max_request_bytes)
      co_return co_await write_error(413, "request body of " + std::to_string(*cl) + " bytes is over the limit of " +
                                              std::to_string(lim.max_request_bytes) + " (--max-request-bytes)");
    need = static_cast<size_t>(*cl);
  }
  parser.body_limit(lim.max_request_bytes);
  // Memory for the body first, in arrival order among waiting connections; the wait counts
  // against the body deadline.
  const uint64_t wait_id = srv_.next_wait_id++;
  auto granted = std::make_shared<std::atomic<bool>>(false);
  auto self = shared_from_this();
  if (!srv_.budget.acquire(need, wait_id, [this, self, granted] {
        net::post(srv_.ioc, [this, self, granted] {
          *granted = true;
          notify();
        });
      })) {
    net::steady_timer timer(srv_.ioc, deadline);
    // Shared, not a reference to this frame: a handler already queued may run after it is gone.
    auto timed_out = std::make_shared<bool>(false);
    timer.async_wait([this, self, timed_out](boost::system::error_code ec) {
      if (!ec) {
        *timed_out = true;
        notify();
      }
    });
    while (!*granted && !*timed_out && stream_.socket().is_open()) co_await wait_signal();
    timer.cancel();
    if (!*granted) {
      if (!srv_.budget.cancel(wait_id)) {
        // Granted while we gave up: the bytes are ours; hand them straight back.
        srv_.budget.release(need);
      }
      ++srv_.body_timeouts;
      co_return co_await write_error(503, "the server holds too many request bodies; retry later");
    }
  }
  lease = BodyLease(&srv_.budget, need);
  if (beast::iequals(parser.get()[bhttp::field::expect], "100-continue")) {
    stream_.expires_at(deadline);
    static const std::string cont = "HTTP/1.1 100 Continue\r\n\r\n";
    auto [ec, n] = co_await net::async_write(stream_, net::buffer(cont), kAwait);
    if (ec) co_return false;
  }
  // The deadline by a timer of our own that cancels the read (the stream's own expiry would close
  // the socket, and the client would never hear why): then a 408, and the connection closes.
  stream_.expires_never();
  auto body_late = std::make_shared<bool>(false);
  net::steady_timer body_timer(srv_.ioc, deadline);
  body_timer.async_wait([this, self, body_late](boost::system::error_code tec) {
    if (tec) return;
    *body_late = true;
    boost::system::error_code ignored;
    stream_.socket().cancel(ignored);
  });
  auto [ec, n] = co_await bhttp::async_read(stream_, buf_, parser, kAwait);
  body_timer.cancel();
  if (ec && *body_late) {
    ++srv_.body_timeouts;
    co_return co_await write_error(408, "the request body did not arrive within " +
                                            std::to_string(static_cast<int>(lim.body_timeout_s)) + " s (--timeout-body)");
  }
  if (ec == bhttp::error::body_limit)
    co_return co_await write_error(413, "request body over the limit of " + std::to_string(lim.max_request_bytes) +
                                            " bytes (--max-request-bytes)");
  if (ec) co_return false;
  co_return true;
}

net::awaitable<bool> Connection::write_error(int status, const std::string& message, const Request* req) {
  Response r;
  r.status = status;
  r.body = error_json(status, message);
  if (status == 503) r.headers.emplace_back("Retry-After", "1");
  co_await write_response(r, req, false);
  if (status == 503 && probe_) ++srv_.refused;
  co_return false;
}

net::awaitable<bool> Connection::write_response(Response& r, const Request* req, bool keep_alive) {
  static const Request none;
  if (srv_.decorate) srv_.decorate(req ? *req : none, r);
  bhttp::response<bhttp::string_body> res{static_cast<bhttp::status>(r.status), 11};
  res.set(bhttp::field::server, "nanovllm");
  res.set(bhttp::field::content_type, r.content_type);
  for (const auto& [k, v] : r.headers) res.insert(k, v);
  if (keep_alive)
    res.set("Keep-Alive", "timeout=" + std::to_string(static_cast<int>(srv_.limits.keep_alive_s)));
  res.keep_alive(keep_alive);
  res.body() = std::move(r.body);
  res.prepare_payload();
  stream_.expires_after(seconds(srv_.limits.write_timeout_s));
  auto [ec, n] = co_await bhttp::async_write(stream_, res, kAwait);
  co_return !ec && keep_alive;
}

// While the handler works, a readable socket with nothing to read means the client has closed.
void Connection::watch_for_close(const std::shared_ptr<ExchangeImpl>& ex) {
  if (watching_) return;
  watching_ = true;
  std::weak_ptr<ExchangeImpl> wex = ex;
  stream_.socket().async_wait(tcp::socket::wait_read, [this, self = shared_from_this(), wex](boost::system::error_code ec) {
    watching_ = false;
    if (ec) return;
    char c;
    const ssize_t n = ::recv(stream_.socket().native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n > 0) return;  // a pipelined request: the client is still there
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
      if (auto e = wex.lock(); e && !e->complete) watch_for_close(e);
      return;
    }
    if (auto e = wex.lock()) e->set_gone();
    notify();
  });
}

net::awaitable<bool> Connection::respond(ExchangeImpl& ex, bool keep_alive) {
  auto exp = std::static_pointer_cast<ExchangeImpl>(ex.shared_from_this());
  watch_for_close(exp);
  while (!ex.answered && !ex.gone && stream_.socket().is_open()) co_await wait_signal();
  if (!ex.answered || ex.gone) {
    ex.set_gone();
    co_return false;
  }
  if (!ex.source) {
    const bool ok = co_await write_response(*ex.response, &ex.request(), keep_alive);
    if (!ok && !keep_alive) co_return false;
    if (!ok) ex.set_gone();
    co_return ok;
  }
  // A chunked stream: the head, then each piece the source has as it comes, then the last chunk.
  Response& head = *ex.response;
  if (srv_.decorate) srv_.decorate(ex.request(), head);
  bhttp::response<bhttp::empty_body> res{static_cast<bhttp::status>(head.status), 11};
  res.set(bhttp::field::server, "nanovllm");
  res.set(bhttp::field::content_type, head.content_type);
  for (const auto& [k, v] : head.headers) res.insert(k, v);
  if (keep_alive) res.set("Keep-Alive", "timeout=" + std::to_string(static_cast<int>(srv_.limits.keep_alive_s)));
  res.keep_alive(keep_alive);
  res.chunked(true);
  bhttp::response_serializer<bhttp::empty_body> sr(res);
  stream_.expires_after(seconds(srv_.limits.write_timeout_s));
  if (auto [ec, n] = co_await bhttp::async_write_header(stream_, sr, kAwait); ec) {
    ex.set_gone();
    co_return false;
  }
  std::string out;
  for (;;) {
    out.clear();
    const bool done = ex.source->read(out);
    if (!out.empty()) {
      stream_.expires_after(seconds(srv_.limits.write_timeout_s));
      auto [ec, n] = co_await net::async_write(stream_, bhttp::make_chunk(net::buffer(out)), kAwait);
      if (ec) {
        ex.set_gone();
        co_return false;
      }
    }
    if (done) break;
    if (out.empty()) {
      co_await wait_signal();
      if (ex.gone || !stream_.socket().is_open()) {
        ex.set_gone();
        co_return false;
      }
    }
  }
  stream_.expires_after(seconds(srv_.limits.write_timeout_s));
  auto [ec, n] = co_await net::async_write(stream_, bhttp::make_chunk_last(), kAwait);
  co_return !ec && keep_alive;
}

// ---- accepting ----

bool Server::Impl::evict_idle() {
  if (idle.empty()) return false;
  Connection* c = idle.front();
  c->close();  // its coroutine ends and frees it
  ++evicted;
  return true;
}

void Server::Impl::refuse(tcp::socket& sock) {
  static const std::string body = error_json(503, "the server is at its connection limit (--max-connections)");
  static const std::string msg = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
                                 "Connection: close\r\nContent-Length: " +
                                 std::to_string(body.size()) + "\r\n\r\n" + body;
  [[maybe_unused]] ssize_t n = ::send(sock.native_handle(), msg.data(), msg.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  boost::system::error_code ec;
  sock.shutdown(tcp::socket::shutdown_send, ec);
  sock.close(ec);
  ++refused;
}

net::awaitable<void> Server::Impl::accept_loop() {
  net::steady_timer backoff(ioc);
  for (;;) {
    auto [ec, sock] = co_await acceptor.async_accept(kAwait);
    if (!accepting || !acceptor.is_open()) co_return;
    if (ec) {
      // Out of descriptors (or another transient failure): the pending connection stays in the
      // backlog; wait a little rather than spin on it.
      backoff.expires_after(std::chrono::milliseconds(20));
      co_await backoff.async_wait(kAwait);
      continue;
    }
    // At the limit: the longest-idle keep-alive connection makes room; else a few may still ask
    // for /health or /metrics; past those, refused at once.
    bool probe = false;
    if (static_cast<int>(conns.size()) >= limits.max_connections && !evict_idle()) {
      if (probes >= kMaxProbes) {
        refuse(sock);
        continue;
      }
      probe = true;
    }
    ++accepted;
    sock.set_option(tcp::no_delay(true), ec);  // tokens are small writes; Nagle would hold them back
    auto c = std::make_shared<Connection>(*this, std::move(sock), probe);
    net::co_spawn(ioc, c->run(), [](std::exception_ptr e) {
      if (!e) return;
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& x) {
        std::fprintf(stderr, "nanovllm serve: connection failed: %s\n", x.what());
      }
    });
  }
}

// ---- Server ----

Server::Server(Limits limits, Handler handler, Decorate decorate)
    : impl_(std::make_unique<Impl>(limits, std::move(handler), std::move(decorate))) {}

Server::~Server() = default;

void Server::bind(const std::string& host, int port) {
  boost::system::error_code ec;
  const auto addr = net::ip::make_address(host, ec);
  if (ec) throw std::runtime_error("serve: '" + host + "' is not an IP address");
  tcp::endpoint ep(addr, static_cast<unsigned short>(port));
  auto& a = impl_->acceptor;
  a.open(ep.protocol(), ec);
  if (!ec) a.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) a.bind(ep, ec);
  // The system's largest backlog: hundreds of clients connecting at once must not lose handshakes.
  if (!ec) a.listen(SOMAXCONN, ec);
  if (ec)
    throw std::runtime_error("serve: cannot bind " + host + ":" + std::to_string(port) + " (" + ec.message() + ")");
  impl_->port = a.local_endpoint().port();
}

int Server::port() const { return impl_->port; }

void Server::run() {
  net::co_spawn(impl_->ioc, impl_->accept_loop(), net::detached);
  // run() returns on stop() only: once stop_accepting() has closed the listener and the idle
  // connections, the loop may have nothing left to wait on while the engine is still stopping.
  auto guard = net::make_work_guard(impl_->ioc);
  impl_->ioc.run();
}

void Server::stop_accepting() {
  net::post(impl_->ioc, [this] {
    Impl& s = *impl_;
    s.accepting = false;
    boost::system::error_code ec;
    s.acceptor.close(ec);
    const std::vector<Connection*> idle(s.idle.begin(), s.idle.end());
    for (Connection* c : idle) c->close();
  });
}

void Server::stop() {
  net::post(impl_->ioc, [this] {
    Impl& s = *impl_;
    s.accepting = false;
    boost::system::error_code ec;
    s.acceptor.close(ec);
    for (Connection* c : s.conns) c->close();
    // Closing ends each connection's coroutine within a turn or two of the loop; then stop.
    auto timer = std::make_shared<net::steady_timer>(s.ioc, std::chrono::milliseconds(50));
    timer->async_wait([this, timer](boost::system::error_code) { impl_->ioc.stop(); });
  });
}

Stats Server::stats() const {
  const Impl& s = *impl_;
  Stats st;
  st.open_connections = s.open.load();
  st.idle_connections = s.idle_count.load();
  st.accepted_total = s.accepted.load();
  st.refused_total = s.refused.load();
  st.evicted_idle_total = s.evicted.load();
  st.header_timeouts_total = s.header_timeouts.load();
  st.body_timeouts_total = s.body_timeouts.load();
  st.keep_alive_closes_total = s.keep_alive_closes.load();
  st.buffered_body_bytes = static_cast<int64_t>(s.budget.held());
  return st;
}

int64_t Server::active_exchanges() const { return impl_->exchanges.load(); }

}  // namespace nanovllm::server::http
