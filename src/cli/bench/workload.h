// The benchmark workload: nano-vLLM bench.py's random token-id prompts and output lengths,
// rebuilt draw for draw with Python's generator so both projects measure the same requests.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace nanovllm {

struct WorkloadSpec {
  int num_seqs = 256;
  int min_input = 100, max_input = 1024;    // prompt lengths, both ends included
  int min_output = 100, max_output = 1024;  // max_tokens per request, both ends included
  int max_token_id = 10000;                 // prompt ids are randint(0, max_token_id)
  uint64_t seed = 0;                        // random.seed(seed)
};

struct Workload {
  std::vector<std::vector<int32_t>> prompts;
  std::vector<int> max_tokens;
  int64_t prompt_tokens() const;
  int64_t output_tokens() const;  // every request runs to max_tokens (ignore_eos)
};

// Throws std::invalid_argument naming the field when a range is empty or negative.
void validate(const WorkloadSpec& spec);

// bench.py's order: every prompt first (its length, then its ids), then every max_tokens.
Workload make_workload(const WorkloadSpec& spec);

}  // namespace nanovllm
