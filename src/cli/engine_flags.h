// The engine flags every front end shares (generate, bench, serve), vLLM's names.
#pragma once
#include <CLI/CLI.hpp>

#include "nanovllm/config.h"

namespace nanovllm::cli {
// Adds --model and the EngineConfig flags to `cmd`, writing into `config`.
void add_engine_flags(CLI::App* cmd, EngineConfig& config);
}  // namespace nanovllm::cli
