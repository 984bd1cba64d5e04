#include "backend/cpu/shm_group.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "backend/half.h"

namespace nanovllm {
namespace {

constexpr uint32_t kMagic = 0x4e565450;  // "NVTP"
constexpr size_t kSlotBytes = 1 << 20;   // a rank's staging slot; collectives go in chunks of it
constexpr size_t kHeaderBytes = 4096;

}  // namespace

struct ShmGroup::Header {
  uint32_t magic;
  uint32_t world;
  std::atomic<uint32_t> arrived;     // ranks at the current barrier
  std::atomic<uint32_t> generation;  // barriers passed (the futex word waiters sleep on)
  std::atomic<uint32_t> aborted;
  std::atomic<uint32_t> reason_set;
  char reason[1024];
};

ShmGroup ShmGroup::create(int world) {
  if (world < 1 || world > 64) throw std::invalid_argument("ShmGroup: world size " + std::to_string(world));
  ShmGroup g;
  g.region_ = SharedRegion::create("tp", kHeaderBytes + kSlotBytes * static_cast<size_t>(world));
  Header* h = new (g.region_.data()) Header{};
  h->magic = kMagic;
  h->world = static_cast<uint32_t>(world);
  return g;
}

ShmGroup ShmGroup::open(const std::string& id) {
  ShmGroup g;
  g.region_ = SharedRegion::open(id);
  if (g.region_.size() < kHeaderBytes || g.header()->magic != kMagic)
    throw std::runtime_error("shared memory '" + id + "' is not a nanovllm tensor-parallel group");
  return g;
}

ShmGroup::Header* ShmGroup::header() const {
  static_assert(sizeof(Header) <= kHeaderBytes);
  return static_cast<Header*>(region_.data());
}
char* ShmGroup::slot(int r) const { return static_cast<char*>(region_.data()) + kHeaderBytes + kSlotBytes * r; }

void ShmGroup::join(int rank, int world) {
  Header* h = header();
  if (static_cast<int>(h->world) != world || rank < 0 || rank >= world)
    throw std::invalid_argument("ShmGroup: rank " + std::to_string(rank) + " of " + std::to_string(world) +
                                " joining a group of " + std::to_string(h->world));
  rank_ = rank;
  world_ = world;
  barrier();
  if (rank == 0) region_.unlink();  // everyone has it mapped
}

void ShmGroup::check_aborted() const {
  const Header* h = header();
  if (h->aborted.load(std::memory_order_acquire))
    throw std::runtime_error(h->reason_set.load(std::memory_order_acquire) == 2 ? std::string(h->reason)
                                                                                 : "tensor-parallel group aborted");
}

void ShmGroup::barrier() {
  Header* h = header();
  check_aborted();
  const uint32_t gen = h->generation.load(std::memory_order_acquire);
  if (h->arrived.fetch_add(1, std::memory_order_acq_rel) + 1 == static_cast<uint32_t>(world_)) {
    h->arrived.store(0, std::memory_order_relaxed);
    h->generation.fetch_add(1, std::memory_order_release);
    wake_all(h->generation);
    return;
  }
  wait_while_equal(h->generation, gen, [this] { check_aborted(); });
}

void ShmGroup::abort(const std::string& reason) {
  Header* h = header();
  uint32_t expected = 0;
  if (h->reason_set.compare_exchange_strong(expected, 1)) {
    const size_t n = std::min(reason.size(), sizeof(h->reason) - 1);
    std::memcpy(h->reason, reason.data(), n);
    h->reason[n] = 0;
    h->reason_set.store(2, std::memory_order_release);
  }
  h->aborted.store(1, std::memory_order_release);
  wake_all(h->generation);  // sleepers wake, see the flag, throw
}

void ShmGroup::all_reduce(Tensor& x) {
  if (x.dtype != DType::f32 && x.dtype != DType::bf16)
    throw std::invalid_argument(std::string("all_reduce: dtype ") + dtype_name(x.dtype) + ", expected F32 or BF16");
  const int64_t n = x.numel();
  const int64_t per = static_cast<int64_t>(kSlotBytes / sizeof(float));
  for (int64_t off = 0; off < n; off += per) {
    const int64_t m = std::min(per, n - off);
    float* mine = reinterpret_cast<float*>(slot(rank_));
    if (x.dtype == DType::f32) {
      std::memcpy(mine, x.ptr<float>() + off, m * sizeof(float));
    } else {
      const uint16_t* src = x.ptr<uint16_t>() + off;
      for (int64_t i = 0; i < m; ++i) mine[i] = bf16_to_f32(src[i]);
    }
    barrier();
    std::vector<const float*> slots(world_);
    for (int r = 0; r < world_; ++r) slots[r] = reinterpret_cast<const float*>(slot(r));
    for (int64_t i = 0; i < m; ++i) {
      float s = slots[0][i];
      for (int r = 1; r < world_; ++r) s += slots[r][i];
      if (x.dtype == DType::f32) x.ptr<float>()[off + i] = s;
      else x.ptr<uint16_t>()[off + i] = f32_to_bf16(s);
    }
    barrier();  // nobody refills a slot before every rank has read it
  }
}

void ShmGroup::gather(const void* src, void* dst, size_t bytes) {
  for (size_t off = 0; off < bytes; off += kSlotBytes) {
    const size_t m = std::min(kSlotBytes, bytes - off);
    std::memcpy(slot(rank_), static_cast<const char*>(src) + off, m);
    barrier();
    if (rank_ == 0)
      for (int r = 0; r < world_; ++r) std::memcpy(static_cast<char*>(dst) + r * bytes + off, slot(r), m);
    barrier();
  }
}

}  // namespace nanovllm
