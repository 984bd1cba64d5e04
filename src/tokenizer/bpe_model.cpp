// BPE vocabulary, merge ranks and the merge loop (see bpe_model.h).
#include "tokenizer/bpe_model.h"

#include <xxhash.h>

#include <algorithm>
#include <cstdio>
#include <queue>
#include <stdexcept>

#include "tokenizer/byte_level.h"

namespace nanovllm {

void BpeModel::add_token(std::string_view token, int32_t id, std::string_view where) {
  if (id < 0) throw std::runtime_error(std::string(where) + ": model.vocab id " + std::to_string(id) + " is negative");
  if (!token_to_id_.insert(token, id))
    throw std::runtime_error(std::string(where) + ": model.vocab has \"" + std::string(token) + "\" twice");
  if (static_cast<size_t>(id) >= id_token_.size()) id_token_.resize(id + 1, {0, UINT32_MAX});
  if (id_token_[id].second != UINT32_MAX)
    throw std::runtime_error(std::string(where) + ": model.vocab gives id " + std::to_string(id) + " to two tokens");
  id_token_[id] = {static_cast<uint32_t>(token_arena_.size()), static_cast<uint32_t>(token.size())};
  token_arena_.append(token);
}

void BpeModel::add_merge(std::string_view left, std::string_view right, std::string_view where) {
  auto missing = [&](std::string_view what) {
    return std::runtime_error(std::string(where) + ": merge \"" + std::string(left) + " " + std::string(right) +
                              "\" uses \"" + std::string(what) + "\", which is not in model.vocab");
  };
  auto l = token_to_id(left);
  if (!l) throw missing(left);
  auto r = token_to_id(right);
  if (!r) throw missing(right);
  merge_scratch_.assign(left);
  merge_scratch_.append(right);
  auto m = token_to_id(merge_scratch_);
  if (!m) throw missing(merge_scratch_);
  uint64_t rank = pending_merges_.size();
  uint64_t key = ((uint64_t(uint32_t(*l)) << 32) | uint32_t(*r)) + 1;
  pending_merges_.push_back({key, (rank << 32) | uint32_t(*m)});
}

void BpeModel::MergeTable::build(const std::vector<std::pair<uint64_t, uint64_t>>& entries) {
  size_t cap = 16;
  while (cap < entries.size() * 2) cap <<= 1;  // load factor <= 1/2 keeps probes short
  keys.assign(cap, 0);
  values.assign(cap, 0);
  mask = cap - 1;
  for (const auto& [k, v] : entries) {
    uint64_t h = (k * 0x9E3779B97F4A7C15ull) >> 20;
    for (;; ++h) {
      uint64_t slot = h & mask;
      // A pair listed twice takes its later rank, as HF's HashMap collect does.
      if (keys[slot] == 0 || keys[slot] == k) {
        keys[slot] = k;
        values[slot] = v;
        break;
      }
    }
  }
}

void BpeModel::finish(bool ignore_merges, std::string_view where) {
  ignore_merges_ = ignore_merges;
  const size_t n = id_token_.size();
  bytes_off_.assign(n + 1, 0);
  bytes_.clear();
  bytes_.reserve(token_arena_.size());
  for (size_t id = 0; id < n; ++id) {
    bytes_off_[id] = static_cast<uint32_t>(bytes_.size());
    if (auto tok = id_to_token(static_cast<int32_t>(id))) bytes_ += byte_level::token_to_bytes(*tok);
  }
  bytes_off_[n] = static_cast<uint32_t>(bytes_.size());
  for (int b = 0; b < 256; ++b) {
    std::string tok = byte_level::bytes_to_token(std::string(1, static_cast<char>(b)));
    auto id = token_to_id(tok);
    if (!id) {
      char buf[64];
      std::snprintf(buf, sizeof buf, ": model.vocab lacks the byte-level token for byte 0x%02X", b);
      throw std::runtime_error(std::string(where) + buf);
    }
    byte_id_[b] = *id;
  }
  if (ignore_merges_) {
    for (size_t id = 0; id < n; ++id)
      if (id_to_token(static_cast<int32_t>(id))) bytes_to_id_.insert(id_bytes(static_cast<int32_t>(id)), static_cast<int32_t>(id));
  }
  merges_.build(pending_merges_);
  pending_merges_.clear();
  pending_merges_.shrink_to_fit();
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
  const int32_t* v = token_to_id_.find(token);
  if (!v) return std::nullopt;
  return *v;
}

std::optional<std::string_view> BpeModel::id_to_token(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= id_token_.size() || id_token_[id].second == UINT32_MAX) return std::nullopt;
  return std::string_view(token_arena_.data() + id_token_[id].first, id_token_[id].second);
}

