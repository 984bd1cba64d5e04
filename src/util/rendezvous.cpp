#include "util/rendezvous.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <thread>
#include <vector>

namespace nanovllm {
namespace {

constexpr uint32_t kMagic = 0x4e56525a;  // "NVRZ"
constexpr uint32_t kVersion = 1;
using Clock = std::chrono::steady_clock;

struct Fd {
  int fd = -1;
  explicit Fd(int f = -1) : fd(f) {}
  Fd(Fd&& o) noexcept : fd(o.fd) { o.fd = -1; }
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      if (fd >= 0) close(fd);
      fd = o.fd;
      o.fd = -1;
    }
    return *this;
  }
  ~Fd() {
    if (fd >= 0) close(fd);
  }
};

std::string where(const RendezvousSpec& s) { return s.master_addr + ":" + std::to_string(s.master_port); }

int ms_left(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left > 0 ? static_cast<int>(std::min<long long>(left, 1 << 30)) : 0;
}

// Waits until fd is ready for `events`; throws `what` on the timeout.
void wait_ready(int fd, short events, Clock::time_point deadline, const std::string& what) {
  for (;;) {
    pollfd p{fd, events, 0};
    const int n = poll(&p, 1, ms_left(deadline));
    if (n > 0) return;
    if (n == 0) throw std::runtime_error(what + ": timed out");
    if (errno != EINTR) throw std::runtime_error(what + ": poll: " + std::strerror(errno));
  }
}

