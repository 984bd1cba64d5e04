// Builds bench.py's workload:
//   random.seed(0)
//   prompt_token_ids = [[randint(0, 10000) for _ in range(randint(100, 1024))] for _ in range(256)]
//   max_tokens = [randint(100, 1024) for _ in range(256)]
#include "cli/bench/workload.h"

#include <numeric>
#include <stdexcept>
#include <string>

#include "cli/bench/py_random.h"

namespace nanovllm {

int64_t Workload::prompt_tokens() const {
  int64_t n = 0;
  for (const auto& p : prompts) n += int64_t(p.size());
  return n;
}

int64_t Workload::output_tokens() const { return std::accumulate(max_tokens.begin(), max_tokens.end(), int64_t(0)); }

void validate(const WorkloadSpec& s) {
  auto range = [](const char* lo_name, int lo, const char* hi_name, int hi, int least) {
    if (lo < least)
      throw std::invalid_argument(std::string(lo_name) + " must be >= " + std::to_string(least) + ", got " +
                                  std::to_string(lo));
    if (hi < lo)
      throw std::invalid_argument(std::string(hi_name) + " (" + std::to_string(hi) + ") must be >= " + lo_name +
                                  " (" + std::to_string(lo) + ")");
  };
  if (s.num_seqs < 1) throw std::invalid_argument("num_seqs must be >= 1, got " + std::to_string(s.num_seqs));
  range("min_input", s.min_input, "max_input", s.max_input, 1);
  range("min_output", s.min_output, "max_output", s.max_output, 1);
  if (s.max_token_id < 0)
    throw std::invalid_argument("max_token_id must be >= 0, got " + std::to_string(s.max_token_id));
}

Workload make_workload(const WorkloadSpec& s) {
  validate(s);
  PyRandom rng = PyRandom::from_unsigned(s.seed);
  Workload w;
  w.prompts.resize(size_t(s.num_seqs));
  for (auto& p : w.prompts) {
    p.resize(size_t(rng.randint(s.min_input, s.max_input)));
    for (auto& id : p) id = int32_t(rng.randint(0, s.max_token_id));
  }
  w.max_tokens.resize(size_t(s.num_seqs));
  for (auto& m : w.max_tokens) m = int(rng.randint(s.min_output, s.max_output));
  return w;
}

}  // namespace nanovllm
