// Finding a connection's socket by scanning /proc/self/fd, and peeking it for the peer's close.
#include "server/connection.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace nanovllm::server {
namespace {

// The address and port of a socket name, as httplib prints them (inet_ntop, no brackets).
bool name_of(const sockaddr_storage& ss, std::string& addr, int& port) {
  char buf[INET6_ADDRSTRLEN] = {0};
  if (ss.ss_family == AF_INET) {
    const auto& a = reinterpret_cast<const sockaddr_in&>(ss);
    inet_ntop(AF_INET, &a.sin_addr, buf, sizeof buf);
    port = ntohs(a.sin_port);
  } else if (ss.ss_family == AF_INET6) {
    const auto& a = reinterpret_cast<const sockaddr_in6&>(ss);
    inet_ntop(AF_INET6, &a.sin6_addr, buf, sizeof buf);
    port = ntohs(a.sin6_port);
  } else {
    return false;
  }
  addr = buf;
  return true;
}

// Calls f(fd, remote address, remote port, local port) for each connected TCP socket of this process.
template <class F>
void for_each_connection(F&& f) {
  DIR* dir = opendir("/proc/self/fd");
  if (!dir) return;
  while (dirent* e = readdir(dir)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    const int fd = std::atoi(e->d_name);
    sockaddr_storage peer{}, local{};
    socklen_t plen = sizeof peer, llen = sizeof local;
    if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &plen) != 0) continue;  // not a connected socket
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &llen) != 0) continue;
    std::string paddr, laddr;
    int pport = -1, lport = -1;
    if (!name_of(peer, paddr, pport) || !name_of(local, laddr, lport)) continue;
    if (!f(fd, paddr, pport, lport)) break;
  }
  closedir(dir);
}

}  // namespace

int find_connection_socket(const std::string& remote_addr, int remote_port, int local_port) {
  int found = -1;
  for_each_connection([&](int fd, const std::string& paddr, int pport, int lport) {
    if (pport == remote_port && lport == local_port && paddr == remote_addr) found = fd;
    return found < 0;
  });
  return found;
}

void shutdown_connections(int local_port) {
  for_each_connection([&](int fd, const std::string&, int, int lport) {
    if (lport == local_port) ::shutdown(fd, SHUT_RDWR);
    return true;
  });
}

bool peer_closed(int fd) {
  char c;
  const ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n > 0) return false;   // the client sent more (a pipelined request): still there
  if (n == 0) return true;   // orderly close
  return errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;  // reset, or the socket is gone
}

}  // namespace nanovllm::server
