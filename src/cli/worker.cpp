// `nanovllm worker`: a tensor-parallel rank other than 0. Rank 0 (an engine with
// --tensor-parallel-size N) starts these itself; they are not meant to be run by hand.
#include <string>

#include "cli/commands.h"
#include "engine/tp_group.h"

namespace nanovllm::cli {

void add_worker_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("worker", "a tensor-parallel rank (started by rank 0)");
  cmd->group("");  // hidden from --help
  auto control = std::make_shared<std::string>();
  auto rank = std::make_shared<int>(0);
  cmd->add_option("--control", *control, "rank 0's control channel")->required();
  cmd->add_option("--rank", *rank, "this process's rank")->required();
  cmd->callback([control, rank] {
    const int code = run_worker(*control, *rank);
    if (code != 0) throw CLI::RuntimeError(code);
  });
}

}  // namespace nanovllm::cli
