// WorkerGroup (rank 0's side of tensor parallelism) and run_worker (the other ranks' main).
//
// The control channel is one shared-memory region: rank 0's configuration and the backend
// group's id, then a command slot (WorkerCommand + payload) that rank 0 fills and publishes by
// bumping `seq`, and one record per rank that the worker updates (hello, acked, done, reply,
// error), bumping `progress`. Both words are futexes: a side waits by sleeping on one.
#include "engine/tp_group.h"

#include <dlfcn.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <type_traits>

#include "engine/model_runner.h"
#include "model/hf_config.h"
#include "util/env_options.h"

extern char** environ;

namespace nanovllm {
namespace {

constexpr uint32_t kMagic = 0x4e56574b;  // "NVWK"
constexpr int kMaxRanks = 64;
// A worker of another build would read the channel differently: it refuses to run.
constexpr const char* kStamp = "nanovllm tp " __DATE__ " " __TIME__;

// The configuration a worker needs, as JSON: every field but the device, listed once for both
// directions (f(name, member)). A field added to EngineConfig changes its size: add it here too,
// then update the size.
static_assert(sizeof(EngineConfig) == 352, "EngineConfig changed: update config_fields");

template <class Config, class F>
void config_fields(Config& c, F&& f) {
  f("model", c.model);
  f("max_num_batched_tokens", c.max_num_batched_tokens);
  f("max_num_seqs", c.max_num_seqs);
  f("max_model_len", c.max_model_len);
  f("gpu_memory_utilization", c.gpu_memory_utilization);
  f("tensor_parallel_size", c.tensor_parallel_size);
  f("enforce_eager", c.enforce_eager);
  f("kvcache_block_size", c.kvcache_block_size);
  f("num_kvcache_blocks", c.num_kvcache_blocks);
  f("seed", c.seed);
  f("enable_prefix_caching", c.enable_prefix_caching);
  f("scheduling_policy", c.scheduling_policy);
  f("cpu_kvcache_space_gb", c.cpu_kvcache_space_gb);
  f("num_threads", c.num_threads);
  f("max_logprobs", c.max_logprobs);
  f("generation_config", c.generation_config);
  f("chat_template", c.chat_template);
  f("worker_command", c.worker_command);
  f("nnodes", c.nnodes);
  f("node_rank", c.node_rank);
  f("master_addr", c.master_addr);
  f("master_port", c.master_port);
  f("kv_cache_dtype", c.kv_cache_dtype);
  f("calculate_kv_scales", c.calculate_kv_scales);
  f("quantization", c.quantization);
}

std::string config_to_json(const EngineConfig& c) {
  nlohmann::json j;
  config_fields(c, [&](const char* name, const auto& v) { j[name] = v; });
  j["device"] = std::string(to_string(c.device.value_or(DeviceKind::cpu)));
  return j.dump();
}

EngineConfig config_from_json(const std::string& text) {
  const nlohmann::json j = nlohmann::json::parse(text);
  EngineConfig c;
  config_fields(c, [&](const char* name, auto& v) { v = j.at(name).get<std::decay_t<decltype(v)>>(); });
  c.device = parse_device(j.at("device").get<std::string>());
  return c;
}

// Copies `s` into a fixed field, cut to fit.
template <size_t N>
void put(char (&dst)[N], const std::string& s) {
  const size_t n = std::min(s.size(), N - 1);
  std::memcpy(dst, s.data(), n);
  dst[n] = 0;
}

std::string describe_exit(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    const char* name = sigabbrev_np(sig);
    return "was killed by signal " + std::to_string(sig) + (name ? std::string(" (SIG") + name + ")" : "");
  }
  return "stopped (status " + std::to_string(status) + ")";
}

bool is_executable_file(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && access(path.c_str(), X_OK) == 0;
}

std::string dir_of(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

}  // namespace

struct WorkerGroup::Control {
  uint32_t magic;
  uint32_t world;
  char stamp[128];
  int32_t parent_pid;
  char group_id[512];
  char config[32768];
  uint64_t payload_capacity;
  std::atomic<uint32_t> seq;       // commands published (workers sleep on it)
  std::atomic<uint32_t> progress;  // bumped by a worker after every change of its record (rank 0 sleeps on it)
  std::atomic<uint32_t> aborted;
  WorkerCommand cmd;
  struct Rank {
    std::atomic<uint32_t> hello;  // its backend exists: it is joining the group
    std::atomic<uint32_t> acked;  // the last command whose payload it has taken
    std::atomic<uint32_t> done;   // the last command it has finished
    int64_t reply;
    int64_t weight_bytes, kv_blocks;
    char device[128];
    char error[2048];
  } rank[kMaxRanks];

