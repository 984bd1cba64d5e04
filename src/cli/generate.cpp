// `nanovllm generate`: runs prompts through the engine (the LLM API) and prints the completions,
// as text or as one JSON object per prompt and sample per line.
#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

#include "cli/commands.h"
#include "cli/engine_flags.h"
#include "nanovllm/llm.h"

namespace nanovllm::cli {
namespace {

struct Prompt {
  bool is_text = true;
  std::string text;
  std::vector<int32_t> ids;
};

struct GenerateArgs {
  EngineConfig config;
  std::vector<Prompt> prompts;  // in command-line order, --prompt and --prompt-ids mixed
  SamplingParams params;
  bool json = false, chat = false, no_thinking = false, no_progress = false;
};

std::string ids_str(const std::vector<int32_t>& ids) {
  std::string s = "[";
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? ", " : "") + std::to_string(ids[i]);
  return s + "]";
}

// vLLM's stop_reason: the stop string, the stop token id, or null.
nlohmann::json stop_reason_json(const StopReason& r) {
  if (const auto* id = std::get_if<int32_t>(&r)) return *id;
  if (const auto* str = std::get_if<std::string>(&r)) return *str;
  return nullptr;
}

void run(GenerateArgs& a) {
  if (a.prompts.empty()) throw std::invalid_argument("generate: give at least one --prompt or --prompt-ids");
  LLM llm(a.config);
  std::vector<std::vector<int32_t>> ids;
  for (const Prompt& p : a.prompts) {
    if (!p.is_text) {
      ids.push_back(p.ids);
      continue;
    }
    if (!llm.has_tokenizer())
      throw std::invalid_argument("--prompt needs a tokenizer, and '" + a.config.model +
                                  "' has no tokenizer.json (use --prompt-ids)");
    std::string text = a.chat ? llm.apply_chat_template({{"user", p.text, ""}}, true, !a.no_thinking) : p.text;
    ids.push_back(llm.encode(text));
  }
  std::vector<RequestOutput> outs = llm.generate(ids, a.params, !a.no_progress);
  for (size_t i = 0; i < outs.size(); ++i) {
    const RequestOutput& o = outs[i];
    const Prompt& p = a.prompts[i];
    for (const CompletionOutput& c : o.outputs) {
      if (a.json) {
        nlohmann::json j;
        if (p.is_text) j["prompt"] = p.text;
        j["prompt_token_ids"] = o.prompt_token_ids;
        j["index"] = c.index;
        j["token_ids"] = c.token_ids;
        if (llm.has_tokenizer()) j["text"] = c.text;
        j["finish_reason"] = to_string(c.finish_reason);
        j["stop_reason"] = stop_reason_json(c.stop_reason);
        j["num_cached_prompt_tokens"] = o.num_cached_prompt_tokens;
        std::cout << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
        continue;
      }
      if (i || c.index) std::cout << "\n";
      if (c.index == 0) std::cout << "Prompt: " << (p.is_text ? p.text : ids_str(p.ids)) << "\n";
      std::cout << (o.outputs.size() > 1 ? "Completion " + std::to_string(c.index) : std::string("Completion"))
                << ": " << (llm.has_tokenizer() ? c.text : ids_str(c.token_ids)) << "\n";
      std::cout << "(" << c.token_ids.size() << " tokens, finish_reason " << to_string(c.finish_reason) << ")\n";
    }
  }
  std::cout.flush();
  EngineStats s = llm.stats();
  std::fprintf(stderr,
               "nanovllm: %zu prompts; prefill %lld tokens in %.2fs (%.0f tok/s), decode %lld tokens in %.2fs "
               "(%.1f tok/s); prefix cache hits %lld/%lld tokens; peak memory %.1f MiB\n",
               outs.size(), static_cast<long long>(s.prefill_tokens), s.prefill_seconds,
               s.prefill_seconds > 0 ? s.prefill_tokens / s.prefill_seconds : 0.0,
               static_cast<long long>(s.decode_tokens), s.decode_seconds,
               s.decode_seconds > 0 ? s.decode_tokens / s.decode_seconds : 0.0,
               static_cast<long long>(s.prefix_cache_hits), static_cast<long long>(s.prefix_cache_queries),
               s.peak_device_bytes / (1024.0 * 1024.0));
}

}  // namespace

void add_generate_command(CLI::App& app) {
  auto a = std::make_shared<GenerateArgs>();
  auto* cmd = app.add_subcommand("generate", "Generate completions for prompts");
  add_engine_flags(cmd, a->config);
  cmd->add_option_function<std::string>(
         "--prompt", [a](const std::string& s) { a->prompts.push_back({true, s, {}}); }, "a text prompt (repeatable)")
      ->trigger_on_parse()
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  cmd->add_option_function<std::string>(
         "--prompt-ids",
         [a](const std::string& s) { a->prompts.push_back({false, "", parse_token_ids(s, "--prompt-ids")}); },
         "a prompt as token ids, e.g. 1,2,3 (repeatable)")
      ->trigger_on_parse()
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  cmd->add_option("--temperature", a->params.temperature, "0 = greedy")->capture_default_str();
  cmd->add_option("--max-tokens", a->params.max_tokens, "tokens to generate at most")
      ->capture_default_str()
      ->check(kPositive);
  cmd->add_flag("--ignore-eos", a->params.ignore_eos, "keep generating past end-of-sequence");
  cmd->add_option_function<uint64_t>(
      "--request-seed", [a](uint64_t v) { a->params.seed = v; },
      "every prompt's own sampling seed (SamplingParams.seed; --seed is the engine's default)");
  cmd->add_option("--n", a->params.n, "samples per prompt (they share the prompt's KV blocks)")->check(kPositive);
  cmd->add_option("--stop", a->params.stop, "stop when the output contains this text (repeatable)")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  cmd->add_option_function<std::string>(
         "--stop-token-ids",
         [a](const std::string& s) { a->params.stop_token_ids = parse_token_ids(s, "--stop-token-ids"); },
         "stop on any of these token ids, e.g. 1,2");
  cmd->add_flag("--include-stop-str-in-output", a->params.include_stop_str_in_output,
                "keep the stop string (or stop token's text) in the output");
  cmd->add_flag("--json", a->json, "one JSON object per prompt and sample per line");
  cmd->add_flag("--chat", a->chat, "wrap each --prompt in the chat template as one user message");
  cmd->add_flag("--no-thinking", a->no_thinking, "--chat: turn Qwen3's thinking off");
  cmd->add_flag("--no-progress", a->no_progress, "no progress bar");
  cmd->callback([a] { run(*a); });
}

}  // namespace nanovllm::cli
