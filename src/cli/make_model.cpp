// PLACEHOLDER until its issue lands: registers the subcommand and refuses to run.
#include <stdexcept>

#include "cli/commands.h"

namespace nanovllm::cli {
void add_make_model_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("make-model", "not built yet");
  cmd->allow_extras();
  cmd->callback([] { throw std::runtime_error("'make-model' is not built yet"); });
}
}  // namespace nanovllm::cli
