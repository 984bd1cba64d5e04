// The BPE model: vocabulary, merges by rank, and the merge loop that turns one pre-tokenized
// piece into ids, as HF tokenizers' BPE::merge_word does. Byte-level models (GPT-2 style) start
// from one symbol per byte; SentencePiece-style ones from one symbol per character, with
// byte_fallback (<0xNN> tokens) or unk_token for characters not in the vocabulary.
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
  // The "model" options of tokenizer.json, plus whether the pre-tokenizer is ByteLevel.
  struct Options {
    bool byte_level = true;       // symbols are bytes, vocabulary strings spell them in GPT-2's alphabet
    bool byte_fallback = false;   // a character not in the vocabulary becomes its <0xNN> tokens
    bool fuse_unk = false;        // consecutive unknown characters make one unk
    bool ignore_merges = false;   // a piece that is a vocabulary entry is that entry (Llama 3)
    std::optional<std::string> unk_token;
  };

  // Building, in this order: every vocabulary entry, then the merges in rank order, then finish().
  // `where` names the file in errors.
  void add_token(std::string_view token, int32_t id, std::string_view where);
  void add_merge(std::string_view left, std::string_view right, std::string_view where);
  void finish(const Options& options, std::string_view where);

  // Appends the ids of one piece (non-empty): raw bytes for a byte-level model, else the
  // normalized text itself.
  void encode_word(std::string_view piece, std::vector<int32_t>& out) const;
  // The two merge loops encode_word picks between by length (public so tests can hold them to
  // each other): a scan for at most 64 symbols, passes-then-heap for any number. Byte-level
  // pieces as bytes, or any model's initial symbols as ids.
  void encode_short(const uint8_t* p, size_t n, std::vector<int32_t>& out) const;
  void encode_long(const uint8_t* p, size_t n, std::vector<int32_t>& out) const;
  void merge_short(int32_t* ids, size_t n, std::vector<int32_t>& out) const;
  void merge_long(const int32_t* ids, size_t n, std::vector<int32_t>& out) const;
  // The initial symbols of a SentencePiece-style piece (characters, byte fallback, unk), as HF's
  // merge_word builds its Word.
  void char_symbols(std::string_view piece, std::vector<int32_t>& ids) const;

  bool byte_level() const { return opt_.byte_level; }

  size_t vocab_entries() const { return token_to_id_.size(); }
  int32_t max_id() const { return static_cast<int32_t>(id_token_.size()) - 1; }
  std::optional<int32_t> token_to_id(std::string_view token) const;
  // The vocabulary string of id, or nullopt when id is not in the vocabulary.
  std::optional<std::string_view> id_to_token(int32_t id) const;
  // The bytes id stands for in a byte-level model (empty for an id not in the vocabulary).
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
  StringTable bytes_to_id_;  // only filled when ignore_merges is on in a byte-level model
  std::string bytes_;
  std::vector<uint32_t> bytes_off_;
  int32_t byte_id_[256];      // byte-level: the symbol of each byte
  int32_t fallback_id_[256];  // byte_fallback: the id of <0xNN>, or -1
  int32_t ascii_id_[128];     // SentencePiece-style: the id of each ASCII character, or -1
  int32_t unk_id_ = -1;
  std::vector<std::pair<uint64_t, uint64_t>> pending_merges_;
  MergeTable merges_;
  std::string merge_scratch_;
  Options opt_;
};

}  // namespace nanovllm
