// BPE vocabulary, merge ranks and the merge loop (see bpe_model.h).
#include "tokenizer/bpe_model.h"

#include <xxhash.h>

#include <algorithm>
#include <cstdio>
#include <queue>
#include <stdexcept>

#include "tokenizer/byte_level.h"
#include "tokenizer/utf8.h"

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

void BpeModel::finish(const Options& options, std::string_view where) {
  opt_ = options;
  const size_t n = id_token_.size();
  bytes_off_.assign(n + 1, 0);
  bytes_.clear();
  if (opt_.byte_level) {
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
    if (opt_.ignore_merges) {
      for (size_t id = 0; id < n; ++id)
        if (id_to_token(static_cast<int32_t>(id))) bytes_to_id_.insert(id_bytes(static_cast<int32_t>(id)), static_cast<int32_t>(id));
    }
  } else {
    for (int c = 0; c < 128; ++c) {
      auto id = token_to_id(std::string(1, static_cast<char>(c)));
      ascii_id_[c] = id ? *id : -1;
    }
    for (int b = 0; b < 256; ++b) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "<0x%02X>", b);  // HF: format!("<{b:#04X}>")
      auto id = opt_.byte_fallback ? token_to_id(buf) : std::nullopt;
      fallback_id_[b] = id ? *id : -1;
    }
    if (opt_.unk_token) {
      auto id = token_to_id(*opt_.unk_token);
      // HF fails only when a character needs it; so do we (unk_id_ stays -1 and encode says why).
      unk_id_ = id ? *id : -1;
    }
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

void BpeModel::encode_word(std::string_view piece, std::vector<int32_t>& out) const {
  if (opt_.ignore_merges) {
    if (const int32_t* id = (opt_.byte_level ? bytes_to_id_ : token_to_id_).find(piece)) {
      out.push_back(*id);
      return;
    }
  }
  if (opt_.byte_level) {
    auto p = reinterpret_cast<const uint8_t*>(piece.data());
    // The quadratic scan is fastest for the short pieces that make up nearly all text; the heap
    // keeps a 100 KB piece (a long run of one character) from taking minutes.
    if (piece.size() <= 64) encode_short(p, piece.size(), out);
    else encode_long(p, piece.size(), out);
    return;
  }
  thread_local std::vector<int32_t> ids;
  ids.clear();
  char_symbols(piece, ids);
  if (ids.size() <= 64) merge_short(ids.data(), ids.size(), out);
  else merge_long(ids.data(), ids.size(), out);
}

// HF's BPE::merge_word before merging: each character is its vocabulary entry; else (byte_fallback)
// its <0xNN> tokens when all exist; else unk, consecutive ones fused into one under fuse_unk;
// else nothing. As in HF, a pending unk is written only when a known character (or the end)
// comes, so byte-fallback tokens found in between go before it.
void BpeModel::char_symbols(std::string_view piece, std::vector<int32_t>& ids) const {
  bool unk_pending = false;
  for (size_t i = 0; i < piece.size();) {
    const size_t at = i;
    const auto c0 = static_cast<unsigned char>(piece[i]);
    int32_t id = -1;
    if (c0 < 0x80) {
      id = ascii_id_[c0];
      ++i;
    } else {
      utf8::next_codepoint(piece, i);
      if (const int32_t* v = token_to_id_.find(piece.substr(at, i - at))) id = *v;
    }
    if (id >= 0) {
      if (unk_pending) ids.push_back(unk_id_);
      unk_pending = false;
      ids.push_back(id);
      continue;
    }
    if (opt_.byte_fallback) {
      bool all = true;
      for (size_t k = at; k < i; ++k) all = all && fallback_id_[static_cast<uint8_t>(piece[k])] >= 0;
      if (all) {
        for (size_t k = at; k < i; ++k) ids.push_back(fallback_id_[static_cast<uint8_t>(piece[k])]);
        continue;
      }
    }
    if (!opt_.unk_token) continue;  // HF drops a character it cannot represent
    if (unk_id_ < 0)
      throw std::runtime_error("encode: unk_token \"" + *opt_.unk_token + "\" is not in model.vocab, and \"" +
                               std::string(piece.substr(at, i - at)) + "\" needs it");
    if (unk_pending && !opt_.fuse_unk) ids.push_back(unk_id_);
    unk_pending = true;
  }
  if (unk_pending) ids.push_back(unk_id_);
}

// Repeatedly merges the lowest-ranked adjacent pair, leftmost first.
void BpeModel::encode_short(const uint8_t* p, size_t n, std::vector<int32_t>& out) const {
  int32_t ids[64];
  for (size_t i = 0; i < n; ++i) ids[i] = byte_id_[p[i]];
  merge_short(ids, n, out);
}

void BpeModel::merge_short(int32_t* ids, size_t n, std::vector<int32_t>& out) const {
  uint64_t pr[64];  // rank << 32 | merged id of (ids[i], ids[i+1]); UINT64_MAX when none
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
//  2. After kMaxPasses, or sooner when passes merge under 1/32 of thousands of symbols each (a
//     long piece of varied text needs many distinct merges), HF's algorithm takes over from the
//     current state: a min-heap of candidates (rank << 32 | position) over the linked list of
//     symbols, stale entries skipped when popped.
void BpeModel::encode_long(const uint8_t* p, size_t n, std::vector<int32_t>& out) const {
  thread_local std::vector<int32_t> ids;
  ids.resize(n);
  for (size_t i = 0; i < n; ++i) ids[i] = byte_id_[p[i]];
  merge_long(ids.data(), n, out);
}

void BpeModel::merge_long(const int32_t* ids, size_t n, std::vector<int32_t>& out) const {
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
      s[i] = {ids[i], static_cast<int32_t>(i) - 1, i + 1 < n ? static_cast<int32_t>(i + 1) : -1, 0};
    for (size_t i = 0; i < n; ++i) s[i].pair = pair_of(static_cast<int32_t>(i));
  };
  reset();  // symbol 0 stays the head: merges only ever remove the right-hand symbol

  bool heap_phase = false;
  size_t live = n, merged_total = 0;  // symbols left, merges done by the passes
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
    size_t merges = 0;
    for (int32_t i = 0; i >= 0; i = s[i].next) {
      if (s[i].pair != best) continue;  // same rank means the same pair
      merge_at(s, i, merged);
      ++merges;
      s[i].pair = pair_of(i);
      if (s[i].prev >= 0) s[s[i].prev].pair = pair_of(s[i].prev);
      if ((s[i].pair >> 32) < rank || (s[i].prev >= 0 && (s[s[i].prev].pair >> 32) < rank)) out_of_order = true;
    }
    if (out_of_order) {  // a merge made a pair that outranks this one: rank order needs the heap
      reset();
      heap_phase = true;
      break;
    }
    // On thousands of symbols, passes that merge few of them on average mean varied text (a
    // whole SentencePiece segment, say), where each further pass costs a full scan for little:
    // the heap is cheaper from there. Judged over 4 passes, so that one rare pair ranked before
    // a run's merges ("x▁" in "xxxx…x▁y") does not send a run to the heap; on shorter pieces the
    // passes stay cheaper (measured on Gemma 3 and Llama 2).
    live -= merges;
    merged_total += merges;
    if (pass >= 3 && live > 2048 && merged_total * 32 < live * static_cast<size_t>(pass + 1)) {
      heap_phase = true;
      break;
    }
  }

  if (heap_phase) merge_with_heap(s, heap, pair_of);
  for (int32_t i = 0; i >= 0; i = s[i].next) out.push_back(s[i].id);
}

}  // namespace nanovllm
