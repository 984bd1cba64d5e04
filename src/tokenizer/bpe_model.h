// The BPE model of a byte-level tokenizer: vocabulary, merges by rank, and the merge loop that
// turns one pre-tokenized piece (raw bytes) into ids, as HF tokenizers' BPE::merge_word does.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/string_table.h"

namespace nanovllm {

class BpeModel {
 public:
  // Building, in this order: every vocabulary entry, then the merges in rank order, then finish().
  // `where` names the file in errors.
  void add_token(std::string_view token, int32_t id, std::string_view where);
  void add_merge(std::string_view left, std::string_view right, std::string_view where);
  void finish(bool ignore_merges, std::string_view where);

  // Appends the ids of one piece (raw bytes, non-empty).
  void encode_word(std::string_view bytes, std::vector<int32_t>& out) const;
  // The two merge loops encode_word picks between by length (public so tests can hold them to
  // each other): a scan for pieces of at most 64 bytes, passes-then-heap for any length.
  void encode_short(const uint8_t* p, size_t n, std::vector<int32_t>& out) const;
  void encode_long(const uint8_t* p, size_t n, std::vector<int32_t>& out) const;

  size_t vocab_entries() const { return token_to_id_.size(); }
  int32_t max_id() const { return static_cast<int32_t>(id_token_.size()) - 1; }
  std::optional<int32_t> token_to_id(std::string_view token) const;
  // The vocabulary string of id, or nullopt when id is not in the vocabulary.
  std::optional<std::string_view> id_to_token(int32_t id) const;
  // The bytes id stands for (empty for an id not in the vocabulary).
  std::string_view id_bytes(int32_t id) const {
    return std::string_view(bytes_.data() + bytes_off_[id], bytes_off_[id + 1] - bytes_off_[id]);
  }

 private:
  // Open-addressing map from a pair of ids to (rank, merged id): the inner loop's only lookup.
  struct MergeTable {
    std::vector<uint64_t> keys;    // (left << 32 | right) + 1; 0 marks an empty slot
    std::vector<uint64_t> values;  // rank << 32 | merged id
    uint64_t mask = 0;
    void build(const std::vector<std::pair<uint64_t, uint64_t>>& entries);
    // Returns rank << 32 | merged id, or UINT64_MAX when the pair does not merge.
    uint64_t find(int32_t left, int32_t right) const {
      uint64_t k = ((uint64_t(uint32_t(left)) << 32) | uint32_t(right)) + 1;
      uint64_t h = (k * 0x9E3779B97F4A7C15ull) >> 20;
      for (;; ++h) {
        uint64_t slot = h & mask;
        if (keys[slot] == k) return values[slot];
        if (keys[slot] == 0) return UINT64_MAX;
      }
    }
  };

  StringTable token_to_id_;
  std::string token_arena_;                          // every vocabulary string, back to back
  std::vector<std::pair<uint32_t, uint32_t>> id_token_;  // id -> (offset, length); length UINT32_MAX: no such id
  StringTable bytes_to_id_;  // only filled when ignore_merges is on
  std::string bytes_;
  std::vector<uint32_t> bytes_off_;
  int32_t byte_id_[256];
  std::vector<std::pair<uint64_t, uint64_t>> pending_merges_;
  MergeTable merges_;
  std::string merge_scratch_;
  bool ignore_merges_ = false;
};

}  // namespace nanovllm
