// nanovllm: one executable, vLLM-style subcommands.
#include <cstdio>
#include <exception>

#include "cli/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"nanovllm: a small, fast LLM inference engine"};
  app.require_subcommand(1);
  nanovllm::cli::add_generate_command(app);
  nanovllm::cli::add_bench_command(app);
  nanovllm::cli::add_serve_command(app);
  nanovllm::cli::add_tokenize_command(app);
  nanovllm::cli::add_make_model_command(app);
  nanovllm::cli::add_worker_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "nanovllm: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
