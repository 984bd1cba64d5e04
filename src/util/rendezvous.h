// Rendezvous: how the hosts of a tensor-parallel group find each other (torch.distributed's TCP
// store, reduced to what forming a group needs). Rank 0 listens on master_addr:master_port;
// every other rank connects (retrying until rank 0 is up) and says which rank of how many it is;
// when all have come, rank 0 sends each the group's id (an NCCL unique id) and every rank
// answers: a barrier. Two processes on one machine through 127.0.0.1 take exactly the path two
// hosts would.
#pragma once
#include <string>

namespace nanovllm {

struct RendezvousSpec {
  std::string master_addr = "127.0.0.1";  // rank 0's address (a name or an IPv4 address)
  int master_port = 29500;
  int world_size = 1;
  int rank = 0;
  double timeout_s = 60;  // for the whole group to form
};

// Forms the group; returns the id rank 0 passed as `id` (the other ranks pass anything). Throws
// std::runtime_error naming the peer or the address on a mismatch (another world size, a rank
// twice, another protocol), a refused or failed connection, or the timeout.
std::string rendezvous(const RendezvousSpec& spec, const std::string& id);

}  // namespace nanovllm
