// A small program over the public API (nano-vLLM's example.py): chat prompts in, completions out.
//   example MODEL_DIR [--device cpu|cuda|auto]
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "nanovllm/llm.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MODEL_DIR [--device cpu|cuda|auto]\n", argv[0]);
    return 2;
  }
  try {
    nanovllm::EngineConfig config;
    if (argc >= 4 && std::string(argv[2]) == "--device") config.device = nanovllm::parse_device(argv[3]);
    config.max_model_len = 1024;
    nanovllm::LLM llm(argv[1], config);

    nanovllm::SamplingParams params{.temperature = 0.6f, .max_tokens = 32};
    std::vector<std::string> prompts;
    for (const char* p : {"introduce yourself", "list all prime numbers within 100"})
      prompts.push_back(llm.apply_chat_template({{"user", p, ""}}, /*add_generation_prompt=*/true,
                                                /*enable_thinking=*/false));
    std::vector<nanovllm::RequestOutput> outs = llm.generate(prompts, params);
    for (size_t i = 0; i < outs.size(); ++i)
      std::printf("\nPrompt: %s\nCompletion: %s\n", prompts[i].c_str(), outs[i].text().c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "example: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
