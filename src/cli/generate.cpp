// `nanovllm generate`: runs prompts through the engine (the LLM API) and prints the completions,
// as text or as one JSON object per prompt and sample per line.
#include <algorithm>
#include <cstdio>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
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
  // The sampling flags given, each a setter applied over LLM::default_sampling_params(): a flag
  // left out keeps the model's default (its generation_config.json), as in vLLM's front ends.
  std::vector<std::function<void(SamplingParams&)>> params_set;
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

// JSON has no -inf (a token the model gives no probability): vLLM's OpenAI layer floors logprobs
// at -9999.0, and so does this output.
double logprob_json(float lp) { return std::max<double>(lp, -9999.0); }

// One position: {"token_id", "logprob", "rank", "top_logprobs": [{"token_id", "logprob"}, ...]}.
nlohmann::json position_json(const PositionLogprobs& p) {
  nlohmann::json top = nlohmann::json::array();
  for (const TokenLogprob& t : p.top) top.push_back({{"token_id", t.token_id}, {"logprob", logprob_json(t.logprob)}});
  return {{"token_id", p.token_id}, {"logprob", logprob_json(p.logprob)}, {"rank", p.rank}, {"top_logprobs", top}};
}

// vLLM's prompt_logprobs: null for the first prompt token (nothing predicts it), then one per token.
nlohmann::json prompt_logprobs_json(const std::vector<PositionLogprobs>& lps) {
  nlohmann::json j = nlohmann::json::array({nullptr});
  for (const PositionLogprobs& p : lps) j.push_back(position_json(p));
  return j;
}

// Text mode: a line per position, `  id "text": logprob (rank r); top: id "text" logprob, ...`.
void print_logprobs(const LLM& llm, const char* title, const std::vector<PositionLogprobs>& lps) {
  auto token = [&](int32_t id) {
    std::string s = std::to_string(id);
    if (llm.has_tokenizer())  // quoted as JSON, so that newlines and spaces show
      s += " " + nlohmann::json(llm.decode({id})).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    return s;
  };
  auto fixed4 = [](float v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.4f", v);
    return std::string(buf);
  };
  std::cout << title << ":\n";
  for (const PositionLogprobs& p : lps) {
    std::cout << "  " << token(p.token_id) << ": " << fixed4(p.logprob) << " (rank " << p.rank << ")";
    for (size_t k = 0; k < p.top.size(); ++k)
      std::cout << (k ? ", " : "; top: ") << token(p.top[k].token_id) << " " << fixed4(p.top[k].logprob);
    std::cout << "\n";
  }
}

// The type a sampling flag parses for its SamplingParams field: the value inside an optional.
template <class T>
struct FlagValue {
  using type = T;
};
template <class T>
struct FlagValue<std::optional<T>> {
  using type = T;
};

