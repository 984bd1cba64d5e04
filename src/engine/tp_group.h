// Tensor parallelism on one host: rank 0 is the engine's own process (scheduler, block manager,
// sampler); ranks 1..N-1 are worker processes it starts, each with its own backend (its GPU),
// weights shard, KV cache and CUDA graphs (nano-vLLM's and vLLM's layout). Rank 0 hands every
// step's batch to the workers through a shared-memory control channel (the same bytes its own
// device gets), then all ranks run the same forward, meeting in the backend's collectives.
//
// A worker that dies or fails is noticed within a tick (a watchdog reaps the workers): the
// group is aborted, so collectives waiting on it fail, and every later call throws a message
// naming the rank and why. Workers exit when rank 0 goes (they watch their parent).
#pragma once
#include <sys/types.h>

#include <atomic>
#include <functional>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "backend/backend.h"
#include "nanovllm/config.h"
#include "util/shm.h"

namespace nanovllm {

// What rank 0 asks the workers to do.
enum class WorkerOp : uint32_t {
  none,
  profile_kv,   // decide how many KV blocks fit (CUDA: a profiling forward); reply: the count
  allocate_kv,  // allocate `value` blocks
  calibrate_kv, // an FP8 cache's scales: the calibration forward over the payload (random ids), together
  capture,      // capture the decode CUDA graphs
  forward,      // run the forward over the payload (the step's staging buffer)
  logits_of,    // the lm-head over `value` hidden rows whose indices are the payload
  shutdown,
};

struct WorkerCommand {
  WorkerOp op = WorkerOp::none;
  int32_t layout_tokens = 0, layout_seqs = 0, layout_rows = 0;  // BatchLayout of the payload
  int32_t num_tokens = 0, num_seqs = 0, num_rows = 0;           // the forward's inputs (inputs_at)
  int32_t max_seqlen_q = 0, max_seqlen_k = 0, is_prefill = 0;
  int32_t graph_batch = 0;  // > 0: replay the graph captured for this batch size
  int64_t value = 0;
};

// One rank's start-up figures, for the start-up lines.
struct RankInfo {
  std::string device;
  int64_t weight_bytes = 0;
  int64_t kv_blocks = 0;
};

class WorkerGroup {
 public:
  // Starts ranks 1..N-1 (N = config.tensor_parallel_size) and joins `backend` to their group as
  // rank 0; returns once every rank has joined. `payload_bytes` bounds a command's payload.
  // Throws naming the rank, with its error, when a worker cannot start.
  WorkerGroup(const EngineConfig& config, Backend& backend, size_t payload_bytes, const std::string& worker);
  ~WorkerGroup();  // shuts the workers down (kills those that do not exit within seconds)
  WorkerGroup(const WorkerGroup&) = delete;
  WorkerGroup& operator=(const WorkerGroup&) = delete;

  int world() const { return world_; }
  // Every worker runs `cmd` with `payload`: returns once they all have taken the payload (not
  // when they have finished: collectives in the forward meet the ranks).
  void send(const WorkerCommand& cmd, const void* payload = nullptr, size_t bytes = 0);
  // Waits until every worker has finished the last command; their replies, rank 1 first.
  std::vector<int64_t> wait_done();
  // Each worker's start-up figures (valid after wait_done of allocate_kv), rank 1 first.
  std::vector<RankInfo> worker_infos() const;
  std::vector<pid_t> worker_pids() const { return pids_; }
  // Throws the reason when a worker has died or the group was aborted.
  void check() const;

 private:
  struct Control;
  Control* control() const;
  friend int run_worker(const std::string& control_name, int rank);
  void watch();  // the watchdog thread
  void shutdown();  // stops the workers (nicely unless aborted) and reaps them; idempotent
  void wait_for(const std::function<bool()>& ready);
  void abort(const std::string& reason);

  Backend& backend_;
  int world_;
  SharedRegion region_;
  std::vector<pid_t> pids_;
  std::vector<bool> reaped_;
  uint32_t seq_ = 0;
  std::thread watchdog_;
  std::atomic<bool> stopping_{false};
  mutable std::mutex mu_;
  std::string reason_;  // set once, under mu_
  std::atomic<bool> aborted_{false};
};

// A worker process's main (`nanovllm worker --control NAME --rank R`; the Python package's
// worker): builds this rank's backend and model runner from rank 0's configuration and serves
// its commands until shutdown. Returns the process's exit code.
int run_worker(const std::string& control_name, int rank);

// The nanovllm executable workers run as when EngineConfig::worker_command is empty: `env`
// ($NANOVLLM_WORKER) when set, else `nanovllm` beside the running program or its library, else
// on PATH; throws saying where it looked.
std::string find_worker_executable(const std::string& env);

}  // namespace nanovllm
