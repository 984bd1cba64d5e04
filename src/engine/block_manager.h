// BlockManager: the paged KV cache's blocks, their reference counts and free list, and the prefix
// cache (full blocks found again by a chained hash of their tokens). nano-vLLM's block_manager.py.
#pragma once
#include <cstdint>
#include <list>
#include <span>
#include <unordered_map>
#include <vector>

#include "engine/sequence.h"

namespace nanovllm {

// The hash of a full block: chained through the previous block's hash (`prefix`, 0 for the first
// block) so equal blocks at different places in different prompts do not meet.
using BlockHashFn = uint64_t (*)(uint64_t prefix, std::span<const int32_t> token_ids);
uint64_t xxh3_block_hash(uint64_t prefix, std::span<const int32_t> token_ids);

struct Block {
  int block_id = 0;
  int ref_count = 0;
  bool hashed = false;              // registered in the prefix cache with `hash`
  uint64_t hash = 0;
  uint64_t prefix_hash = 0;         // the previous block's hash, checked on a hit with the tokens
  std::vector<int32_t> token_ids;   // the tokens a hit must match
  std::list<int>::iterator free_pos;  // where it sits in the free list (ref_count == 0)
};

class BlockManager {
 public:
  // `hash` is injectable so tests can force collisions.
  BlockManager(int num_blocks, int block_size, bool enable_prefix_caching, BlockHashFn hash = xxh3_block_hash);

  // Gives `seq` (no blocks yet) a block table covering all its tokens, reusing cached blocks of
  // its leading full blocks (those in use by others cost no free block); sets num_cached_tokens =
  // num_computed_tokens = the tokens reused. At least the last token is always left to compute,
  // so the step has logits to sample. One walk of the prefix cache decides and allocates: false,
  // and nothing changed, when the free blocks cannot hold it.
  bool try_allocate(Sequence& seq);
  // Drops `seq`'s blocks (a block goes back to the free list when no one else holds it; it keeps
  // its hash, so a later prompt can still hit it until the block is handed out again).
  void deallocate(Sequence& seq);
  // Decode: whether the next token of `seq` can get its slot, and giving it (a new block when the
  // last one is full).
  bool can_append(const Sequence& seq) const;
  void may_append(Sequence& seq);
  // Registers in the prefix cache the full blocks of `seq` whose tokens are all computed by the
  // end of this step (num_computed_tokens + num_scheduled_tokens). Called when `seq` is
  // scheduled: a sequence scheduled after it in the same step may already hit these blocks,
  // because every token's K/V of a batch is stored before attention reads the cache.
  void hash_blocks(Sequence& seq);
  // Undoes hash_blocks for the blocks this step was to compute (past num_computed_tokens), for a
  // step whose forward failed: their K/V was never written, so no prompt may hit them.
  void unhash_uncomputed_blocks(Sequence& seq);

  int num_blocks() const { return static_cast<int>(blocks_.size()); }
  int num_free_blocks() const { return static_cast<int>(free_block_ids_.size()); }
  int block_size() const { return block_size_; }
  const Block& block(int id) const { return blocks_[id]; }
  // Prefix-cache counters, in tokens: prompt tokens looked up at allocation, and found.
  int64_t num_queried_tokens() const { return queried_tokens_; }
  int64_t num_hit_tokens() const { return hit_tokens_; }

 private:
  // The cached block holding `token_ids` after `prefix` under chained hash `h`, or -1.
  int lookup(uint64_t h, uint64_t prefix, std::span<const int32_t> token_ids) const;
  // The leading blocks of `seq` the prefix cache holds (at most (num_tokens - 1) / block_size).
  std::vector<int> find_cached_prefix(const Sequence& seq) const;
  int blocks_needed(const Sequence& seq, const std::vector<int>& hits) const;
  void allocate_with(Sequence& seq, const std::vector<int>& hits);
  int take_free_block();     // the least recently freed block, its old hash forgotten
  void ref_block(int id);    // one more holder of a cached block (leaves the free list if there)
  void unref_block(int id);

  int block_size_;
  bool enable_prefix_caching_;
  BlockHashFn hash_;
  std::vector<Block> blocks_;
  std::list<int> free_block_ids_;  // front: evicted first
  std::unordered_map<uint64_t, int> hash_to_block_id_;
  int64_t queried_tokens_ = 0, hit_tokens_ = 0;
};

}  // namespace nanovllm
