// Each subcommand of the `nanovllm` executable registers itself on the CLI11 app.
#pragma once
#include <CLI/CLI.hpp>

namespace nanovllm::cli {
void add_generate_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void add_serve_command(CLI::App& app);
void add_tokenize_command(CLI::App& app);
void add_make_model_command(CLI::App& app);
void add_worker_command(CLI::App& app);
}  // namespace nanovllm::cli
