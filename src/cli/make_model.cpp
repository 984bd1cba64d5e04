// `nanovllm make-model`: writes a seeded random checkpoint of any supported family (a preset, or
// any shape), with the family's tokenizer copied in when the vocabulary is large enough to hold
// its ids.
#include <chrono>
#include <memory>
#include <cstdio>
#include <filesystem>
#include <stdexcept>
#include <string>

#include "cli/commands.h"
#include "model/random_model.h"
#include "tokenizer/tokenizer.h"

namespace nanovllm::cli {
namespace fs = std::filesystem;
namespace {

struct MakeModelArgs {
  std::string preset = "tiny", arch = "qwen3", out, tokenizer, dtype = "bf16";
  uint64_t seed = 0;
  int hidden = 0, intermediate = 0, layers = 0, heads = 0, kv_heads = 0, head_dim = 0, vocab = 0, max_pos = 0;
  double rope_theta = 0;
  bool tie = false, no_tie = false;
  std::string quantize;  // "" or "fp8"
};

void run(const MakeModelArgs& a) {
  const auto t0 = std::chrono::steady_clock::now();
  RandomModelSpec s = random_model_preset(a.preset, arch_from_name(a.arch));
  s.seed = a.seed;
  if (a.hidden) s.hidden_size = a.hidden;
  if (a.intermediate) s.intermediate_size = a.intermediate;
  if (a.layers) s.num_layers = a.layers;
  if (a.heads) s.num_heads = a.heads;
  if (a.kv_heads) s.num_kv_heads = a.kv_heads;
  if (a.head_dim) s.head_dim = a.head_dim;
  if (a.vocab) s.vocab_size = a.vocab;
  if (a.max_pos) s.max_position_embeddings = a.max_pos;
  if (a.rope_theta > 0) s.rope_theta = a.rope_theta;
  if (a.tie) s.tie_word_embeddings = true;
  if (a.no_tie) s.tie_word_embeddings = false;
  if (a.dtype == "bf16") s.dtype = DType::bf16;
  else if (a.dtype == "f32") s.dtype = DType::f32;
  else if (a.dtype == "f16") s.dtype = DType::f16;
  else throw std::invalid_argument("--dtype " + a.dtype + ": expected bf16, f16 or f32");
  s.quantize_fp8 = a.quantize == "fp8";

  // The family's tokenizer from scripts/setup.sh's models/, unless one is given.
  static const char* kTokenizers[] = {"qwen3", "llama3_1", "qwen3", "llama2", "gemma3"};
  fs::path tok_dir = a.tokenizer;
  const bool tok_given = !a.tokenizer.empty();
  const fs::path family_tok = fs::path("models") / (std::string(kTokenizers[static_cast<int>(s.arch)]) + "-tokenizer");
  if (!tok_given && fs::exists(family_tok / "tokenizer.json")) tok_dir = family_tok;
  if (tok_given && !fs::exists(tok_dir / "tokenizer.json"))
    throw std::runtime_error("--tokenizer " + tok_dir.string() + ": no tokenizer.json there");

  // Loaded (and so validated) before anything is written: a bad tokenizer leaves no half-made model.
  std::unique_ptr<Tokenizer> tok = tok_dir.empty() ? nullptr : Tokenizer::from_dir(tok_dir);
  const int need = tok ? tok->vocab_size() : 0;
  // A tiny model of another family ends on its tokenizer's EOS; without a tokenizer whose ids
  // fit, on the last id.
  if (a.preset == "tiny" && tok && need <= s.vocab_size + 64 && s.arch != ModelArch::qwen3 && s.arch != ModelArch::qwen2) {
    if (auto eos = tok->eos_token_id()) s.eos_token_ids = {*eos};
    if (auto bos = tok->bos_token_id()) s.bos_token_id = *bos;
  }
  const bool special_ids_fit = [&] {
    for (int id : s.eos_token_ids)
      if (id >= s.vocab_size) return false;
    return !s.bos_token_id || *s.bos_token_id < s.vocab_size;
  }();
  if (!special_ids_fit) {
    s.bos_token_id.reset();
    s.eos_token_ids = {s.vocab_size - 1};
  }

  write_random_model(s, a.out);

  std::string tok_note = "no tokenizer (none found; pass --tokenizer DIR)";
  if (!tok_dir.empty()) {
    // A few special tokens past the model's rows are usual (Gemma 3 1B: the image token); a prompt
    // holding one is refused by the engine as outside the vocabulary.
    if (need > s.vocab_size + 64) {
      tok_note = "no tokenizer: " + tok_dir.string() + " uses ids up to " + std::to_string(need - 1) +
                 " but the vocabulary has " + std::to_string(s.vocab_size);
    } else {
      for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
        if (fs::exists(tok_dir / f)) fs::copy_file(tok_dir / f, fs::path(a.out) / f, fs::copy_options::overwrite_existing);
      tok_note = "tokenizer from " + tok_dir.string();
    }
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("make-model: wrote %s (%s, preset %s, %d layers, hidden %d, vocab %d, %s, seed %llu) in %.1f s; %s\n",
              a.out.c_str(), arch_name(s.arch), a.preset.c_str(), s.num_layers, s.hidden_size, s.vocab_size, a.dtype.c_str(),
              static_cast<unsigned long long>(s.seed), secs, tok_note.c_str());
}

}  // namespace

void add_make_model_command(CLI::App& app) {
  auto args = std::make_shared<MakeModelArgs>();
  auto* cmd = app.add_subcommand("make-model", "Write a random checkpoint (config.json, model.safetensors)");
  cmd->add_option("--preset", args->preset,
                  "tiny (hidden 64, 2 layers, of --arch), or a real shape: qwen3-0.6b, llama3.2-1b, qwen2.5-0.5b, "
                  "gemma3-1b")
      ->capture_default_str();
  cmd->add_option("--arch", args->arch, "the family of a tiny model: qwen3, llama, qwen2, mistral, gemma3")
      ->capture_default_str();
  cmd->add_option("--out", args->out, "output directory")->required();
  cmd->add_option("--seed", args->seed, "random seed")->capture_default_str();
  cmd->add_option("--hidden-size", args->hidden);
  cmd->add_option("--intermediate-size", args->intermediate);
  cmd->add_option("--num-layers", args->layers);
  cmd->add_option("--num-heads", args->heads);
  cmd->add_option("--num-kv-heads", args->kv_heads);
  cmd->add_option("--head-dim", args->head_dim);
  cmd->add_option("--vocab-size", args->vocab);
  cmd->add_option("--max-position-embeddings", args->max_pos);
  cmd->add_option("--rope-theta", args->rope_theta);
  auto* tie = cmd->add_flag("--tie-word-embeddings", args->tie, "share embed_tokens as lm_head");
  auto* no_tie = cmd->add_flag("--no-tie", args->no_tie, "write a separate lm_head.weight");
  tie->excludes(no_tie);
  cmd->add_option("--dtype", args->dtype, "bf16, f16 or f32")->capture_default_str();
  cmd->add_option("--quantize", args->quantize,
                  "fp8: a Qwen3-FP8-style checkpoint (projections F8_E4M3 with 128x128 weight_scale_inv blocks; "
                  "embedding, norms and lm_head in --dtype)")
      ->check(CLI::IsMember({"fp8"}));
  cmd->add_option("--tokenizer", args->tokenizer,
                  "directory with tokenizer.json to copy (default: the family's in models/, when present)");
  cmd->callback([args] { run(*args); });
}

}  // namespace nanovllm::cli