// "TOKEN_ID=BIAS" of --logit-bias; the engine checks the id against the vocabulary.
std::pair<int32_t, float> parse_logit_bias(const std::string& item) {
  const size_t eq = item.find('=');
  const std::string value = eq == std::string::npos ? "" : item.substr(eq + 1);
  float bias = 0;
  size_t used = 0;
  try {
    bias = std::stof(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  const std::vector<int32_t> id =
      eq == std::string::npos ? std::vector<int32_t>{} : parse_token_ids(item.substr(0, eq), "--logit-bias");
  if (id.size() != 1 || used == 0 || used != value.size())
    throw std::invalid_argument("--logit-bias '" + item + "': expected TOKEN_ID=BIAS, e.g. 42=-100");
  return {id[0], bias};
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
    ids.push_back(llm.encode(text, /*add_special_tokens=*/!a.chat));  // the template holds its own
  }
  SamplingParams params = llm.default_sampling_params();
  for (const auto& set : a.params_set) set(params);
  std::vector<RequestOutput> outs = llm.generate(ids, params, !a.no_progress);
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
        if (params.logprobs) {
          j["logprobs"] = nlohmann::json::array();
          for (const PositionLogprobs& p : c.logprobs) j["logprobs"].push_back(position_json(p));
        }
        if (params.prompt_logprobs) j["prompt_logprobs"] = prompt_logprobs_json(o.prompt_logprobs);
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
      if (params.prompt_logprobs && c.index == 0 && !o.prompt_logprobs.empty())
        print_logprobs(llm, "Prompt logprobs (from the second token)", o.prompt_logprobs);
      if (params.logprobs) print_logprobs(llm, "Logprobs", c.logprobs);
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
  // Sampling: vLLM's names. Left out, a field keeps LLM::default_sampling_params()' value (the
  // model's generation_config.json under --generation-config auto, else SamplingParams' default);
  // the engine checks the values (an error naming the field).
  auto param = [cmd, a](const std::string& flag, auto field, const std::string& help) {
    using Parsed = typename FlagValue<std::remove_cvref_t<decltype(std::declval<SamplingParams&>().*field)>>::type;
    return cmd->add_option_function<Parsed>(
        flag, [a, field](const Parsed& v) { a->params_set.push_back([field, v](SamplingParams& p) { p.*field = v; }); },
        help);
  };
  auto flag = [cmd, a](const std::string& name, bool SamplingParams::*field, const std::string& help) {
    return cmd->add_flag_function(
        name, [a, field](int64_t) { a->params_set.push_back([field](SamplingParams& p) { p.*field = true; }); }, help);
  };
  param("--temperature", &SamplingParams::temperature, "0 = greedy (default: the model's, else 1.0)")->check(kNumber);
  param("--max-tokens", &SamplingParams::max_tokens, "tokens to generate at most (default: the model's max_new_tokens, else 64)")
      ->check(kPositive);
  param("--top-p", &SamplingParams::top_p, "(0, 1]: sample from the smallest set holding this much probability")
      ->check(kNumber);
  param("--top-k", &SamplingParams::top_k, "sample from the k most likely tokens (0 or -1: all)")->check(kNumber);
  param("--min-p", &SamplingParams::min_p, "[0, 1]: drop tokens below min_p x the most likely one's probability")
      ->check(kNumber);
  param("--repetition-penalty", &SamplingParams::repetition_penalty, "> 0: penalize prompt and output tokens (1 = off)")
      ->check(kNumber);
  param("--presence-penalty", &SamplingParams::presence_penalty, "[-2, 2]: penalize tokens already generated")
      ->check(kNumber);
  param("--frequency-penalty", &SamplingParams::frequency_penalty, "[-2, 2]: penalize tokens by their output count")
      ->check(kNumber);
  cmd->add_option_function<std::vector<std::string>>(
         "--logit-bias",
         [a](const std::vector<std::string>& items) {
           std::map<int32_t, float> bias;
           for (const std::string& item : items) {
             const auto [id, value] = parse_logit_bias(item);
             bias[id] = value;
           }
           a->params_set.push_back([bias](SamplingParams& p) { p.logit_bias = bias; });
         },
         "TOKEN_ID=BIAS: add BIAS to the token's logit (repeatable; -inf bans it)")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  param("--min-tokens", &SamplingParams::min_tokens, "no EOS or stop token before this many tokens")->check(kNonNegative);
  param("--logprobs", &SamplingParams::logprobs,
        "each generated token's logprob and rank, and the N most likely (--json: \"logprobs\")")
      ->check(kNonNegative);
  param("--prompt-logprobs", &SamplingParams::prompt_logprobs,
        "the same for every prompt token after the first (--json: \"prompt_logprobs\", null first)")
      ->check(kNonNegative);
  flag("--ignore-eos", &SamplingParams::ignore_eos, "keep generating past end-of-sequence");
  param("--request-seed", &SamplingParams::seed,
        "every prompt's own sampling seed (SamplingParams.seed; --seed is the engine's default)");
  param("--n", &SamplingParams::n, "samples per prompt (they share the prompt's KV blocks)")->check(kPositive);
  param("--stop", &SamplingParams::stop, "stop when the output contains this text (repeatable)")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  cmd->add_option_function<std::string>(
      "--stop-token-ids",
      [a](const std::string& s) {
        a->params_set.push_back(
            [ids = parse_token_ids(s, "--stop-token-ids")](SamplingParams& p) { p.stop_token_ids = ids; });
      },
      "stop on any of these token ids, e.g. 1,2");
  flag("--include-stop-str-in-output", &SamplingParams::include_stop_str_in_output,
       "keep the stop string (or stop token's text) in the output");
  cmd->add_flag("--json", a->json, "one JSON object per prompt and sample per line");
  cmd->add_flag("--chat", a->chat, "wrap each --prompt in the chat template as one user message");
  cmd->add_flag("--no-thinking", a->no_thinking, "--chat: turn Qwen3's thinking off");
  cmd->add_flag("--no-progress", a->no_progress, "no progress bar");
  cmd->callback([a] { run(*a); });
}

}  // namespace nanovllm::cli
