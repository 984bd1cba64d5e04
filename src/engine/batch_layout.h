// BatchLayout: where each per-step input array sits in the one staging buffer that is copied to
// the device in a single transfer. Offsets depend only on (tokens, seqs, sampled rows), so a
// decode batch padded to a captured graph's size lands at the addresses the graph recorded.
#pragma once
#include <cstddef>
#include <cstdint>

namespace nanovllm {

struct BatchLayout {
  // Byte offsets (16-byte aligned sections).
  size_t input_ids, positions, slot_mapping;    // i32 [T] each
  size_t cu_seqlens_q, seqlens_k;               // i32 [S+1], i32 [S]
  size_t last_token_indices;                    // i32 [B]
  size_t block_tables;                          // i32 [S * max_num_blocks]
  size_t total;
  int num_tokens, num_seqs, num_rows;  // what it was laid out for

  BatchLayout(int num_tokens, int num_seqs, int num_rows, int max_num_blocks)
      : num_tokens(num_tokens), num_seqs(num_seqs), num_rows(num_rows) {
    size_t off = 0;
    auto take = [&off](size_t bytes) {
      size_t at = off;
      off += (bytes + 15) / 16 * 16;  // 16-byte aligned sections
      return at;
    };
    const size_t T = num_tokens, S = num_seqs, B = num_rows;
    input_ids = take(T * 4);
    positions = take(T * 4);
    slot_mapping = take(T * 4);
    cu_seqlens_q = take((S + 1) * 4);
    seqlens_k = take(S * 4);
    last_token_indices = take(B * 4);
    block_tables = take(S * static_cast<size_t>(max_num_blocks) * 4);
    total = off;
  }

  // The arrays as typed pointers into a buffer laid out this way (host staging or device).
  struct Arrays {
    int32_t *input_ids, *positions, *slot_mapping, *cu_seqlens_q, *seqlens_k, *last_token_indices, *block_tables;
  };
  Arrays arrays(char* base) const {
    auto i32 = [base](size_t off) { return reinterpret_cast<int32_t*>(base + off); };
    return {i32(input_ids), i32(positions), i32(slot_mapping),
            i32(cu_seqlens_q), i32(seqlens_k), i32(last_token_indices), i32(block_tables)};
  }
};

}  // namespace nanovllm
