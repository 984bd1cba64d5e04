// The handler's own TCP connection, which cpp-httplib 0.11 does not hand to handlers: found by its
// addresses, and polled to learn that the client has gone while its request still runs.
#pragma once
#include <string>

namespace nanovllm::server {

// The fd of this process's TCP socket from local_port to remote_addr:remote_port, or -1. The
// handler's connection stays open while the handler runs, so the fd cannot change meanwhile.
int find_connection_socket(const std::string& remote_addr, int remote_port, int local_port);

// Shuts down (both directions) every connected TCP socket of this process whose local port is
// local_port: at server shutdown, wakes the HTTP threads that wait on idle keep-alive connections,
// which cpp-httplib 0.11 would otherwise let run out their whole keep-alive timeout.
void shutdown_connections(int local_port);

// True when the peer has closed or reset the connection (a pending request byte is not a close).
bool peer_closed(int fd);

}  // namespace nanovllm::server
