// BlockManager: allocation, reference counting and prefix caching of KV blocks.
#include "engine/block_manager.h"

#include <xxhash.h>

#include <algorithm>
#include <cassert>
#include <stdexcept>
#include <string>

namespace nanovllm {

uint64_t xxh3_block_hash(uint64_t prefix, std::span<const int32_t> token_ids) {
  // The previous block's hash seeds this one: the chain "hash(prev hash + token ids)".
  return XXH3_64bits_withSeed(token_ids.data(), token_ids.size_bytes(), prefix);
}

BlockManager::BlockManager(int num_blocks, int block_size, bool enable_prefix_caching, BlockHashFn hash)
    : block_size_(block_size), enable_prefix_caching_(enable_prefix_caching), hash_(hash) {
  if (num_blocks <= 0) throw std::invalid_argument("KV cache: num_blocks must be > 0, got " + std::to_string(num_blocks));
  if (block_size <= 0) throw std::invalid_argument("KV cache: block_size must be > 0, got " + std::to_string(block_size));
  blocks_.resize(num_blocks);
  for (int i = 0; i < num_blocks; ++i) {
    blocks_[i].block_id = i;
    blocks_[i].free_pos = free_block_ids_.insert(free_block_ids_.end(), i);
  }
}

int BlockManager::lookup(uint64_t h, uint64_t prefix, std::span<const int32_t> token_ids) const {
  auto it = hash_to_block_id_.find(h);
  if (it == hash_to_block_id_.end()) return -1;
  const Block& b = blocks_[it->second];
  // A 64-bit hash can collide: a hit counts only when the block really holds these tokens after
  // the same prefix.
  if (!b.hashed || b.hash != h || b.prefix_hash != prefix) return -1;
  if (!std::equal(token_ids.begin(), token_ids.end(), b.token_ids.begin(), b.token_ids.end())) return -1;
  return b.block_id;
}

std::vector<int> BlockManager::find_cached_prefix(const Sequence& seq) const {
  std::vector<int> hits;
  // A sample owing prompt logprobs computes its whole prompt: they come from every position's logits.
  if (!enable_prefix_caching_ || seq.wants_prompt_logprobs()) return hits;
  int max_hits = (seq.num_tokens() - 1) / block_size_;  // leave the last token to compute
  uint64_t prefix = 0;
  for (int i = 0; i < max_hits; ++i) {
    auto tokens = seq.block(i);
    uint64_t h = hash_(prefix, tokens);
    int id = lookup(h, prefix, tokens);
    if (id < 0) break;
    hits.push_back(id);
    prefix = h;
  }
  return hits;
}

int BlockManager::blocks_needed(const Sequence& seq, const std::vector<int>& hits) const {
  int needed = seq.num_blocks();
  for (int id : hits)
    if (blocks_[id].ref_count > 0) --needed;  // shared with a running sequence: no free block used
  return needed;
}

bool BlockManager::try_allocate(Sequence& seq) {
  std::vector<int> hits = find_cached_prefix(seq);
  if (blocks_needed(seq, hits) > num_free_blocks()) return false;
  allocate_with(seq, hits);
  return true;
}

int BlockManager::take_free_block() {
  if (free_block_ids_.empty()) throw std::logic_error("BlockManager: no free block (try_allocate was not checked)");
  int id = free_block_ids_.front();
  free_block_ids_.pop_front();
  Block& b = blocks_[id];
  assert(b.ref_count == 0);
  if (b.hashed) {  // evict its old content from the prefix cache
    auto it = hash_to_block_id_.find(b.hash);
    if (it != hash_to_block_id_.end() && it->second == id) hash_to_block_id_.erase(it);
    b.hashed = false;
    b.token_ids.clear();
  }
  b.ref_count = 1;
  return id;
}

void BlockManager::ref_block(int id) {
  Block& b = blocks_[id];
  if (b.ref_count == 0) free_block_ids_.erase(b.free_pos);
  ++b.ref_count;
}

void BlockManager::unref_block(int id) {
  Block& b = blocks_[id];
  assert(b.ref_count > 0);
  if (--b.ref_count == 0) b.free_pos = free_block_ids_.insert(free_block_ids_.end(), id);
}

void BlockManager::allocate_with(Sequence& seq, const std::vector<int>& hits) {
  assert(seq.block_table.empty());
  for (int id : hits) {
    ref_block(id);
    seq.block_table.push_back(id);
  }
  for (int i = static_cast<int>(hits.size()); i < seq.num_blocks(); ++i) seq.block_table.push_back(take_free_block());
  int cached = static_cast<int>(hits.size()) * block_size_;
  seq.num_cached_tokens = cached;
  seq.num_computed_tokens = cached;
  seq.num_hashed_blocks = static_cast<int>(hits.size());
  if (enable_prefix_caching_) {
    queried_tokens_ += seq.num_tokens();
    hit_tokens_ += cached;
  }
}

void BlockManager::deallocate(Sequence& seq) {
  // Tail blocks first, so they are evicted before the prefix blocks other prompts may share.
  for (auto it = seq.block_table.rbegin(); it != seq.block_table.rend(); ++it) unref_block(*it);
  seq.block_table.clear();
  seq.num_cached_tokens = 0;
  seq.num_computed_tokens = 0;
  seq.num_scheduled_tokens = 0;
  seq.num_hashed_blocks = 0;
}

bool BlockManager::can_append(const Sequence& seq) const {
  bool needs_block = seq.num_tokens() > static_cast<int>(seq.block_table.size()) * block_size_;
  return num_free_blocks() >= (needs_block ? 1 : 0);
}

void BlockManager::may_append(Sequence& seq) {
  while (seq.num_tokens() > static_cast<int>(seq.block_table.size()) * block_size_)
    seq.block_table.push_back(take_free_block());
}

void BlockManager::hash_blocks(Sequence& seq) {
  if (!enable_prefix_caching_) return;
  int full = (seq.num_computed_tokens + seq.num_scheduled_tokens) / block_size_;
  for (int i = seq.num_hashed_blocks; i < full; ++i) {
    uint64_t prefix = i > 0 ? blocks_[seq.block_table[i - 1]].hash : 0;
    auto tokens = seq.block(i);
    Block& b = blocks_[seq.block_table[i]];
    b.hash = hash_(prefix, tokens);
    b.prefix_hash = prefix;
    b.token_ids.assign(tokens.begin(), tokens.end());
    b.hashed = true;
    hash_to_block_id_[b.hash] = b.block_id;
  }
  seq.num_hashed_blocks = std::max(seq.num_hashed_blocks, full);
}

void BlockManager::unhash_uncomputed_blocks(Sequence& seq) {
  const int computed_blocks = seq.num_computed_tokens / block_size_;
  for (int i = computed_blocks; i < seq.num_hashed_blocks && i < static_cast<int>(seq.block_table.size()); ++i) {
    Block& b = blocks_[seq.block_table[i]];
    if (!b.hashed) continue;
    auto it = hash_to_block_id_.find(b.hash);
    if (it != hash_to_block_id_.end() && it->second == b.block_id) hash_to_block_id_.erase(it);
    b.hashed = false;
    b.token_ids.clear();
  }
  seq.num_hashed_blocks = std::min(seq.num_hashed_blocks, computed_blocks);
}

}  // namespace nanovllm
