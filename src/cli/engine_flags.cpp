// The engine flags every front end shares.
#include "cli/engine_flags.h"

namespace nanovllm::cli {

void add_engine_flags(CLI::App* cmd, EngineConfig& c) {
  cmd->add_option("--model", c.model, "Hugging Face model directory")->required()->check(CLI::ExistingDirectory);
  cmd->add_option("--device", c.device, "cpu, cuda or auto")->check(CLI::IsMember({"cpu", "cuda", "auto"}));
  cmd->add_option("--max-num-batched-tokens", c.max_num_batched_tokens, "token budget of one step")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--max-num-seqs", c.max_num_seqs, "sequences in one step")->check(CLI::PositiveNumber);
  cmd->add_option("--max-model-len", c.max_model_len, "longest prompt + completion")->check(CLI::PositiveNumber);
  cmd->add_option("--gpu-memory-utilization", c.gpu_memory_utilization, "fraction of GPU memory to use")
      ->check(CLI::Range(0.05f, 1.0f));
  cmd->add_option("--tensor-parallel-size,--tp", c.tensor_parallel_size, "GPUs per model")->check(CLI::PositiveNumber);
  cmd->add_flag("--enforce-eager", c.enforce_eager, "no CUDA graphs");
  cmd->add_option("--block-size", c.kvcache_block_size, "tokens per KV block")->check(CLI::PositiveNumber);
  cmd->add_option("--num-kvcache-blocks", c.num_kvcache_blocks, "KV blocks (-1: from memory)");
  cmd->add_option("--seed", c.seed, "default sampling seed");
  cmd->add_flag("!--no-prefix-caching", c.enable_prefix_caching, "turn prefix caching off");
  cmd->add_option("--cpu-kvcache-space", c.cpu_kvcache_space_gb, "CPU: KV cache GiB")->check(CLI::PositiveNumber);
  cmd->add_option("--threads", c.num_threads, "CPU: threads (0: all cores)")->check(CLI::NonNegativeNumber);
}

}  // namespace nanovllm::cli
