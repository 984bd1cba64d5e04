// BlockManager: allocation, reference counts, prefix-cache hits and misses, collisions, reuse.
#include <gtest/gtest.h>

#include <numeric>

#include "engine/block_manager.h"

namespace nanovllm {
namespace {

std::vector<int32_t> iota_tokens(int n, int32_t start = 0) {
  std::vector<int32_t> v(n);
  std::iota(v.begin(), v.end(), start);
  return v;
}

Sequence make_seq(int64_t id, std::vector<int32_t> tokens, int block_size = 4) {
  return Sequence(id, std::move(tokens), SamplingParams{}, block_size, 0, 0.0);
}

// Marks every token of `seq` as computed, as the scheduler does after a full prefill.
void compute_all(BlockManager& bm, Sequence& seq) {
  seq.num_scheduled_tokens = seq.num_tokens() - seq.num_computed_tokens;
  bm.hash_blocks(seq);
  seq.num_computed_tokens = seq.num_tokens();
  seq.num_scheduled_tokens = 0;
}

uint64_t constant_hash(uint64_t, std::span<const int32_t>) { return 42; }

TEST(BlockManager, AllocateAndFree) {
  BlockManager bm(8, 4, true);
  Sequence s = make_seq(0, iota_tokens(10));  // 3 blocks
  ASSERT_TRUE(bm.try_allocate(s));
  EXPECT_EQ(s.block_table.size(), 3u);
  EXPECT_EQ(bm.num_free_blocks(), 5);
  EXPECT_EQ(s.num_cached_tokens, 0);
  for (int id : s.block_table) EXPECT_EQ(bm.block(id).ref_count, 1);
  bm.deallocate(s);
  EXPECT_TRUE(s.block_table.empty());
  EXPECT_EQ(bm.num_free_blocks(), 8);
}

TEST(BlockManager, CannotAllocateBeyondFreeBlocks) {
  BlockManager bm(2, 4, true);
  Sequence s = make_seq(0, iota_tokens(9));  // 3 blocks
  EXPECT_FALSE(bm.try_allocate(s));
  EXPECT_TRUE(s.block_table.empty());  // nothing taken
  Sequence t = make_seq(1, iota_tokens(8));
  EXPECT_TRUE(bm.try_allocate(t));
}

// The scheduler's admission: one walk of the prefix cache decides and allocates (a shared cached
// block costs no free block), and a refusal changes nothing.
TEST(BlockManager, TryAllocateCountsSharedBlocksAsFree) {
  BlockManager bm(4, 4, true);
  Sequence a = make_seq(0, iota_tokens(10));  // 3 blocks
  ASSERT_TRUE(bm.try_allocate(a));
  compute_all(bm, a);
  EXPECT_EQ(bm.num_free_blocks(), 1);
  Sequence big = make_seq(1, iota_tokens(9, 500));  // 3 new blocks: only 1 free
  EXPECT_FALSE(bm.try_allocate(big));
  EXPECT_TRUE(big.block_table.empty());
  EXPECT_EQ(bm.num_free_blocks(), 1);
  Sequence shared = make_seq(2, iota_tokens(9));  // 2 cached blocks in use by a, plus 1 new
  ASSERT_TRUE(bm.try_allocate(shared));
  EXPECT_EQ(shared.num_cached_tokens, 8);
  EXPECT_EQ(shared.block_table[0], a.block_table[0]);
  EXPECT_EQ(bm.num_free_blocks(), 0);
}

TEST(BlockManager, PrefixHitSharesBlocksAndCountsRefs) {
  BlockManager bm(16, 4, true);
  Sequence a = make_seq(0, iota_tokens(10));
  ASSERT_TRUE(bm.try_allocate(a));
  compute_all(bm, a);  // blocks 0 and 1 of a are full and hashed
  std::vector<int32_t> tb = iota_tokens(8);
  tb.push_back(99);
  tb.push_back(100);
  tb.push_back(101);
  Sequence b = make_seq(1, tb);
  ASSERT_TRUE(bm.try_allocate(b));
  EXPECT_EQ(b.num_cached_tokens, 8);
  EXPECT_EQ(b.num_computed_tokens, 8);
  EXPECT_EQ(b.block_table[0], a.block_table[0]);
  EXPECT_EQ(b.block_table[1], a.block_table[1]);
  EXPECT_NE(b.block_table[2], a.block_table[2]);
  EXPECT_EQ(bm.block(a.block_table[0]).ref_count, 2);
  EXPECT_EQ(bm.num_hit_tokens(), 8);
  EXPECT_EQ(bm.num_queried_tokens(), 10 + 11);
  bm.deallocate(a);
  EXPECT_EQ(bm.block(b.block_table[0]).ref_count, 1);
  bm.deallocate(b);
  EXPECT_EQ(bm.num_free_blocks(), 16);
}

TEST(BlockManager, MissWhenAnEarlierBlockDiffers) {
  BlockManager bm(16, 4, true);
  Sequence a = make_seq(0, iota_tokens(12));
  ASSERT_TRUE(bm.try_allocate(a));
  compute_all(bm, a);
  // Same second block, different first block: the chained hash must not match block 1.
  std::vector<int32_t> tb = iota_tokens(12);
  tb[0] = 77;
  Sequence b = make_seq(1, tb);
  ASSERT_TRUE(bm.try_allocate(b));
  EXPECT_EQ(b.num_cached_tokens, 0);
  for (int i = 0; i < 3; ++i) EXPECT_NE(b.block_table[i], a.block_table[i]);
}

TEST(BlockManager, LastTokenIsAlwaysComputed) {
  BlockManager bm(16, 4, true);
  Sequence a = make_seq(0, iota_tokens(8));
  ASSERT_TRUE(bm.try_allocate(a));
  compute_all(bm, a);
  Sequence b = make_seq(1, iota_tokens(8));  // exactly the same 2 full blocks
  ASSERT_TRUE(bm.try_allocate(b));
  EXPECT_EQ(b.num_cached_tokens, 4);  // the block holding the last token is recomputed
  EXPECT_EQ(b.block_table[0], a.block_table[0]);
  EXPECT_NE(b.block_table[1], a.block_table[1]);
}

TEST(BlockManager, NoHitsBeforeBlocksAreScheduled) {
  BlockManager bm(16, 4, true);
  Sequence a = make_seq(0, iota_tokens(12));
  ASSERT_TRUE(bm.try_allocate(a));  // allocated, nothing computed or scheduled yet
  Sequence b = make_seq(1, iota_tokens(12));
  ASSERT_TRUE(bm.try_allocate(b));
  EXPECT_EQ(b.num_cached_tokens, 0);
  // A chunk of a covering its first block makes that block available.
  a.num_scheduled_tokens = 5;
  bm.hash_blocks(a);
  Sequence c = make_seq(2, iota_tokens(12));
  ASSERT_TRUE(bm.try_allocate(c));
  EXPECT_EQ(c.num_cached_tokens, 4);
  EXPECT_EQ(c.block_table[0], a.block_table[0]);
}

TEST(BlockManager, HashCollisionIsRejectedByTokenCheck) {
  BlockManager bm(16, 4, true, constant_hash);  // every block hashes to 42
  Sequence a = make_seq(0, iota_tokens(5));  // one full block, hashed to 42
  ASSERT_TRUE(bm.try_allocate(a));
  compute_all(bm, a);
  Sequence b = make_seq(1, iota_tokens(5, 1000));  // different tokens, same hash
  ASSERT_TRUE(bm.try_allocate(b));
  EXPECT_EQ(b.num_cached_tokens, 0);
  for (int i = 0; i < 2; ++i) EXPECT_NE(b.block_table[i], a.block_table[i]);
  // Equal tokens still hit through the colliding hash.
  Sequence c = make_seq(2, iota_tokens(5));
  ASSERT_TRUE(bm.try_allocate(c));
  EXPECT_EQ(c.num_cached_tokens, 4);
}

TEST(BlockManager, FreedBlocksKeepTheirHashUntilReused) {
  BlockManager bm(4, 4, true);
  Sequence a = make_seq(0, iota_tokens(9));  // 3 blocks, 2 full
  ASSERT_TRUE(bm.try_allocate(a));
  compute_all(bm, a);
  std::vector<int> a_blocks = a.block_table;
  bm.deallocate(a);
  EXPECT_EQ(bm.num_free_blocks(), 4);
  // The same prompt again hits the freed cached blocks.
  Sequence b = make_seq(1, iota_tokens(9));
  ASSERT_TRUE(bm.try_allocate(b));
  EXPECT_EQ(b.num_cached_tokens, 8);
  EXPECT_EQ(b.block_table[0], a_blocks[0]);
  EXPECT_EQ(b.block_table[1], a_blocks[1]);
  EXPECT_EQ(bm.num_free_blocks(), 1);
  bm.deallocate(b);
  // A different prompt needing every block evicts them; the old prompt then misses.
  Sequence c = make_seq(2, iota_tokens(16, 500));
  ASSERT_TRUE(bm.try_allocate(c));
  EXPECT_EQ(bm.num_free_blocks(), 0);
  bm.deallocate(c);
  Sequence d = make_seq(3, iota_tokens(9));
  ASSERT_TRUE(bm.try_allocate(d));
  EXPECT_EQ(d.num_cached_tokens, 0);
}

TEST(BlockManager, TryAllocateNeedsFreeBlocksOnlyPastTheHits) {
  BlockManager bm(3, 4, true);
  Sequence a = make_seq(0, iota_tokens(9));  // all 3 blocks
  ASSERT_TRUE(bm.try_allocate(a));
  compute_all(bm, a);
  EXPECT_EQ(bm.num_free_blocks(), 0);
  Sequence b = make_seq(1, iota_tokens(9));  // hits 2 in-use blocks, needs 1 more
  EXPECT_FALSE(bm.try_allocate(b));
  Sequence c = make_seq(2, iota_tokens(8));  // hits block 0 only (last token recomputed): needs 1
  EXPECT_FALSE(bm.try_allocate(c));
  bm.deallocate(a);
  EXPECT_TRUE(bm.try_allocate(b));
}

TEST(BlockManager, AppendAllocatesAtBlockBoundary) {
  BlockManager bm(4, 4, true);
  Sequence s = make_seq(0, iota_tokens(4));
  ASSERT_TRUE(bm.try_allocate(s));
  compute_all(bm, s);
  EXPECT_EQ(s.block_table.size(), 1u);
  s.append_token(4);  // 5th token needs a second block
  ASSERT_TRUE(bm.can_append(s));
  bm.may_append(s);
  EXPECT_EQ(s.block_table.size(), 2u);
  s.append_token(5);
  bm.may_append(s);
  EXPECT_EQ(s.block_table.size(), 2u);
  BlockManager full(1, 4, true);
  Sequence t = make_seq(1, iota_tokens(4));
  ASSERT_TRUE(full.try_allocate(t));
  t.append_token(9);
  EXPECT_FALSE(full.can_append(t));
}

TEST(BlockManager, DecodedBlocksBecomeCacheable) {
  BlockManager bm(8, 4, true);
  Sequence s = make_seq(0, iota_tokens(3));
  ASSERT_TRUE(bm.try_allocate(s));
  compute_all(bm, s);
  s.append_token(3);  // decode step computes token 3: block 0 becomes full
  s.num_scheduled_tokens = 1;
  bm.may_append(s);
  bm.hash_blocks(s);
  s.num_computed_tokens = 4;
  s.num_scheduled_tokens = 0;
  Sequence t = make_seq(1, iota_tokens(6));
  ASSERT_TRUE(bm.try_allocate(t));
  EXPECT_EQ(t.num_cached_tokens, 4);
  EXPECT_EQ(t.block_table[0], s.block_table[0]);
}

TEST(BlockManager, PrefixCachingOff) {
  BlockManager bm(8, 4, false);
  Sequence a = make_seq(0, iota_tokens(9));
  ASSERT_TRUE(bm.try_allocate(a));
  compute_all(bm, a);
  Sequence b = make_seq(1, iota_tokens(9));
  ASSERT_TRUE(bm.try_allocate(b));
  EXPECT_EQ(b.num_cached_tokens, 0);
  EXPECT_EQ(bm.num_free_blocks(), 2);
  EXPECT_EQ(bm.num_hit_tokens(), 0);
}

TEST(BlockManager, FailedStepLeavesNoHitsOnUncomputedBlocks) {
  BlockManager bm(16, 4, true);
  Sequence a = make_seq(0, iota_tokens(6));
  ASSERT_TRUE(bm.try_allocate(a));
  compute_all(bm, a);  // block 0 computed and hashed
  a.append_token(100);
  a.append_token(101);  // now 8 tokens: a decode step would fill block 1
  a.num_computed_tokens = 7;
  a.num_scheduled_tokens = 1;
  bm.may_append(a);
  bm.hash_blocks(a);
  bm.unhash_uncomputed_blocks(a);  // the step's forward failed
  EXPECT_EQ(a.num_hashed_blocks, 1);
  std::vector<int32_t> tb = iota_tokens(6);
  tb.push_back(100);
  tb.push_back(101);
  tb.push_back(7);
  Sequence b = make_seq(1, tb);
  ASSERT_TRUE(bm.try_allocate(b));
  EXPECT_EQ(b.num_cached_tokens, 4);  // block 0 only
}

TEST(BlockManager, RejectsBadSizes) {
  EXPECT_THROW(BlockManager(0, 4, true), std::invalid_argument);
  EXPECT_THROW(BlockManager(4, 0, true), std::invalid_argument);
}

}  // namespace
}  // namespace nanovllm
