// The engine flags every front end shares (generate, bench, serve), vLLM's names.
#pragma once
#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "nanovllm/config.h"

namespace nanovllm::cli {
// Token ids written "1,2,3" on the command line; a bad item throws std::invalid_argument naming
// `flag`, the whole value and the item.
std::vector<int32_t> parse_token_ids(const std::string& s, const std::string& flag);

// Checks for numeric flags. CLI11's PositiveNumber says "Value 0 not in range 0.000000 to
// 1797693...": these say "--max-num-seqs: must be a positive number, got 0" (kNumber: only
// "--top-p: 'abc' is not a number"; the engine checks the range).
extern const CLI::Validator kPositive, kNonNegative, kNumber;

// Adds --model and the EngineConfig flags to `cmd`, writing into `config`.
void add_engine_flags(CLI::App* cmd, EngineConfig& config);
}  // namespace nanovllm::cli