void BpeModel::encode_word(std::string_view bytes, std::vector<int32_t>& out) const {
  if (ignore_merges_) {
    if (const int32_t* id = bytes_to_id_.find(bytes)) {
      out.push_back(*id);
      return;
    }
  }
  auto p = reinterpret_cast<const uint8_t*>(bytes.data());
  // The quadratic scan is fastest for the short pieces that make up nearly all text; the heap
  // keeps a 100 KB piece (a long run of one character) from taking minutes.
  if (bytes.size() <= 64) encode_short(p, bytes.size(), out);
  else encode_long(p, bytes.size(), out);
}

// Repeatedly merges the lowest-ranked adjacent pair, leftmost first.
void BpeModel::encode_short(const uint8_t* p, size_t n, std::vector<int32_t>& out) const {
  int32_t ids[64];
  uint64_t pr[64];  // rank << 32 | merged id of (ids[i], ids[i+1]); UINT64_MAX when none
  for (size_t i = 0; i < n; ++i) ids[i] = byte_id_[p[i]];
  size_t m = n;
  for (size_t i = 0; i + 1 < m; ++i) pr[i] = merges_.find(ids[i], ids[i + 1]);
  while (m > 1) {
    uint64_t best = UINT64_MAX;
    size_t bi = 0;
    for (size_t i = 0; i + 1 < m; ++i) {
      if (pr[i] < best) {  // same rank means same pair: strict < keeps the leftmost
        best = pr[i];
        bi = i;
      }
    }
    if (best == UINT64_MAX) break;
    ids[bi] = static_cast<int32_t>(best & 0xFFFFFFFFu);
    --m;
    for (size_t j = bi + 1; j < m; ++j) ids[j] = ids[j + 1];
    for (size_t j = bi; j + 1 < m; ++j) pr[j] = pr[j + 1];
    if (bi > 0) pr[bi - 1] = merges_.find(ids[bi - 1], ids[bi]);
    if (bi + 1 < m) pr[bi] = merges_.find(ids[bi], ids[bi + 1]);
  }
  out.insert(out.end(), ids, ids + m);
}

namespace {

// One symbol of a long piece: a linked list over the piece's positions, so a merge unlinks the
// right-hand symbol without moving the rest.
struct Sym {
  int32_t id, prev, next;
  uint64_t pair;  // rank << 32 | merged id of (this, next); UINT64_MAX when they do not merge
};

// Merges symbol i with its right neighbour into `merged`.
inline void merge_at(std::vector<Sym>& s, int32_t i, int32_t merged) {
  Sym& b = s[s[i].next];
  s[i].id = merged;
  b.id = -1;
  s[i].next = b.next;
  if (b.next >= 0) s[b.next].prev = i;
}

// Phase 2 of encode_long: HF's algorithm over the symbols as they stand; `heap` is scratch kept
// between calls. A template taking encode_long's own pair_of lambda, called once, so it all
// inlines back into encode_long: measured no slower than the one-function version.
template <class PairOf>
inline void merge_with_heap(std::vector<Sym>& s, std::vector<uint64_t>& heap, const PairOf& pair_of) {
  heap.clear();
  for (int32_t i = 0; i >= 0; i = s[i].next)
    if (s[i].pair != UINT64_MAX) heap.push_back((s[i].pair & 0xFFFFFFFF00000000ull) | uint32_t(i));
  std::make_heap(heap.begin(), heap.end(), std::greater<uint64_t>());
  auto push = [&](int32_t i) {
    if (i < 0) return;
    uint64_t v = pair_of(i);
    if (v == UINT64_MAX) return;
    heap.push_back((v & 0xFFFFFFFF00000000ull) | uint32_t(i));
    std::push_heap(heap.begin(), heap.end(), std::greater<uint64_t>());
  };
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<uint64_t>());
    uint64_t c = heap.back();
    heap.pop_back();
    auto i = static_cast<int32_t>(c & 0xFFFFFFFFu);
    // Stale when the symbol was merged away (id -1) or the pair there is no longer this rank.
    if (s[i].id < 0 || s[i].next < 0) continue;
    uint64_t v = pair_of(i);
    if ((v >> 32) != (c >> 32)) continue;
    merge_at(s, i, static_cast<int32_t>(v & 0xFFFFFFFFu));
    push(s[i].prev);
    push(i);
  }
}

}  // namespace