void send_all(int fd, const void* data, size_t n, Clock::time_point deadline, const std::string& what) {
  const char* p = static_cast<const char*>(data);
  while (n) {
    wait_ready(fd, POLLOUT, deadline, what);
    const ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
    if (k < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (k <= 0) throw std::runtime_error(what + ": send: " + std::strerror(errno));
    p += k;
    n -= static_cast<size_t>(k);
  }
}

void recv_all(int fd, void* data, size_t n, Clock::time_point deadline, const std::string& what) {
  char* p = static_cast<char*>(data);
  while (n) {
    wait_ready(fd, POLLIN, deadline, what);
    const ssize_t k = recv(fd, p, n, 0);
    if (k < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (k == 0) throw std::runtime_error(what + ": the peer closed the connection");
    if (k < 0) throw std::runtime_error(what + ": recv: " + std::strerror(errno));
    p += k;
    n -= static_cast<size_t>(k);
  }
}

void send_u32(int fd, uint32_t v, Clock::time_point d, const std::string& what) {
  v = htonl(v);
  send_all(fd, &v, 4, d, what);
}
uint32_t recv_u32(int fd, Clock::time_point d, const std::string& what) {
  uint32_t v = 0;
  recv_all(fd, &v, 4, d, what);
  return ntohl(v);
}
void send_text(int fd, const std::string& s, Clock::time_point d, const std::string& what) {
  send_u32(fd, static_cast<uint32_t>(s.size()), d, what);
  send_all(fd, s.data(), s.size(), d, what);
}
std::string recv_text(int fd, Clock::time_point d, const std::string& what) {
  const uint32_t n = recv_u32(fd, d, what);
  if (n > (1u << 20)) throw std::runtime_error(what + ": a message of " + std::to_string(n) + " bytes");
  std::string s(n, '\0');
  recv_all(fd, s.data(), n, d, what);
  return s;
}

sockaddr_in resolve(const RendezvousSpec& s) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const int e = getaddrinfo(s.master_addr.c_str(), nullptr, &hints, &res);
  if (e != 0 || !res) throw std::runtime_error("rendezvous at " + where(s) + ": cannot resolve: " + gai_strerror(e));
  sockaddr_in a = *reinterpret_cast<sockaddr_in*>(res->ai_addr);
  freeaddrinfo(res);
  a.sin_port = htons(static_cast<uint16_t>(s.master_port));
  return a;
}

std::string serve(const RendezvousSpec& s, const std::string& id, Clock::time_point deadline) {
  const std::string at = "rendezvous at " + where(s);
  Fd listener(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (listener.fd < 0) throw std::runtime_error(at + ": socket: " + std::strerror(errno));
  const int one = 1;
  setsockopt(listener.fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr = resolve(s);
  if (bind(listener.fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0)
    throw std::runtime_error(at + ": cannot listen (bind): " + std::strerror(errno));
  if (listen(listener.fd, 64) != 0) throw std::runtime_error(at + ": listen: " + std::strerror(errno));

  std::vector<Fd> peers(s.world_size);
  for (int joined = 1; joined < s.world_size;) {
    wait_ready(listener.fd, POLLIN, deadline,
               at + ": waiting for " + std::to_string(s.world_size - joined) + " of " +
                   std::to_string(s.world_size - 1) + " ranks");
    Fd c(accept4(listener.fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (c.fd < 0) continue;
    setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    // Hello: magic, version, world size, rank. A stranger or a mismatch is told why and dropped.
    std::string problem;
    uint32_t magic = 0, version = 0, world = 0, rank = 0;
    try {
      magic = recv_u32(c.fd, deadline, at);
      if (magic == kMagic) {
        version = recv_u32(c.fd, deadline, at);
        world = recv_u32(c.fd, deadline, at);
        rank = recv_u32(c.fd, deadline, at);
      }
    } catch (const std::exception&) {
      continue;  // it went away: not one of ours, or it will retry
    }
    if (magic != kMagic || version != kVersion) problem = "another protocol or nanovllm version";
    else if (static_cast<int>(world) != s.world_size)
      problem = "world size " + std::to_string(world) + ", rank 0 has " + std::to_string(s.world_size);
    else if (rank < 1 || static_cast<int>(rank) >= s.world_size) problem = "rank " + std::to_string(rank) + " is outside the group";
    else if (peers[rank].fd >= 0) problem = "rank " + std::to_string(rank) + " joined twice";
    if (!problem.empty()) {
      try {
        send_u32(c.fd, 1, deadline, at);
        send_text(c.fd, problem, deadline, at);
      } catch (const std::exception&) {
      }
      if (magic == kMagic) throw std::runtime_error(at + ": " + problem);
      continue;
    }
    peers[rank] = std::move(c);
    ++joined;
  }
  for (int r = 1; r < s.world_size; ++r) {
    send_u32(peers[r].fd, 0, deadline, at);
    send_text(peers[r].fd, id, deadline, at);
  }
  for (int r = 1; r < s.world_size; ++r)
    if (recv_u32(peers[r].fd, deadline, at + ": rank " + std::to_string(r)) != kMagic)
      throw std::runtime_error(at + ": rank " + std::to_string(r) + " answered wrongly");
  return id;
}

std::string join(const RendezvousSpec& s, Clock::time_point deadline) {
  const std::string at = "rendezvous at " + where(s) + " (rank " + std::to_string(s.rank) + ")";
  const sockaddr_in addr = resolve(s);
  for (;;) {  // rank 0 may not be listening yet
    Fd c(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (c.fd < 0) throw std::runtime_error(at + ": socket: " + std::strerror(errno));
    if (connect(c.fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
      if (Clock::now() >= deadline) throw std::runtime_error(at + ": cannot connect: " + std::strerror(errno));
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    const int one = 1;
    setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    send_u32(c.fd, kMagic, deadline, at);
    send_u32(c.fd, kVersion, deadline, at);
    send_u32(c.fd, static_cast<uint32_t>(s.world_size), deadline, at);
    send_u32(c.fd, static_cast<uint32_t>(s.rank), deadline, at);
    const uint32_t status = recv_u32(c.fd, deadline, at);
    const std::string text = recv_text(c.fd, deadline, at);
    if (status != 0) throw std::runtime_error(at + ": rank 0 refused: " + text);
    send_u32(c.fd, kMagic, deadline, at);
    return text;
  }
}

}  // namespace

std::string rendezvous(const RendezvousSpec& s, const std::string& id) {
  if (s.world_size < 1 || s.rank < 0 || s.rank >= s.world_size)
    throw std::invalid_argument("rendezvous: rank " + std::to_string(s.rank) + " of " + std::to_string(s.world_size));
  if (s.master_port < 1 || s.master_port > 65535)
    throw std::invalid_argument("rendezvous: master_port " + std::to_string(s.master_port) + " is not a TCP port");
  if (s.world_size == 1) return id;
  const auto deadline = Clock::now() + std::chrono::milliseconds(static_cast<long long>(s.timeout_s * 1000));
  return s.rank == 0 ? serve(s, id, deadline) : join(s, deadline);
}

}  // namespace nanovllm
