// The server's engine loop over a real LLM (the tiny-tied fixture): requests submitted from many
// threads at once get Hugging Face's greedy tokens; aborts, the pending bound and shutdown.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <thread>

#include <nlohmann/json.hpp>

#include "hf_fixture.h"
#include "nanovllm/llm.h"
#include "server/engine_loop.h"

namespace nanovllm::server {
namespace {

using namespace std::chrono_literals;

std::string tiny() { return fixtures::hf_fixture_dir("tiny-tied"); }

EngineConfig cfg() { return fixtures::cpu_engine_config(8, 512, 256); }

using fixtures::greedy;
// HF transformers' greedy continuations of the fixture prompts (16 tokens each).
using Fixture = fixtures::HfColumns;
Fixture load_fixture() { return fixtures::load_hf_columns("tiny-tied"); }

struct Collected {
  std::map<int, std::vector<int32_t>> tokens;
  std::map<int, FinishReason> finish;
};

// Drains `ch` until `num_choices` choices have finished.
Collected collect(RequestChannel& ch, int num_choices, std::function<void(const ChoiceEvent&)> on_event = {}) {
  Collected c;
  std::vector<ChoiceEvent> evs;
  while (static_cast<int>(c.finish.size()) < num_choices) {
    if (!ch.wait_events(evs, 30s)) {
      ADD_FAILURE() << "no event in 30 s";
      break;
    }
    for (const auto& e : evs) {
      if (on_event) on_event(e);
      auto& t = c.tokens[e.index];
      t.insert(t.end(), e.new_token_ids.begin(), e.new_token_ids.end());
      if (e.finished) c.finish[e.index] = e.finish_reason;
    }
    evs.clear();
  }
  return c;
}

// Reads a sample's value out of the Prometheus text.
double metric(const std::string& text, const std::string& name) {
  auto at = text.find("\n" + name + "{");
  if (at == std::string::npos) return -1;
  auto sp = text.find("} ", at);
  return std::stod(text.substr(sp + 2, text.find('\n', sp) - sp - 2));
}

TEST(ServerEngineLoop, ConcurrentSubmissionsGetHfGreedyTokens) {
  Fixture fx = load_fixture();
  LLM llm(tiny(), cfg());
  Metrics metrics("tiny");
  EngineLoop loop(llm, metrics, 64);
  loop.start();
  std::vector<Collected> got(fx.ids.size());
  std::vector<std::thread> clients;
  for (size_t i = 0; i < fx.ids.size(); ++i) {
    clients.emplace_back([&, i] {
      auto ch = std::make_shared<RequestChannel>();
      ASSERT_EQ(loop.submit(ch, {SubRequest{fx.ids[i], greedy(16)}}), Admission::accepted);
      ASSERT_EQ(ch->wait_admitted(), "");
      got[i] = collect(*ch, 1);
    });
  }
  for (auto& t : clients) t.join();
  for (size_t i = 0; i < fx.ids.size(); ++i) {
    EXPECT_EQ(got[i].tokens[0], fx.greedy[i]) << "prompt " << i;
    EXPECT_EQ(got[i].finish[0], FinishReason::length);
  }
  EXPECT_EQ(loop.num_in_flight(), 0);
  loop.stop();
}

// The engine loop hands each step's logprobs with its tokens, and the prompt's logprobs with each
// choice's end: the same as LLM::generate returns for the same request.
TEST(ServerEngineLoop, LogprobsComeWithTheirTokensAndPromptLogprobsWithTheEnd) {
  Fixture fx = load_fixture();
  LLM llm(tiny(), cfg());
  Metrics metrics("tiny");
  EngineLoop loop(llm, metrics, 64);
  loop.start();
  SamplingParams sp = greedy(6);
  sp.n = 2;
  sp.logprobs = 3;
  sp.prompt_logprobs = 2;
  auto ch = std::make_shared<RequestChannel>();
  ASSERT_EQ(loop.submit(ch, {SubRequest{fx.ids[0], sp}}), Admission::accepted);
  ASSERT_EQ(ch->wait_admitted(), "");
  std::map<int, std::vector<PositionLogprobs>> logprobs;
  std::map<int, std::shared_ptr<const std::vector<PositionLogprobs>>> prompt_logprobs;
  Collected c = collect(*ch, 2, [&](const ChoiceEvent& e) {
    ASSERT_EQ(e.logprobs.size(), e.new_token_ids.size());
    for (size_t k = 0; k < e.logprobs.size(); ++k) EXPECT_EQ(e.logprobs[k].token_id, e.new_token_ids[k]);
    logprobs[e.index].insert(logprobs[e.index].end(), e.logprobs.begin(), e.logprobs.end());
    if (e.finished) prompt_logprobs[e.index] = e.prompt_logprobs;
    else EXPECT_EQ(e.prompt_logprobs, nullptr);
  });
  loop.stop();

  // The loop is stopped: the LLM is this thread's again.
  RequestOutput ref = llm.generate(std::vector<std::vector<int32_t>>{fx.ids[0]}, sp, false).at(0);
  ASSERT_EQ(ref.prompt_logprobs.size(), fx.ids[0].size() - 1);
  auto same = [](const PositionLogprobs& a, const PositionLogprobs& b) {
    EXPECT_EQ(a.token_id, b.token_id);
    EXPECT_NEAR(a.logprob, b.logprob, 1e-5);
    EXPECT_EQ(a.rank, b.rank);
    ASSERT_EQ(a.top.size(), b.top.size());
    for (size_t k = 0; k < a.top.size(); ++k) EXPECT_EQ(a.top[k].token_id, b.top[k].token_id);
  };
  for (int j = 0; j < 2; ++j) {
    EXPECT_EQ(c.tokens[j], ref.outputs[j].token_ids) << "choice " << j;
    ASSERT_EQ(logprobs[j].size(), ref.outputs[j].logprobs.size());
    for (size_t k = 0; k < logprobs[j].size(); ++k) same(logprobs[j][k], ref.outputs[j].logprobs[k]);
    ASSERT_NE(prompt_logprobs[j], nullptr) << "choice " << j;
    ASSERT_EQ(prompt_logprobs[j]->size(), ref.prompt_logprobs.size());
    for (size_t k = 0; k < ref.prompt_logprobs.size(); ++k) {
      same((*prompt_logprobs[j])[k], ref.prompt_logprobs[k]);
      EXPECT_EQ((*prompt_logprobs[j])[k].token_id, fx.ids[0][k + 1]);  // the prompt's own tokens, from the second
    }
  }
  EXPECT_EQ(prompt_logprobs[0], prompt_logprobs[1]);  // one list, shared by the request's choices
}

TEST(ServerEngineLoop, AbortEndsTheRequestAndFreesItsBlocks) {
  Fixture fx = load_fixture();
  LLM llm(tiny(), cfg());
  Metrics metrics("tiny");
  EngineLoop loop(llm, metrics, 64);
  loop.start();
  auto ch = std::make_shared<RequestChannel>();
  // Choice 0 would run for 200 tokens; choice 1 for 16.
  ASSERT_EQ(loop.submit(ch, {SubRequest{fx.ids[0], greedy(200)}, SubRequest{fx.ids[1], greedy(16)}}),
            Admission::accepted);
  ASSERT_EQ(ch->wait_admitted(), "");
  // Another client's request runs beside it, and is untouched by the abort.
  auto other = std::make_shared<RequestChannel>();
  ASSERT_EQ(loop.submit(other, {SubRequest{fx.ids[2], greedy(16)}}), Admission::accepted);
  ASSERT_EQ(other->wait_admitted(), "");
  bool aborted = false;
  Collected c = collect(*ch, 2, [&](const ChoiceEvent& e) {
    if (!aborted && e.index == 0 && !e.new_token_ids.empty()) {
      loop.abort(ch);
      aborted = true;
    }
  });
  EXPECT_EQ(c.finish[0], FinishReason::abort);
  EXPECT_LT(c.tokens[0].size(), 200u);
  // Choice 1 had 16 tokens to go: it either finished first or was aborted with its request.
  if (c.finish[1] == FinishReason::length) EXPECT_EQ(c.tokens[1], fx.greedy[1]);
  else EXPECT_EQ(c.finish[1], FinishReason::abort);
  Collected o = collect(*other, 1);
  EXPECT_EQ(o.finish[0], FinishReason::length);
  EXPECT_EQ(o.tokens[0], fx.greedy[2]);
  EXPECT_EQ(loop.num_in_flight(), 0);
  // The idle loop republishes the engine's stats: every block is free again.
  std::string text;
  for (int i = 0; i < 100; ++i) {
    text = metrics.render();
    if (metric(text, "nanovllm:num_free_kvcache_blocks") == metric(text, "nanovllm:num_kvcache_blocks")) break;
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_EQ(metric(text, "nanovllm:num_free_kvcache_blocks"), metric(text, "nanovllm:num_kvcache_blocks"));
  EXPECT_EQ(metric(text, "vllm:kv_cache_usage_perc"), 0.0);
  EXPECT_EQ(metric(text, "vllm:num_requests_running"), 0.0);
  loop.stop();
}

TEST(ServerEngineLoop, PendingBoundAndEngineRefusals) {
  Fixture fx = load_fixture();
  LLM llm(tiny(), cfg());
  Metrics metrics("tiny");
  EngineLoop loop(llm, metrics, 3);
  loop.start();
  auto a = std::make_shared<RequestChannel>();
  ASSERT_EQ(loop.submit(a, {SubRequest{fx.ids[0], greedy(500)}, SubRequest{fx.ids[0], greedy(500)}}),
            Admission::accepted);
  ASSERT_EQ(a->wait_admitted(), "");
  // Two more choices would make four: over the bound of three, and refused as a whole.
  auto b = std::make_shared<RequestChannel>();
  EXPECT_EQ(loop.submit(b, {SubRequest{fx.ids[0], greedy(1)}, SubRequest{fx.ids[1], greedy(1)}}),
            Admission::queue_full);
  // The engine's own refusal (a token id outside the vocabulary) comes back at admission, and
  // nothing of that request stays in flight.
  auto bad = std::make_shared<RequestChannel>();
  ASSERT_EQ(loop.submit(bad, {SubRequest{{5, 1000000}, greedy(1)}}), Admission::accepted);
  EXPECT_NE(bad->wait_admitted(), "");
  loop.abort(a);
  collect(*a, 2);
  EXPECT_EQ(loop.num_in_flight(), 0);
  // With room again, a request is admitted.
  auto c = std::make_shared<RequestChannel>();
  ASSERT_EQ(loop.submit(c, {SubRequest{fx.ids[2], greedy(16)}}), Admission::accepted);
  EXPECT_EQ(collect(*c, 1).tokens[0], fx.greedy[2]);
  loop.stop();
}

TEST(ServerEngineLoop, StopAbortsLiveRequestsAndRefusesNewOnes) {
  Fixture fx = load_fixture();
  LLM llm(tiny(), cfg());
  Metrics metrics("tiny");
  EngineLoop loop(llm, metrics, 64);
  loop.start();
  auto a = std::make_shared<RequestChannel>();
  // 32 x 500 tokens: far more than the KV cache holds at once, so they cannot all be done by the
  // time stop() is called.
  std::vector<SubRequest> subs(32, SubRequest{fx.ids[0], greedy(500)});
  ASSERT_EQ(loop.submit(a, subs), Admission::accepted);
  ASSERT_EQ(a->wait_admitted(), "");
  loop.stop();
  Collected c = collect(*a, 32);
  int aborted = 0;
  for (const auto& [i, reason] : c.finish) {
    if (reason == FinishReason::abort) ++aborted;
    else EXPECT_EQ(c.tokens[i].size(), 500u) << "choice " << i << " ended '" << to_string(reason) << "' early";
  }
  EXPECT_GT(aborted, 0);
  EXPECT_EQ(loop.num_in_flight(), 0);
  EXPECT_EQ(loop.submit(a, {SubRequest{fx.ids[0], greedy(1)}}), Admission::shutting_down);
}

}  // namespace
}  // namespace nanovllm::server
