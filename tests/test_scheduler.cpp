// Scheduler: token budget, max_num_seqs, chunked prefill, preemption and resumption, finishing.
// A fake model (next token = a hash of the whole sequence so far) stands in for the forward, so
// every run can be checked against generating each request alone.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>
#include <numeric>

#include "engine/scheduler.h"

namespace nanovllm {
namespace {

int32_t fake_next_token(const std::vector<int32_t>& tokens) {
  uint64_t h = 1469598103934665603ULL;
  for (int32_t t : tokens) h = (h ^ static_cast<uint64_t>(t)) * 1099511628211ULL;
  return static_cast<int32_t>(h % 1000);
}

std::vector<int32_t> reference_completion(std::vector<int32_t> tokens, int max_tokens) {
  std::vector<int32_t> out;
  for (int i = 0; i < max_tokens; ++i) {
    int32_t t = fake_next_token(tokens);
    tokens.push_back(t);
    out.push_back(t);
  }
  return out;
}

struct Harness {
  BlockManager bm;
  Scheduler sched;
  std::vector<std::unique_ptr<Sequence>> seqs;
  std::vector<std::pair<std::vector<Sequence*>, bool>> steps;

  Harness(int num_blocks, int block_size, SchedulerConfig cfg, bool prefix = true)
      : bm(num_blocks, block_size, prefix), sched(std::move(cfg), bm) {}

  Sequence* add(std::vector<int32_t> prompt, int max_tokens, bool ignore_eos = true, int priority = 0) {
    SamplingParams p;
    p.max_tokens = max_tokens;
    p.ignore_eos = ignore_eos;
    p.priority = priority;
    seqs.push_back(std::make_unique<Sequence>(static_cast<int64_t>(seqs.size()), std::move(prompt), p,
                                              bm.block_size(), 0, 0.0));
    sched.add(seqs.back().get());
    return seqs.back().get();
  }

