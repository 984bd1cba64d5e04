// ShmGroup: the collectives of a tensor-parallel group of CPU backends on one host, each rank a
// process, through one shared-memory region: a staging slot per rank and a barrier on a futex
// word. Every rank sums the slots in rank order, so every rank gets the same bits.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "backend/tensor.h"
#include "util/shm.h"

namespace nanovllm {

class ShmGroup {
 public:
  // Rank 0's side, before the others start: makes the region for `world` ranks; its name is the
  // id the others join with.
  static ShmGroup create(int world);
  // Joins as `rank` of `world` (rank 0 joins the group it created). Returns when every rank has
  // joined; rank 0 then removes the region's name.
  void join(int rank, int world);
  static ShmGroup open(const std::string& id);

  const std::string& id() const { return region_.name(); }
  int rank() const { return rank_; }
  int world() const { return world_; }

  // x = the sum over ranks of x (f32 or bf16; bf16 is summed in float32 and rounded once).
  void all_reduce(Tensor& x);
  // Rank 0 gets every rank's `bytes` bytes at `src`, in rank order, at `dst` (world x bytes);
  // the other ranks pass dst = nullptr.
  void gather(const void* src, void* dst, size_t bytes);
  void barrier();
  // Makes every rank's current and later collectives throw `reason` (thread-safe; the first
  // reason stays).
  void abort(const std::string& reason);

 private:
  struct Header;
  Header* header() const;
  char* slot(int r) const;
  void check_aborted() const;

  SharedRegion region_;
  int rank_ = -1, world_ = 0;
};

}  // namespace nanovllm
