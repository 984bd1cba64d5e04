// EngineConfig: how an LLM is built. Fields and defaults follow nano-vLLM's Config.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "nanovllm/device.h"

namespace nanovllm {

struct EngineConfig {
  std::string model;                  // Hugging Face model directory
  int max_num_batched_tokens = 16384; // token budget of one engine step
  int max_num_seqs = 512;             // sequences in one step
  int max_model_len = 4096;           // capped by the model's max_position_embeddings
  float gpu_memory_utilization = 0.9f;
  int tensor_parallel_size = 1;       // ranks, one process (and one GPU) each; rank 0 is this process
  bool enforce_eager = false;         // CUDA: no graphs
  int kvcache_block_size = 256;       // tokens per KV block
  int num_kvcache_blocks = -1;        // -1: sized from memory
  std::optional<DeviceKind> device;   // unset ("auto"): CUDA when a GPU is usable, else CPU; set once resolved
  uint64_t seed = 0;                  // default seed of sampling; a request's own seed wins
  bool enable_prefix_caching = true;
  // vLLM's --scheduling-policy: "fcfs" (arrival order) or "priority" (SamplingParams::priority,
  // then arrival; preemption takes the lowest priority first).
  std::string scheduling_policy = "fcfs";
  bool priority_scheduling() const { return scheduling_policy == "priority"; }
  // CPU, when num_kvcache_blocks is -1: the KV cache is sized to the job (max_num_seqs sequences
  // of max_model_len), capped by this many GiB (vLLM's VLLM_CPU_KVCACHE_SPACE; 0: its default, 4)
  // and by 90% of the memory available.
  double cpu_kvcache_space_gb = 0;
  int num_threads = 0;                // CPU: worker threads, 0 = all cores
  // The KV cache's dtype (vLLM's --kv-cache-dtype): "auto" (CUDA: bf16; CPU: the checkpoint's
  // weights' dtype, so bf16 for a bf16 checkpoint), "bfloat16" (or "bf16"), "float16", "float32"
  // (CPU), or FP8 with per-layer scales: "fp8" (= "fp8_e4m3") or "fp8_e5m2".
  std::string kv_cache_dtype = "auto";
  // An FP8 KV cache's scales, when the checkpoint has none (self_attn.k_scale / v_scale): true
  // (vLLM's calculate_kv_scales), measured by one forward of random tokens at start-up; false
  // (--no-calculate-kv-scales), 1.0.
  bool calculate_kv_scales = true;
  // vLLM's --quantization: "" (or "none"): weights as the checkpoint has them; "int8" (CPU):
  // weights quantized at load to int8 per output channel, int8 dot products with per-row
  // activation scales; "fp8": a float checkpoint's projections quantized at load to FP8 (e4m3)
  // per output channel, embedding and lm-head not (CUDA keeps FP8; the CPU dequantizes them back,
  // the FP8 model's exact weights). An FP8 checkpoint (quantization_config) needs no setting.
  std::string quantization;
  int max_logprobs = 20;              // the most SamplingParams::logprobs / prompt_logprobs may ask (vLLM's)
  // Where requests' default sampling parameters come from (vLLM's --generation-config): "auto",
  // the model's generation_config.json (temperature, top_k, top_p, min_p, repetition_penalty,
  // max_new_tokens) when it has one; "vllm", SamplingParams' own defaults; or a directory holding
  // a generation_config.json.
  std::string generation_config = "auto";
  // The chat template instead of the model's (vLLM's --chat-template): a file's path, or the
  // Jinja text itself; empty: the model's own.
  std::string chat_template;
  // How tensor-parallel ranks 1..N-1 start: the program and its first arguments (the worker
  // appends its own). Empty: the `nanovllm` executable ($NANOVLLM_WORKER, else beside this
  // program, else on PATH) with `worker`. The Python package runs its interpreter.
  std::vector<std::string> worker_command;
  // Across hosts (vLLM's names): the group forms through rank 0's TCP rendezvous at
  // master_addr:master_port. Only one node runs a model yet (docs/tensor-parallel.md).
  int nnodes = 1;
  int node_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
};

}  // namespace nanovllm
