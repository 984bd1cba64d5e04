// The sampling defaults a model's generation_config.json recommends (vLLM's --generation-config):
// they become the defaults of requests that do not set those fields.
#pragma once
#include <filesystem>
#include <optional>
#include <string>

#include "nanovllm/sampling_params.h"

namespace nanovllm {

struct GenerationDefaults {
  std::optional<float> temperature, top_p, min_p, repetition_penalty;
  std::optional<int> top_k, max_new_tokens;
  std::string file;  // the generation_config.json they came from ("" when none)

  bool empty() const {
    return !temperature && !top_p && !min_p && !repetition_penalty && !top_k && !max_new_tokens;
  }
  // `base` with these fields in place of its own (max_new_tokens as max_tokens).
  SamplingParams apply(SamplingParams base) const;
  // "temperature=0.6, top_k=20, top_p=0.95" (the fields set), for the start-up line.
  std::string describe() const;
};

// `mode` as EngineConfig::generation_config takes it: "auto" reads model_dir/generation_config.json
// when present, "vllm" reads nothing, anything else is a directory whose generation_config.json
// must exist. Throws std::runtime_error naming the file and field for a malformed file or value.
GenerationDefaults load_generation_defaults(const std::filesystem::path& model_dir, const std::string& mode);

}  // namespace nanovllm
