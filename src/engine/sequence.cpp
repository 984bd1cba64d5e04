// Sequence: the per-request state the scheduler and block manager work on.
#include "engine/sequence.h"

#include <algorithm>
#include <cassert>
#include <utility>

namespace nanovllm {

Sequence::Sequence(int64_t id, std::vector<int32_t> prompt, const SamplingParams& p, int bs, uint64_t key,
                   double arrival)
    : seq_id(id),
      token_ids(std::move(prompt)),
      num_prompt_tokens(static_cast<int>(token_ids.size())),
      params(p),
      block_size(bs),
      sample_key(key),
      arrival_time(arrival) {}

std::span<const int32_t> Sequence::block(int i) const {
  assert(i >= 0 && i < num_blocks());
  size_t begin = static_cast<size_t>(i) * block_size;
  size_t end = std::min(token_ids.size(), begin + block_size);
  return std::span<const int32_t>(token_ids.data() + begin, end - begin);
}

std::vector<int32_t> Sequence::completion_token_ids() const {
  return std::vector<int32_t>(token_ids.begin() + num_prompt_tokens, token_ids.end());
}

}  // namespace nanovllm
