// PLACEHOLDER until its issue lands: registers the subcommand and refuses to run.
#include <stdexcept>

#include "cli/commands.h"

namespace nanovllm::cli {
void add_tokenize_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("tokenize", "not built yet");
  cmd->allow_extras();
  cmd->callback([] { throw std::runtime_error("'tokenize' is not built yet"); });
}
}  // namespace nanovllm::cli
