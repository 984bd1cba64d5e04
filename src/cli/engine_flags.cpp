// The engine flags every front end shares.
#include "cli/engine_flags.h"

#include <exception>
#include <filesystem>
#include <string>

namespace nanovllm::cli {
namespace {

// "" when `s` is a number (all of it) that `ok` accepts, else the message CLI11 prints after the flag.
CLI::Validator number_check(bool (*ok)(double), const char* what, const char* name) {
  return CLI::Validator(
      [ok, what](std::string& s) -> std::string {
        double v = 0;
        size_t used = 0;
        try {
          v = std::stod(s, &used);
        } catch (const std::exception&) {  // no number at all, or out of double's range
        }
        if (used == 0 || used != s.size()) return std::string("'") + s + "' is not a number";
        return ok(v) ? std::string() : std::string("must be ") + what + ", got " + s;
      },
      name, name);
}

}  // namespace

const CLI::Validator kPositive = number_check([](double v) { return v > 0; }, "a positive number", "POSITIVE");
const CLI::Validator kNonNegative = number_check([](double v) { return v >= 0; }, "zero or more", "NONNEGATIVE");
const CLI::Validator kNumber = number_check([](double) { return true; }, "a number", "NUMBER");

void add_engine_flags(CLI::App* cmd, EngineConfig& c) {
  cmd->add_option("--model", c.model, "Hugging Face model directory")->required()->check(CLI::ExistingDirectory);
  cmd->add_option_function<std::string>(
         "--device", [&c](const std::string& s) { c.device = parse_device(s); }, "cpu, cuda or auto (default)")
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}));
  cmd->add_option("--max-num-batched-tokens", c.max_num_batched_tokens, "token budget of one step")
      ->check(kPositive);
  cmd->add_option("--max-num-seqs", c.max_num_seqs, "sequences in one step")->check(kPositive);
  cmd->add_option("--max-model-len", c.max_model_len, "longest prompt + completion")->check(kPositive);
  cmd->add_option("--gpu-memory-utilization", c.gpu_memory_utilization, "fraction of GPU memory to use")
      ->check(CLI::Range(0.05f, 1.0f));
  cmd->add_option("--tensor-parallel-size,--tp", c.tensor_parallel_size,
                  "ranks the model is split over (one process and GPU each; on the CPU, a share of the cores)")
      ->check(kPositive);
  cmd->add_option("--nnodes", c.nnodes, "hosts the tensor-parallel group spans (only 1 runs yet)")->check(kPositive);
  cmd->add_option("--node-rank", c.node_rank, "this host's index among --nnodes")->check(kNonNegative);
  cmd->add_option("--master-addr", c.master_addr, "address of node 0's rendezvous")->capture_default_str();
  cmd->add_option("--master-port", c.master_port, "port of node 0's rendezvous")
      ->check(CLI::Range(1, 65535))
      ->capture_default_str();
  cmd->add_flag("--enforce-eager", c.enforce_eager, "no CUDA graphs");
  cmd->add_option("--block-size", c.kvcache_block_size, "tokens per KV block")->check(kPositive);
  cmd->add_option("--num-kvcache-blocks", c.num_kvcache_blocks, "KV blocks (-1: from memory)");
  cmd->add_option("--seed", c.seed, "default sampling seed");
  cmd->add_flag("--enable-prefix-caching,!--no-enable-prefix-caching,!--no-prefix-caching", c.enable_prefix_caching,
                "prefix caching on (the default) or off (vLLM's names; --no-prefix-caching is the old one)");
  cmd->add_option("--cpu-kvcache-space", c.cpu_kvcache_space_gb,
                  "CPU: the most GiB the KV cache may take (it is sized to max-num-seqs x max-model-len, and to 90% "
                  "of available memory at most; 0: 4 GiB, vLLM's VLLM_CPU_KVCACHE_SPACE default)")
      ->check(kNonNegative);
  cmd->add_option("--kv-cache-dtype", c.kv_cache_dtype,
                  "KV cache dtype: auto (CUDA: bf16; CPU: the checkpoint's, bf16 for a bf16 model), bfloat16 (bf16), "
                  "float16, float32 (CPU), or FP8 with per-layer scales: fp8 (= fp8_e4m3) or fp8_e5m2")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "bfloat16", "bf16", "float16", "float32", "fp8", "fp8_e4m3", "fp8_e5m2"}));
  cmd->add_flag("--calculate-kv-scales,!--no-calculate-kv-scales", c.calculate_kv_scales,
                "FP8 KV cache without scales in the checkpoint: measure them with one forward of random tokens at "
                "start-up (the default), or use 1.0 (--no-calculate-kv-scales)");
  cmd->add_option("--quantization,-q", c.quantization,
                  "weight quantization: none; int8 (CPU: int8 weights per output channel, quantized at load); fp8 "
                  "(a float checkpoint's projections quantized to FP8 e4m3 per output channel at load; the CPU keeps "
                  "them dequantized, the FP8 model's exact weights). FP8 checkpoints need no flag")
      ->check(CLI::IsMember({"none", "int8", "fp8"}));
  cmd->add_option("--threads", c.num_threads, "CPU: threads (0: all cores)")->check(kNonNegative);
  // The directory's generation_config.json is read (and its absence reported) by the engine.
  cmd->add_option("--generation-config", c.generation_config,
                  "default sampling parameters: auto (the model's generation_config.json, when it has one), "
                  "vllm (SamplingParams' own) or a directory holding a generation_config.json")
      ->capture_default_str()
      ->check(CLI::Validator(
          [](std::string& s) {
            if (s == "auto" || s == "vllm" || std::filesystem::is_directory(s)) return std::string();
            return "'" + s + "' is not auto, vllm or a directory";
          },
          "auto|vllm|DIR", "GENERATION_CONFIG"));
  cmd->add_option("--chat-template", c.chat_template,
                  "Jinja chat template to use instead of the model's: a file, or the template text itself");
  cmd->add_option("--max-logprobs", c.max_logprobs, "the most logprobs / prompt logprobs a request may ask (at most 64)")
      ->capture_default_str()
      ->check(kNonNegative);
}

std::vector<int32_t> parse_token_ids(const std::string& s, const std::string& flag) {
  std::vector<int32_t> ids;
  size_t pos = 0;
  while (pos <= s.size()) {
    const size_t comma = s.find(',', pos);
    const std::string item = s.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (item.empty() || used != item.size() || v < 0 || v > INT32_MAX)
      throw std::invalid_argument(flag + " '" + s + "': '" + item + "' is not a token id");
    ids.push_back(static_cast<int32_t>(v));
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return ids;
}

}  // namespace nanovllm::cli
