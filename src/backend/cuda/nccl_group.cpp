#include "backend/cuda/nccl_group.h"

#include <nccl.h>

#include <mutex>
#include <stdexcept>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/dynlib.h"

namespace nanovllm::cuda {
namespace {

// The NCCL entry points we use, from the library dlopen found.
struct Api {
  ncclResult_t (*GetUniqueId)(ncclUniqueId*);
  ncclResult_t (*CommInitRank)(ncclComm_t*, int, ncclUniqueId, int);
  ncclResult_t (*CommDestroy)(ncclComm_t);
  ncclResult_t (*CommAbort)(ncclComm_t);
  ncclResult_t (*AllReduce)(const void*, void*, size_t, ncclDataType_t, ncclRedOp_t, ncclComm_t, cudaStream_t);
  ncclResult_t (*Send)(const void*, size_t, ncclDataType_t, int, ncclComm_t, cudaStream_t);
  ncclResult_t (*Recv)(void*, size_t, ncclDataType_t, int, ncclComm_t, cudaStream_t);
  ncclResult_t (*GroupStart)();
  ncclResult_t (*GroupEnd)();
  const char* (*GetErrorString)(ncclResult_t);
};

// Loads NCCL on the first call (from `library` when given, else the usual places).
const Api& api(const std::string& library = {}) {
  static Api a{};
  static std::string error;
  static std::once_flag once;
  std::call_once(once, [&library] {
    std::vector<std::string> tried;
    if (!library.empty()) tried.push_back(library);
    tried.insert(tried.end(), {"libnccl.so.2", module_dir() + "/libnccl.so.2", module_dir() + "/lib/libnccl.so.2",
                               "/usr/local/cuda/lib/libnccl.so.2", "/usr/local/cuda/lib64/libnccl.so.2",
                               "/usr/lib/x86_64-linux-gnu/libnccl.so.2"});
    std::string paths;
    void* lib = open_first(tried, &paths);
    if (!lib) {
      error = "NCCL not found (tensor parallelism on CUDA needs libnccl.so.2): tried " + paths +
              "; set NANOVLLM_NCCL_LIBRARY to its path";
      return;
    }
    auto sym = [&](auto& fn, const char* name) { bind_symbol(lib, fn, name, "NCCL", error); };
    sym(a.GetUniqueId, "ncclGetUniqueId");
    sym(a.CommInitRank, "ncclCommInitRank");
    sym(a.CommDestroy, "ncclCommDestroy");
    sym(a.CommAbort, "ncclCommAbort");
    sym(a.AllReduce, "ncclAllReduce");
    sym(a.Send, "ncclSend");
    sym(a.Recv, "ncclRecv");
    sym(a.GroupStart, "ncclGroupStart");
    sym(a.GroupEnd, "ncclGroupEnd");
    sym(a.GetErrorString, "ncclGetErrorString");
  });
  if (!error.empty()) throw std::runtime_error(error);
  return a;
}

void check_nccl(ncclResult_t r, const char* what) {
  if (r != ncclSuccess)
    throw std::runtime_error(std::string("NCCL ") + what + " failed: " + api().GetErrorString(r));
}

ncclDataType_t nccl_type(DType t) {
  if (t == DType::bf16) return ncclBfloat16;
  if (t == DType::f32) return ncclFloat32;
  if (t == DType::f16) return ncclFloat16;
  throw std::invalid_argument(std::string("NCCL collective: unsupported dtype ") + dtype_name(t));
}

}  // namespace

std::string NcclGroup::new_id(const std::string& library) {
  ncclUniqueId id;
  check_nccl(api(library).GetUniqueId(&id), "ncclGetUniqueId");
  static const char* hex = "0123456789abcdef";
  std::string s;
  for (unsigned char c : id.internal) {
    s += hex[c >> 4];
    s += hex[c & 15];
  }
  return s;
}

NcclGroup::NcclGroup(const std::string& library, const std::string& id_text, int rank, int world)
    : rank_(rank), world_(world) {
  ncclUniqueId id;
  if (id_text.size() != 2 * sizeof(id.internal))
    throw std::invalid_argument("NCCL group id of " + std::to_string(id_text.size()) + " characters, expected " +
                                std::to_string(2 * sizeof(id.internal)));
  auto nibble = [&](char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    throw std::invalid_argument("NCCL group id: not hexadecimal");
  };
  for (size_t i = 0; i < sizeof(id.internal); ++i)
    id.internal[i] = static_cast<char>(nibble(id_text[2 * i]) << 4 | nibble(id_text[2 * i + 1]));
  ncclComm_t comm = nullptr;
  check_nccl(api(library).CommInitRank(&comm, world, id, rank), "ncclCommInitRank");
  comm_ = comm;
}

NcclGroup::~NcclGroup() {
  if (comm_ && !aborted_.load()) api().CommDestroy(comm_);
}

void NcclGroup::check_alive() const {
  if (aborted_.load()) throw std::runtime_error("NCCL group aborted (a rank died)");
}

void NcclGroup::all_reduce(void* data, size_t count, DType t, cudaStream_t s) {
  check_alive();
  check_nccl(api().AllReduce(data, data, count, nccl_type(t), ncclSum, comm_, s), "ncclAllReduce");
}

void NcclGroup::gather(const void* src, void* dst, size_t count, DType t, cudaStream_t s) {
  check_alive();
  const size_t bytes = count * dtype_size(t);
  const ncclDataType_t nt = nccl_type(t);
  if (rank_ == 0) check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s), "gather", "cudaMemcpyAsync");
  check_nccl(api().GroupStart(), "ncclGroupStart");
  if (rank_ == 0) {
    for (int r = 1; r < world_; ++r)
      check_nccl(api().Recv(static_cast<char*>(dst) + r * bytes, count, nt, r, comm_, s), "ncclRecv");
  } else {
    check_nccl(api().Send(src, count, nt, 0, comm_, s), "ncclSend");
  }
  check_nccl(api().GroupEnd(), "ncclGroupEnd");
}

void NcclGroup::abort() {
  if (!comm_ || aborted_.exchange(true)) return;
  api().CommAbort(comm_);
}

}  // namespace nanovllm::cuda