  // One engine step with the fake model; checks the batch's invariants.
  void step() {
    ScheduledBatch batch_b = sched.schedule();
    auto& batch = batch_b.seqs;
    const bool is_prefill = batch_b.is_prefill;
    ASSERT_FALSE(batch.empty());
    int tokens = 0;
    std::vector<int32_t> sampled;
    for (Sequence* s : batch) {
      tokens += s->num_scheduled_tokens;
      if (!is_prefill) EXPECT_EQ(s->num_scheduled_tokens, 1);
      EXPECT_GE(static_cast<int>(s->block_table.size()) * bm.block_size(), s->num_tokens());
      if (s->samples_this_step()) sampled.push_back(fake_next_token(s->token_ids));
    }
    EXPECT_LE(tokens, sched.config().max_num_batched_tokens);
    EXPECT_LE(static_cast<int>(batch.size()), sched.config().max_num_seqs);
    steps.push_back({batch, is_prefill});
    sched.postprocess(batch_b, sampled, 1.0);
  }
  void run(int max_steps = 10000) {
    for (int i = 0; i < max_steps && !sched.is_finished(); ++i) step();
    ASSERT_TRUE(sched.is_finished());
    EXPECT_EQ(bm.num_free_blocks(), bm.num_blocks());
  }
};

std::vector<int32_t> tokens(int n, int32_t start) {
  std::vector<int32_t> v(n);
  std::iota(v.begin(), v.end(), start);
  return v;
}

TEST(Scheduler, PrefillRespectsTokenBudgetAndMaxSeqs) {
  Harness h(64, 4, {.max_num_seqs = 2, .max_num_batched_tokens = 100, .max_model_len = 64});
  for (int i = 0; i < 5; ++i) h.add(tokens(10, i * 100), 3);
  ScheduledBatch batch_b = h.sched.schedule();
  auto& batch = batch_b.seqs;
  const bool is_prefill = batch_b.is_prefill;
  EXPECT_TRUE(is_prefill);
  EXPECT_EQ(batch.size(), 2u);  // max_num_seqs
  EXPECT_EQ(h.sched.num_waiting(), 3);
  EXPECT_EQ(h.sched.num_running(), 2);
}

// vLLM's meaning: max_num_seqs bounds the running set, so a request waits while the running set is full
// (nano-vLLM bounds only each step's batch, so its running set grows past max_num_seqs).
TEST(Scheduler, RunningSetNeverExceedsMaxSeqs) {
  Harness h(64, 4, {.max_num_seqs = 2, .max_num_batched_tokens = 100, .max_model_len = 64});
  for (int i = 0; i < 5; ++i) h.add(tokens(10, i * 100), 3);
  for (int step = 0; step < 30 && (h.sched.num_waiting() || h.sched.num_running()); ++step) {
    ScheduledBatch batch_b = h.sched.schedule();
    auto& batch = batch_b.seqs;
    const bool is_prefill = batch_b.is_prefill;
    EXPECT_LE(h.sched.num_running(), 2);
    std::vector<int32_t> sampled;
    for (auto* s : batch)
      if (s->samples_this_step()) sampled.push_back(7);
    h.sched.postprocess(batch_b, sampled, 1.0);
  }
  EXPECT_EQ(h.sched.num_waiting(), 0);
  EXPECT_EQ(h.sched.num_running(), 0);
}

TEST(Scheduler, PrefillFirstThenDecode) {
  Harness h(64, 4, {.max_num_seqs = 8, .max_num_batched_tokens = 100, .max_model_len = 64});
  h.add(tokens(6, 0), 3);
  h.add(tokens(7, 50), 3);
  h.run();
  ASSERT_EQ(h.steps.size(), 3u);  // one prefill of both, two decodes
  EXPECT_TRUE(h.steps[0].second);
  EXPECT_EQ(h.steps[0].first.size(), 2u);
  EXPECT_FALSE(h.steps[1].second);
  EXPECT_FALSE(h.steps[2].second);
  for (auto& s : h.seqs) {
    EXPECT_EQ(s->completion_token_ids(), reference_completion(tokens(s->num_prompt_tokens, s->token_ids[0]), 3));
    EXPECT_EQ(s->finish_reason, FinishReason::length);
  }
}

TEST(Scheduler, ChunkedPrefillSplitsALongPrompt) {
  Harness h(64, 4, {.max_num_seqs = 8, .max_num_batched_tokens = 16, .max_model_len = 128});
  Sequence* s = h.add(tokens(40, 7), 2);
  ScheduledBatch b1_b = h.sched.schedule();
  auto& b1 = b1_b.seqs;
  const bool p1 = b1_b.is_prefill;
  ASSERT_TRUE(p1);
  EXPECT_EQ(s->num_scheduled_tokens, 16);
  EXPECT_FALSE(s->samples_this_step());
  h.sched.postprocess(b1_b, {}, 1.0);
  EXPECT_EQ(s->num_computed_tokens, 16);
  EXPECT_EQ(s->num_completion_tokens(), 0);
  EXPECT_EQ(h.sched.num_waiting(), 1);  // still waiting for the rest of its prompt
  h.run();
  EXPECT_EQ(s->completion_token_ids(), reference_completion(tokens(40, 7), 2));
  // 16 + 16 + 8 prompt tokens, then one decode.
  ASSERT_EQ(h.steps.size(), 3u);
}

TEST(Scheduler, ChunkFillsTheBudgetLeftByEarlierPrompts) {
  Harness h(64, 4, {.max_num_seqs = 8, .max_num_batched_tokens = 16, .max_model_len = 128});
  Sequence* a = h.add(tokens(10, 0), 1);
  Sequence* b = h.add(tokens(20, 300), 1);
  ScheduledBatch batch_b = h.sched.schedule();
  auto& batch = batch_b.seqs;
  const bool is_prefill = batch_b.is_prefill;
  ASSERT_EQ(batch.size(), 2u);
  EXPECT_EQ(a->num_scheduled_tokens, 10);
  EXPECT_EQ(b->num_scheduled_tokens, 6);
  h.sched.postprocess(batch_b, {fake_next_token(a->token_ids)}, 1.0);
  EXPECT_TRUE(a->is_finished());
  h.run();
  EXPECT_EQ(b->completion_token_ids(), reference_completion(tokens(20, 300), 1));
}

TEST(Scheduler, PreemptsNewestAndResumesWithSameOutput) {
  // 6 blocks of 4 tokens: three sequences of 5-token prompts each want 4 blocks by the end.
  Harness h(6, 4, {.max_num_seqs = 8, .max_num_batched_tokens = 64, .max_model_len = 64});
  for (int i = 0; i < 3; ++i) h.add(tokens(5, i * 10), 10);
  h.run();
  EXPECT_GT(h.sched.num_preemptions(), 0);
  for (auto& s : h.seqs) {
    EXPECT_EQ(s->num_completion_tokens(), 10);
    EXPECT_EQ(s->completion_token_ids(), reference_completion(tokens(5, s->token_ids[0]), 10));
  }
}

// The order in which sequences were first prefilled, by their position in h.seqs.
std::vector<int> prefill_order(const Harness& h) {
  std::vector<int> order;
  for (const auto& [batch, is_prefill] : h.steps)
    for (const Sequence* s : batch)
      if (is_prefill && std::find(order.begin(), order.end(), s->seq_id) == order.end())
        order.push_back(static_cast<int>(s->seq_id));
  return order;
}

// vLLM's priority policy: lower value first, ties by arrival, whatever the order of adding.
TEST(Scheduler, PriorityServesALaterHigherPriorityRequestFirst) {
  for (const bool priority : {false, true}) {
    Harness h(64, 4, {.max_num_seqs = 1, .max_num_batched_tokens = 100, .max_model_len = 64, .priority = priority});
    h.add(tokens(5, 0), 2, true, 1);
    h.add(tokens(5, 100), 2, true, 1);
    h.add(tokens(5, 200), 2, true, 0);
    h.add(tokens(5, 300), 2, true, -3);
    h.add(tokens(5, 400), 2, true, 0);
    h.run();
    const std::vector<int> expected = priority ? std::vector<int>{3, 2, 4, 0, 1} : std::vector<int>{0, 1, 2, 3, 4};
    EXPECT_EQ(prefill_order(h), expected) << (priority ? "priority" : "fcfs");
  }
}

// Out of blocks, fcfs preempts the newest running sequence; priority the one that sorts last by
// (priority, arrival), even when that is the oldest, or the sequence asking for room itself.
TEST(Scheduler, PriorityPreemptsTheLowestPriorityFirst) {
  for (const bool priority : {false, true}) {
    // 6 blocks of 4 tokens: three 5-token prompts take 2 blocks each; all three want a third at once.
    Harness h(6, 4, {.max_num_seqs = 8, .max_num_batched_tokens = 64, .max_model_len = 64, .priority = priority});
    Sequence* low = h.add(tokens(5, 0), 10, true, 2);
    h.step();  // `low` is running alone, a token ahead
    Sequence* high = h.add(tokens(5, 10), 10, true, 0);
    Sequence* mid = h.add(tokens(5, 20), 10, true, 1);
    Sequence* first_preempted = nullptr;
    for (int i = 0; i < 100 && !h.sched.is_finished(); ++i) {
      h.step();
      if (!first_preempted && h.sched.num_preemptions() > 0)
        for (Sequence* s : {low, high, mid})
          if (s->status == SequenceStatus::waiting) first_preempted = s;
    }
    ASSERT_TRUE(h.sched.is_finished());
    EXPECT_EQ(first_preempted, priority ? low : mid) << (priority ? "priority" : "fcfs");
    for (auto& s : h.seqs)
      EXPECT_EQ(s->completion_token_ids(), reference_completion(tokens(5, s->token_ids[0]), 10));
  }
}

TEST(Scheduler, PreemptionWithChunkedPrefillAndNoPrefixCaching) {
  Harness h(8, 4, {.max_num_seqs = 3, .max_num_batched_tokens = 6, .max_model_len = 32}, false);
  for (int i = 0; i < 4; ++i) h.add(tokens(9 + i, i * 7), 12);
  h.run();
  EXPECT_GT(h.sched.num_preemptions(), 0);
  for (auto& s : h.seqs)
    EXPECT_EQ(s->completion_token_ids(), reference_completion(tokens(s->num_prompt_tokens, s->token_ids[0]), 12));
}

TEST(Scheduler, SharedPrefixHitsTheCacheInTheSameStep) {
  Harness h(64, 4, {.max_num_seqs = 8, .max_num_batched_tokens = 100, .max_model_len = 64});
  std::vector<int32_t> common = tokens(12, 0);
  std::vector<int32_t> pa = common, pb = common;
  pa.push_back(500);
  pb.push_back(600);
  Sequence* a = h.add(pa, 2);
  Sequence* b = h.add(pb, 2);
  ScheduledBatch batch_b = h.sched.schedule();
  auto& batch = batch_b.seqs;
  const bool is_prefill = batch_b.is_prefill;
  ASSERT_EQ(batch.size(), 2u);
  EXPECT_EQ(a->num_scheduled_tokens, 13);
  EXPECT_EQ(b->num_cached_tokens, 12);
  EXPECT_EQ(b->num_scheduled_tokens, 1);
  EXPECT_EQ(b->num_prompt_cached_tokens, 12);
  h.sched.postprocess(batch_b, {fake_next_token(a->token_ids), fake_next_token(b->token_ids)}, 1.0);
  h.run();
  EXPECT_EQ(b->completion_token_ids(), reference_completion(pb, 2));
}

TEST(Scheduler, StopsAtEosUnlessIgnored) {
  std::vector<int32_t> prompt = tokens(5, 0);
  std::vector<int32_t> ref = reference_completion(prompt, 4);
  Harness h(64, 4, {.max_num_seqs = 8, .max_num_batched_tokens = 100, .max_model_len = 64,
                    .eos_token_ids = {ref[2]}});
  Sequence* stops = h.add(prompt, 10, /*ignore_eos=*/false);
  Sequence* goes_on = h.add(prompt, 4, /*ignore_eos=*/true);
  h.run();
  EXPECT_EQ(stops->completion_token_ids(), std::vector<int32_t>(ref.begin(), ref.begin() + 3));
  EXPECT_EQ(stops->finish_reason, FinishReason::stop);
  EXPECT_EQ(goes_on->completion_token_ids(), ref);
  EXPECT_EQ(goes_on->finish_reason, FinishReason::length);
}

TEST(Scheduler, StopsAtMaxModelLen) {
  Harness h(64, 4, {.max_num_seqs = 8, .max_num_batched_tokens = 100, .max_model_len = 12});
  Sequence* s = h.add(tokens(10, 0), 50);
  h.run();
  EXPECT_EQ(s->num_tokens(), 12);
  EXPECT_EQ(s->finish_reason, FinishReason::length);
}

TEST(Scheduler, AbortFreesBlocksFromAnyQueue) {
  Harness h(64, 4, {.max_num_seqs = 8, .max_num_batched_tokens = 16, .max_model_len = 64});
  Sequence* a = h.add(tokens(8, 0), 5);
  Sequence* b = h.add(tokens(30, 100), 5);  // chunked: still waiting with blocks after step 1
  Sequence* c = h.add(tokens(8, 200), 5);
  h.step();
  EXPECT_FALSE(b->block_table.empty());
  h.sched.abort(b);
  EXPECT_TRUE(b->block_table.empty());
  EXPECT_EQ(b->finish_reason, FinishReason::abort);
  h.sched.abort(a);  // running
  h.sched.abort(c);  // waiting, no blocks
  EXPECT_TRUE(h.sched.is_finished());
  EXPECT_EQ(h.bm.num_free_blocks(), 64);
}

TEST(Scheduler, ThrowsWhenOnePromptCannotFitTheCache) {
  Harness h(2, 4, {.max_num_seqs = 8, .max_num_batched_tokens = 100, .max_model_len = 64});
  h.add(tokens(20, 0), 1);
  EXPECT_THROW(h.sched.schedule(), std::runtime_error);
}

}  // namespace
}  // namespace nanovllm