  static size_t payload_offset() { return (sizeof(Control) + 63) / 64 * 64; }
  char* payload() { return reinterpret_cast<char*>(this) + payload_offset(); }
  void bump_progress() {
    progress.fetch_add(1, std::memory_order_acq_rel);
    wake_all(progress);
  }
};

WorkerGroup::Control* WorkerGroup::control() const { return static_cast<Control*>(region_.data()); }

std::string find_worker_executable(const std::string& env) {
  if (!env.empty()) {
    if (!is_executable_file(env))
      throw std::runtime_error("NANOVLLM_WORKER=" + env + " is not an executable file");
    return env;
  }
  std::vector<std::string> tried;
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&find_worker_executable), &info) && info.dli_fname)
    tried.push_back(dir_of(std::filesystem::absolute(info.dli_fname).string()) + "/nanovllm");
  std::error_code ec;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) tried.push_back(dir_of(self.string()) + "/nanovllm");
  if (const char* path = std::getenv("PATH")) {
    std::string p = path;
    for (size_t at = 0; at <= p.size();) {
      const size_t colon = std::min(p.find(':', at), p.size());
      if (colon > at) tried.push_back(p.substr(at, colon - at) + "/nanovllm");
      at = colon + 1;
    }
  }
  for (const std::string& t : tried)
    if (is_executable_file(t)) return t;
  std::string msg = "tensor parallelism: the nanovllm executable (which runs the other ranks) was not found; tried";
  for (const std::string& t : tried) msg += " " + t;
  throw std::runtime_error(msg + "; set NANOVLLM_WORKER to its path");
}

WorkerGroup::WorkerGroup(const EngineConfig& config, Backend& backend, size_t payload_bytes, const std::string& worker)
    : backend_(backend), world_(config.tensor_parallel_size) {
  if (world_ < 2 || world_ > kMaxRanks)
    throw std::invalid_argument("tensor_parallel_size " + std::to_string(world_) + ": a group has 2.." +
                                std::to_string(kMaxRanks) + " ranks");
  std::vector<std::string> argv0 = config.worker_command;
  if (argv0.empty()) argv0 = {find_worker_executable(worker), "worker"};

  region_ = SharedRegion::create("ctl", Control::payload_offset() + payload_bytes);
  Control* c = new (region_.data()) Control{};
  c->magic = kMagic;
  c->world = static_cast<uint32_t>(world_);
  put(c->stamp, kStamp);
  c->parent_pid = getpid();
  const std::string json = config_to_json(config);
  if (json.size() >= sizeof(c->config))
    throw std::invalid_argument("tensor parallelism: the configuration is too long to hand to the workers (" +
                                std::to_string(json.size()) + " bytes)");
  put(c->config, json);
  c->payload_capacity = payload_bytes;
  const std::string group_id = backend_.new_group_id(world_);
  put(c->group_id, group_id);

  reaped_.assign(world_, false);
  pids_.assign(world_ - 1, -1);
  for (int r = 1; r < world_; ++r) {
    std::vector<std::string> args = argv0;
    args.insert(args.end(), {"--control", region_.name(), "--rank", std::to_string(r)});
    std::vector<char*> cargs;
    for (std::string& a : args) cargs.push_back(a.data());
    cargs.push_back(nullptr);
    pid_t pid = -1;
    const int err = posix_spawn(&pid, cargs[0], nullptr, nullptr, cargs.data(), environ);
    if (err != 0) {
      abort("tensor-parallel rank " + std::to_string(r) + ": cannot start " + args[0] + ": " + std::strerror(err));
      break;
    }
    pids_[r - 1] = pid;
  }
  watchdog_ = std::thread([this] { watch(); });
  try {
    check();
    // Every worker has its backend before rank 0 joins (an NCCL join waits for all, unabortably).
    wait_for([&] {
      for (int r = 1; r < world_; ++r)
        if (!control()->rank[r].hello.load(std::memory_order_acquire)) return false;
      return true;
    });
    backend_.join_group(group_id, 0, world_);
    check();
  } catch (...) {
    shutdown();  // no destructor runs after a constructor throws
    throw;
  }
}

