// Sampler: staging a step's sampling settings, the penalties' token counts, reading results back.
#include "engine/sampler.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>

namespace nanovllm {
namespace {

size_t align16(size_t n) { return (n + 15) / 16 * 16; }

// Where each array sits in the staging buffer for B rows and A sparse adds.
struct StageLayout {
  size_t rows, filtered, add_ids, add_values, lp_rows, total;
  StageLayout(int B, int A) {
    rows = 0;
    filtered = rows + align16(sizeof(SamplingRow) * B);
    add_ids = filtered + align16(sizeof(int32_t) * B);
    add_values = add_ids + align16(sizeof(int32_t) * A);
    lp_rows = add_values + align16(sizeof(float) * A);
    total = lp_rows + align16(sizeof(int32_t) * B);
  }
};

// Where each result sits for B tokens and R rows of num_top logprobs (4-byte words, contiguous so
// that one copy brings them back).
struct ResultLayout {
  size_t tokens, token_lp, ranks, top_ids, top_lp, total;
  ResultLayout(int B, int R, int num_top) {
    tokens = 0;
    token_lp = tokens + 4 * static_cast<size_t>(B);
    ranks = token_lp + 4 * static_cast<size_t>(R);
    top_ids = ranks + 4 * static_cast<size_t>(R);
    top_lp = top_ids + 4 * static_cast<size_t>(R) * num_top;
    total = top_lp + 4 * static_cast<size_t>(R) * num_top;
  }
};

}  // namespace

SamplingRow sampling_row(const Sequence& seq, int vocab_size) {
  const SamplingParams& p = seq.params;
  SamplingRow r;
  r.key = static_cast<int64_t>(seq.sample_key);
  r.counter = seq.num_completion_tokens();
  if (!p.greedy()) {
    r.temperature = p.temperature;
    r.top_p = p.top_p;
    r.min_p = p.min_p;
    r.top_k = p.top_k > 0 && p.top_k < vocab_size ? p.top_k : 0;
  }
  r.repetition_penalty = p.repetition_penalty;
  r.presence_penalty = p.presence_penalty;
  r.frequency_penalty = p.frequency_penalty;
  return r;
}

Sampler::Sampler(Backend& backend, int max_rows, int vocab_size, int max_logprobs)
    : backend_(backend), max_rows_(max_rows), vocab_(vocab_size), max_logprobs_(max_logprobs) {
  reserve_stage(StageLayout(max_rows, 64).total);
  results_bytes_ = ResultLayout(max_rows, max_rows, max_logprobs).total;
  results_device_ = backend_.alloc(results_bytes_);
  results_host_ = std::unique_ptr<char, HostFree>(static_cast<char*>(backend_.host_alloc(results_bytes_)),
                                                  HostFree{&backend_});
}

Sampler::~Sampler() = default;

void Sampler::reserve_stage(size_t bytes) {
  if (bytes <= stage_bytes_) return;
  bytes = std::max(bytes, stage_bytes_ * 2);
  stage_host_ = std::unique_ptr<char, HostFree>(static_cast<char*>(backend_.host_alloc(bytes)), HostFree{&backend_});
  stage_device_ = backend_.alloc(bytes);
  stage_bytes_ = bytes;
}

void Sampler::assign_counts_row(Sequence& seq) {
  if (!counts_.defined()) {  // first use: every row at once, as big as the step's rows can need
    const int64_t words = (vocab_ + 31) / 32;
    const size_t bytes = sizeof(int32_t) * static_cast<size_t>(max_rows_) * (vocab_ + words);
    counts_buffer_ = backend_.alloc(bytes);
    char* base = static_cast<char*>(counts_buffer_.get());
    counts_.counts = Tensor(base, DType::i32, {max_rows_, vocab_}, backend_.device());
    counts_.prompt_mask = Tensor(base + sizeof(int32_t) * static_cast<size_t>(max_rows_) * vocab_, DType::i32,
                                 {max_rows_, words}, backend_.device());
    counts_rows_.resize(max_rows_);
    for (int i = max_rows_ - 1; i >= 0; --i) free_rows_.push_back(i);
  }
  if (free_rows_.empty())
    throw std::logic_error("Sampler: all " + std::to_string(max_rows_) + " token-counts rows are in use");
  seq.counts_row = free_rows_.back();
  free_rows_.pop_back();
  // The sequence's ids: prompt (marked) and what it generated before (counted), e.g. after a preemption.
  const size_t n = seq.token_ids.size();
  if (ids_bytes_ < n * sizeof(int32_t)) {
    ids_bytes_ = std::max(n * sizeof(int32_t), ids_bytes_ * 2);
    ids_buffer_ = backend_.alloc(ids_bytes_);
  }
  backend_.copy_to_device(ids_buffer_.get(), seq.token_ids.data(), n * sizeof(int32_t));
  int32_t* ids = static_cast<int32_t*>(ids_buffer_.get());
  const int64_t np = seq.num_prompt_tokens, no = static_cast<int64_t>(n) - np;
  backend_.reset_token_counts(counts_, seq.counts_row, Tensor(ids, DType::i32, {np}, backend_.device()),
                              Tensor(ids + np, DType::i32, {no}, backend_.device()));
}

void Sampler::release(Sequence& seq) {
  if (seq.counts_row < 0) return;
  free_rows_.push_back(seq.counts_row);
  seq.counts_row = -1;
}

void Sampler::sample(const std::vector<Sequence*>& seqs, const Tensor& logits, std::vector<int32_t>& tokens,
                     std::vector<PositionLogprobs>& logprobs) {
  const int B = static_cast<int>(seqs.size());
  tokens.assign(B, 0);
  logprobs.assign(B, PositionLogprobs{});
  if (B == 0) return;
  if (B > max_rows_) throw std::logic_error("Sampler: " + std::to_string(B) + " rows, built for " + std::to_string(max_rows_));
  // Sparse adds: logit_bias, and -inf on the stop ids while min_tokens are not out yet.
  int num_adds = 0;
  for (const Sequence* s : seqs) {
    num_adds += static_cast<int>(s->params.logit_bias.size());
    if (s->num_completion_tokens() < s->params.min_tokens) num_adds += static_cast<int>(s->min_tokens_mask.size());
  }
  const StageLayout L(B, num_adds);
  reserve_stage(L.total);
  char* h = stage_host_.get();
  auto* rows = reinterpret_cast<SamplingRow*>(h + L.rows);
  auto* filtered = reinterpret_cast<int32_t*>(h + L.filtered);
  auto* add_ids = reinterpret_cast<int32_t*>(h + L.add_ids);
  auto* add_values = reinterpret_cast<float*>(h + L.add_values);
  auto* lp_rows = reinterpret_cast<int32_t*>(h + L.lp_rows);
  int nf = 0, na = 0, R = 0, num_top = 0;
  std::vector<int> lp_which;
  for (int b = 0; b < B; ++b) {
    Sequence& s = *seqs[b];
    SamplingRow r = sampling_row(s, vocab_);
    if (r.has_penalties()) {
      if (s.counts_row < 0) assign_counts_row(s);
      r.counts_row = s.counts_row;
    }
    r.adds_begin = na;
    for (const auto& [id, bias] : s.params.logit_bias) {
      add_ids[na] = id;
      add_values[na++] = bias;
    }
    if (s.num_completion_tokens() < s.params.min_tokens)
      for (int32_t id : s.min_tokens_mask) {
        add_ids[na] = id;
        add_values[na++] = -std::numeric_limits<float>::infinity();
      }
    r.adds_end = na;
    rows[b] = r;
    if (r.has_filters()) filtered[nf++] = b;
    if (s.params.logprobs) {
      lp_rows[R++] = b;
      lp_which.push_back(b);
      num_top = std::max(num_top, *s.params.logprobs);
    }
  }
  backend_.copy_to_device(stage_device_.get(), h, L.total);
  char* d = static_cast<char*>(stage_device_.get());
  SampleBatch batch;
  batch.rows = reinterpret_cast<const SamplingRow*>(d + L.rows);
  batch.add_ids = reinterpret_cast<const int32_t*>(d + L.add_ids);
  batch.add_values = reinterpret_cast<const float*>(d + L.add_values);
  batch.num_adds = na;
  batch.counts = counts_;
  batch.filtered_rows = reinterpret_cast<const int32_t*>(d + L.filtered);
  batch.num_filtered = nf;
  batch.max_filtered_top_k = max_filtered_top_k(rows, B);

  const ResultLayout out(B, R, num_top);
  char* rd = static_cast<char*>(results_device_.get());
  const DeviceKind dev = backend_.device();
  Tensor token_t(rd + out.tokens, DType::i32, {B}, dev);
  backend_.sample(logits.rows(0, B), batch, token_t);
  if (R > 0) {
    LogprobsOut lo{Tensor(rd + out.token_lp, DType::f32, {R}, dev), Tensor(rd + out.ranks, DType::i32, {R}, dev),
                   Tensor(rd + out.top_ids, DType::i32, {R, num_top}, dev),
                   Tensor(rd + out.top_lp, DType::f32, {R, num_top}, dev)};
    backend_.logprobs(logits.rows(0, B), Tensor(d + L.lp_rows, DType::i32, {R}, dev), token_t, num_top, lo);
  }
  backend_.copy_to_host(results_host_.get(), rd, out.total);
  std::memcpy(tokens.data(), results_host_.get() + out.tokens, sizeof(int32_t) * B);
  if (R > 0) {
    read_logprobs(results_host_.get(), B, R, num_top, lp_which, logprobs);
    for (int i = 0; i < R; ++i) {  // each row keeps the number it asked for
      PositionLogprobs& p = logprobs[lp_which[i]];
      p.top.resize(std::min<size_t>(p.top.size(), static_cast<size_t>(*seqs[lp_which[i]]->params.logprobs)));
    }
  }
}

std::vector<PositionLogprobs> Sampler::logprobs(const Tensor& logits, const std::vector<int32_t>& ids, int num_top) {
  const int R = static_cast<int>(ids.size());
  std::vector<PositionLogprobs> result(R);
  if (R == 0) return result;
  if (R > max_rows_ || num_top > max_logprobs_)
    throw std::logic_error("Sampler::logprobs: " + std::to_string(R) + " rows of " + std::to_string(num_top));
  // Stage the rows 0..R-1 and the ids (in the rows and filtered sections: no sampling runs here).
  const StageLayout L(R, 0);
  reserve_stage(L.total);
  char* h = stage_host_.get();
  auto* rows = reinterpret_cast<int32_t*>(h + L.lp_rows);
  auto* idh = reinterpret_cast<int32_t*>(h + L.filtered);
  for (int i = 0; i < R; ++i) rows[i] = i;
  std::memcpy(idh, ids.data(), sizeof(int32_t) * R);
  backend_.copy_to_device(stage_device_.get(), h, L.total);
  char* d = static_cast<char*>(stage_device_.get());
  const DeviceKind dev = backend_.device();
  const ResultLayout out(0, R, num_top);
  char* rd = static_cast<char*>(results_device_.get());
  LogprobsOut lo{Tensor(rd + out.token_lp, DType::f32, {R}, dev), Tensor(rd + out.ranks, DType::i32, {R}, dev),
                 Tensor(rd + out.top_ids, DType::i32, {R, num_top}, dev),
                 Tensor(rd + out.top_lp, DType::f32, {R, num_top}, dev)};
  backend_.logprobs(logits.rows(0, R), Tensor(d + L.lp_rows, DType::i32, {R}, dev),
                    Tensor(d + L.filtered, DType::i32, {R}, dev), num_top, lo);
  backend_.copy_to_host(results_host_.get(), rd, out.total);
  std::vector<int> which(R);
  for (int i = 0; i < R; ++i) which[i] = i;
  read_logprobs(results_host_.get(), 0, R, num_top, which, result);
  for (int i = 0; i < R; ++i) result[i].token_id = ids[i];
  return result;
}

void Sampler::read_logprobs(const char* host, int B, int R, int num_top, const std::vector<int>& which,
                            std::vector<PositionLogprobs>& out) {
  const ResultLayout L(B, R, num_top);
  const auto* tokens = reinterpret_cast<const int32_t*>(host + L.tokens);
  const auto* token_lp = reinterpret_cast<const float*>(host + L.token_lp);
  const auto* ranks = reinterpret_cast<const int32_t*>(host + L.ranks);
  const auto* top_ids = reinterpret_cast<const int32_t*>(host + L.top_ids);
  const auto* top_lp = reinterpret_cast<const float*>(host + L.top_lp);
  for (int i = 0; i < R; ++i) {
    PositionLogprobs& p = out[which[i]];
    p.token_id = B > 0 ? tokens[which[i]] : -1;
    p.logprob = token_lp[i];
    p.rank = ranks[i];
    p.top.resize(num_top);
    for (int k = 0; k < num_top; ++k) p.top[k] = {top_ids[i * num_top + k], top_lp[i * num_top + k]};
  }
}

}  // namespace nanovllm
