// NcclGroup: the CUDA backend's tensor-parallel collectives, NCCL as shipped with the CUDA
// toolkit, loaded at run time (dlopen: a binary that never runs tensor parallelism needs no NCCL;
// `library` names it when the usual places lack it: BackendOptions::nccl_library). Every call is enqueued on the
// backend's stream, so it is captured into CUDA graphs with the kernels around it.
#pragma once
#include <cuda_runtime.h>

#include <atomic>
#include <cstddef>
#include <string>

#include "backend/tensor.h"

struct ncclComm;

namespace nanovllm::cuda {

class NcclGroup {
 public:
  // A new NCCL unique id (rank 0), as text.
  static std::string new_id(const std::string& library);
  // ncclCommInitRank on the current device; blocks until every rank has joined.
  NcclGroup(const std::string& library, const std::string& id, int rank, int world);
  ~NcclGroup();
  NcclGroup(const NcclGroup&) = delete;
  NcclGroup& operator=(const NcclGroup&) = delete;

  void all_reduce(void* data, size_t count, DType t, cudaStream_t s);
  // Rank 0's dst gets every rank's `count` elements at src, in rank order.
  void gather(const void* src, void* dst, size_t count, DType t, cudaStream_t s);
  // From any thread: ncclCommAbort, so kernels waiting on a dead peer end with an error.
  void abort();

 private:
  void check_alive() const;
  ncclComm* comm_ = nullptr;
  int rank_, world_;
  std::atomic<bool> aborted_{false};
};

}  // namespace nanovllm::cuda