WorkerGroup::~WorkerGroup() { shutdown(); }

void WorkerGroup::shutdown() {
  if (pids_.empty() && !watchdog_.joinable()) return;
  stopping_ = true;
  if (watchdog_.joinable()) watchdog_.join();
  Control* c = control();
  if (!aborted_) {
    // Ask nicely: every worker leaves its loop and exits.
    c->cmd = WorkerCommand{.op = WorkerOp::shutdown};
    c->seq.store(++seq_, std::memory_order_release);
    wake_all(c->seq);
  } else {
    c->aborted.store(1, std::memory_order_release);
    wake_all(c->seq);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(aborted_ ? 2 : 10);
  for (size_t i = 0; i < pids_.size(); ++i) {
    const pid_t pid = pids_[i];
    if (pid <= 0 || reaped_[i + 1]) continue;
    int status = 0;
    while (waitpid(pid, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    reaped_[i + 1] = true;
  }
  pids_.clear();
}

void WorkerGroup::watch() {
  while (!stopping_) {
    for (int r = 1; r < world_; ++r) {
      const pid_t pid = pids_[r - 1];
      if (pid <= 0 || reaped_[r]) continue;
      int status = 0;
      if (waitpid(pid, &status, WNOHANG) != pid) continue;
      reaped_[r] = true;
      if (stopping_) continue;
      const char* err = control()->rank[r].error;
      abort("tensor-parallel rank " + std::to_string(r) + " (pid " + std::to_string(pid) + ") " +
            (err[0] ? std::string("failed: ") + err : describe_exit(status)));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

void WorkerGroup::abort(const std::string& reason) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (reason_.empty()) reason_ = reason;
  }
  aborted_ = true;
  Control* c = control();
  c->aborted.store(1, std::memory_order_release);
  wake_all(c->seq);
  c->bump_progress();
  backend_.abort_group(reason);
}

void WorkerGroup::check() const {
  if (!aborted_) return;
  std::lock_guard<std::mutex> lock(mu_);
  throw std::runtime_error(reason_ + "; the engine cannot continue");
}

void WorkerGroup::wait_for(const std::function<bool()>& ready) {
  Control* c = control();
  for (;;) {
    const uint32_t v = c->progress.load(std::memory_order_acquire);
    check();
    if (ready()) return;
    wait_while_equal(c->progress, v, [this] { check(); }, 5);
  }
}

void WorkerGroup::send(const WorkerCommand& cmd, const void* payload, size_t bytes) {
  Control* c = control();
  if (bytes > c->payload_capacity)
    throw std::logic_error("tensor parallelism: a payload of " + std::to_string(bytes) + " bytes (capacity " +
                           std::to_string(c->payload_capacity) + ")");
  const uint32_t prev = seq_;
  wait_for([&] {  // every worker has taken the previous payload
    for (int r = 1; r < world_; ++r)
      if (c->rank[r].acked.load(std::memory_order_acquire) != prev) return false;
    return true;
  });
  c->cmd = cmd;
  if (bytes) std::memcpy(c->payload(), payload, bytes);
  c->seq.store(++seq_, std::memory_order_release);
  wake_all(c->seq);
}

std::vector<int64_t> WorkerGroup::wait_done() {
  Control* c = control();
  wait_for([&] {
    for (int r = 1; r < world_; ++r)
      if (c->rank[r].done.load(std::memory_order_acquire) != seq_) return false;
    return true;
  });
  std::vector<int64_t> replies;
  for (int r = 1; r < world_; ++r) replies.push_back(c->rank[r].reply);
  return replies;
}

std::vector<RankInfo> WorkerGroup::worker_infos() const {
  std::vector<RankInfo> infos;
  for (int r = 1; r < world_; ++r) {
    const Control::Rank& k = control()->rank[r];
    infos.push_back({k.device, k.weight_bytes, k.kv_blocks});
  }
  return infos;
}

// ---- the worker's side ----

int run_worker(const std::string& control_name, int rank) {
  signal(SIGINT, SIG_IGN);  // Ctrl-C reaches the whole process group; rank 0 decides when workers stop
  SharedRegion region = SharedRegion::open(control_name);
  auto* c = static_cast<WorkerGroup::Control*>(region.data());
  if (region.size() < sizeof(WorkerGroup::Control) || c->magic != kMagic)
    throw std::runtime_error("'" + control_name + "' is not a nanovllm tensor-parallel control channel");
  if (rank < 1 || rank >= static_cast<int>(c->world))
    throw std::invalid_argument("worker rank " + std::to_string(rank) + " of a group of " + std::to_string(c->world));
  WorkerGroup::Control::Rank& me = c->rank[rank];
  auto fail = [&](const std::string& what) {
    put(me.error, what);
    c->bump_progress();
  };
  if (std::strncmp(c->stamp, kStamp, sizeof(c->stamp)) != 0) {
    fail(std::string("this worker is another build of nanovllm (") + kStamp + ") than rank 0 (" + c->stamp +
         "): point NANOVLLM_WORKER at rank 0's own nanovllm executable");
    return 2;
  }
  // Leave when rank 0 goes or gives up, wherever this process is blocked (a collective included).
  const pid_t parent = c->parent_pid;
  std::thread([c, parent] {
    for (;;) {
      if (getppid() != parent || c->aborted.load(std::memory_order_acquire)) _exit(3);
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }).detach();
  try {
    const EngineConfig config = config_from_json(c->config);
    const ModelConfig model_config = load_model_config(config.model);
    std::unique_ptr<Backend> backend = make_backend_for(config, env_options(), rank);
    me.hello.store(1, std::memory_order_release);
    c->bump_progress();
    backend->join_group(c->group_id, rank, static_cast<int>(c->world));
    ModelRunner runner(config, model_config, std::move(backend), rank);
    put(me.device, runner.backend().name());
    me.weight_bytes = static_cast<int64_t>(runner.weight_bytes());
    std::vector<char> payload(c->payload_capacity);
    uint32_t seen = 0;
    for (;;) {
      seen = wait_while_equal(c->seq, seen, [c] {
        if (c->aborted.load(std::memory_order_acquire)) _exit(3);
      });
      const WorkerCommand cmd = c->cmd;
      size_t bytes = 0;
      if (cmd.op == WorkerOp::forward)
        bytes = BatchLayout(cmd.layout_tokens, cmd.layout_seqs, cmd.layout_rows,
                            (config.max_model_len + config.kvcache_block_size - 1) / config.kvcache_block_size)
                    .total;
      else if (cmd.op == WorkerOp::logits_of)
        bytes = sizeof(int32_t) * static_cast<size_t>(cmd.value);
      if (bytes > payload.size()) throw std::logic_error("tensor-parallel worker: payload larger than the channel");
      if (bytes) std::memcpy(payload.data(), c->payload(), bytes);
      me.acked.store(seen, std::memory_order_release);
      c->bump_progress();
      if (cmd.op == WorkerOp::shutdown) break;
      me.reply = runner.execute(cmd, payload.data());
      if (cmd.op == WorkerOp::allocate_kv) me.kv_blocks = runner.num_kvcache_blocks();
      me.done.store(seen, std::memory_order_release);
      c->bump_progress();
    }
    me.done.store(seen, std::memory_order_release);
    c->bump_progress();
    return 0;
  } catch (const std::exception& e) {
    fail(e.what());
    return 1;
  }
}

}  // namespace nanovllm