// Long pieces, in two phases that give HF's result (lowest rank first, leftmost on ties):
//  1. Whole passes: find the lowest-ranked pair, merge every occurrence left to right. Long
//     pieces are mostly runs ("=====", "xxxx") that need only a few distinct merges, so a few
//     linear passes finish them. This equals rank order as long as no merge creates a pair
//     ranked below the current one (true of trained BPE); if one does, start over in phase 2.
//  2. After kMaxPasses (a long piece of varied text needs many distinct merges), HF's algorithm
//     takes over from the current state: a min-heap of candidates (rank << 32 | position) over
//     the linked list of symbols, stale entries skipped when popped.
void BpeModel::encode_long(const uint8_t* p, size_t n, std::vector<int32_t>& out) const {
  constexpr int kMaxPasses = 16;
  thread_local std::vector<Sym> s;
  thread_local std::vector<uint64_t> heap;
  // Long pieces ask about the same few pairs again and again: a small direct-mapped memo in
  // front of the (cache-missing) merge table.
  struct Memo {
    uint64_t key, value;
  };
  thread_local Memo memo[1024];
  for (Memo& m : memo) m.key = UINT64_MAX;
  auto find = [&](int32_t l, int32_t r) {
    uint64_t k = (uint64_t(uint32_t(l)) << 32) | uint32_t(r);
    Memo& m = memo[((k * 0x9E3779B97F4A7C15ull) >> 54) & 1023];
    if (m.key != k) m = {k, merges_.find(l, r)};
    return m.value;
  };
  auto pair_of = [&](int32_t i) { return s[i].next < 0 ? UINT64_MAX : find(s[i].id, s[s[i].next].id); };
  auto reset = [&] {
    s.resize(n);
    for (size_t i = 0; i < n; ++i)
      s[i] = {byte_id_[p[i]], static_cast<int32_t>(i) - 1, i + 1 < n ? static_cast<int32_t>(i + 1) : -1, 0};
    for (size_t i = 0; i < n; ++i) s[i].pair = pair_of(static_cast<int32_t>(i));
  };
  reset();  // symbol 0 stays the head: merges only ever remove the right-hand symbol

  bool heap_phase = false;
  for (int pass = 0;; ++pass) {
    uint64_t best = UINT64_MAX;
    for (int32_t i = 0; i >= 0; i = s[i].next) best = std::min(best, s[i].pair);
    if (best == UINT64_MAX) break;
    if (pass == kMaxPasses) {
      heap_phase = true;
      break;
    }
    const uint64_t rank = best >> 32;
    const auto merged = static_cast<int32_t>(best & 0xFFFFFFFFu);
    bool out_of_order = false;
    for (int32_t i = 0; i >= 0; i = s[i].next) {
      if (s[i].pair != best) continue;  // same rank means the same pair
      merge_at(s, i, merged);
      s[i].pair = pair_of(i);
      if (s[i].prev >= 0) s[s[i].prev].pair = pair_of(s[i].prev);
      if ((s[i].pair >> 32) < rank || (s[i].prev >= 0 && (s[s[i].prev].pair >> 32) < rank)) out_of_order = true;
    }
    if (out_of_order) {  // a merge made a pair that outranks this one: rank order needs the heap
      reset();
      heap_phase = true;
      break;
    }
  }

  if (heap_phase) merge_with_heap(s, heap, pair_of);
  for (int32_t i = 0; i >= 0; i = s[i].next) out.push_back(s[i].id);
}

}  // namespace nanovllm
