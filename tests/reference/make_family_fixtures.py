#!/usr/bin/env python3
"""Makes the Hugging Face reference fixtures of the model families beside Qwen3: small random
Llama, Qwen2, Mistral and Gemma 3 checkpoints covering each family's options, and their greedy
continuations computed by transformers in float64 (eager attention) on the CPU, the exact reference.

Run where torch + transformers are (the GPU machine; the CPU is enough):
    python3 tests/reference/make_family_fixtures.py OUT_DIR      # e.g. tests/fixtures/models
Writes OUT_DIR/<name>/{config.json, model.safetensors, expected.json} as make_model_fixtures.py
does (same expected.json format, plus "last_logits": the full last-position row of each prompt),
and prints each written config.json (transformers 5 writes rope settings as rope_parameters).
"""
import json
import os
import sys

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM

NUM_GREEDY = 24
MIN_MARGIN = 2e-3
VOCAB = 512

# Prompt lengths: several cross the sliding windows (16, 32) and the original context of the
# scaled-RoPE models (64), so the windows and the scaling are exercised.
PROMPT_LENGTHS = [1, 3, 17, 40, 70, 129, 200]

BASE = dict(vocab_size=VOCAB, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=512, rms_norm_eps=1e-6, initializer_range=0.1,
            bos_token_id=1, eos_token_id=2, pad_token_id=0)

FAMILIES = {
    # Llama 3.x: llama3 rope scaling, tied head, head_dim given (q width != hidden)
    "llama-tied-rope3": ("llama", dict(BASE, head_dim=64, tie_word_embeddings=True, rope_theta=500000.0,
                                       rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                     "high_freq_factor": 4.0, "original_max_position_embeddings": 64})),
    # Llama-derived: attention and MLP biases, untied head, linear rope scaling, GQA 4
    "llama-bias-linear": ("llama", dict(BASE, head_dim=64, num_key_value_heads=1, tie_word_embeddings=False,
                                        attention_bias=True, mlp_bias=True, rope_theta=10000.0,
                                        rope_scaling={"rope_type": "linear", "factor": 2.0})),
    # Llama-derived with yarn
    "llama-yarn": ("llama", dict(BASE, head_dim=64, tie_word_embeddings=True, rope_theta=10000.0,
                                 rope_scaling={"rope_type": "yarn", "factor": 4.0,
                                               "original_max_position_embeddings": 64})),
    # Qwen2 / Qwen2.5: bias on q/k/v, no q/k norm; head_dim = hidden / heads
    "qwen2-tied": ("qwen2", dict(BASE, hidden_size=256, tie_word_embeddings=True, rope_theta=1000000.0,
                                 use_sliding_window=False)),
    # Mistral: a sliding window shorter than the longer prompts
    "mistral-window": ("mistral", dict(BASE, head_dim=64, tie_word_embeddings=False, rope_theta=10000.0,
                                       sliding_window=32)),
    # Gemma 3 (text): (1 + w) norms, GELU-tanh, q/k norm, scaled embedding, sandwich norms,
    # sliding and global layers with their own RoPE, soft-capping of attention and final logits
    "gemma3-window": ("gemma3_text", dict(BASE, head_dim=64, num_hidden_layers=3, num_key_value_heads=1,
                                          tie_word_embeddings=True, sliding_window=16,
                                          layer_types=["sliding_attention", "sliding_attention", "full_attention"],
                                          rope_theta=1000000.0, rope_local_base_freq=10000.0,
                                          rope_scaling={"rope_type": "linear", "factor": 8.0},
                                          query_pre_attn_scalar=64, hidden_activation="gelu_pytorch_tanh",
                                          final_logit_softcapping=30.0, attn_logit_softcapping=50.0)),
}


def build(model_type, spec, seed):
    torch.manual_seed(seed)
    cfg = AutoConfig.for_model(model_type, **spec)
    cfg._attn_implementation = "eager"
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").to(torch.float32).eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("norm.weight"):  # random norms, so a missing or misapplied norm shows
                # Gemma stores w for (1 + w): around 0; the others around 1.
                p.copy_((0.0 if model_type.startswith("gemma") else 1.0) + 0.2 * torch.randn_like(p))
            elif n.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
    return model


def greedy(model64, ids):
    out, margins = [], []
    seq = list(ids)
    with torch.no_grad():
        logits = model64(torch.tensor([seq])).logits[0, -1]
        last = logits.clone()
        for _ in range(NUM_GREEDY):
            top2 = torch.topk(logits, 2)
            margins.append(float(top2.values[0] - top2.values[1]))
            nxt = int(top2.indices[0])
            out.append(nxt)
            seq.append(nxt)
            logits = model64(torch.tensor([seq])).logits[0, -1]
    return out, margins, last


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/models"
    only = set(sys.argv[2:])
    print("transformers", transformers.__version__, "torch", torch.__version__)
    torch.set_num_threads(8)
    for mi, (name, (model_type, spec)) in enumerate(FAMILIES.items()):
        if only and name not in only:
            continue
        model = build(model_type, spec, seed=4321 + mi)
        d = os.path.join(out_dir, name)
        os.makedirs(d, exist_ok=True)
        for f in os.listdir(d):
            os.remove(os.path.join(d, f))
        model.save_pretrained(d, safe_serialization=True)
        gen_cfg = os.path.join(d, "generation_config.json")
        if os.path.exists(gen_cfg):
            os.remove(gen_cfg)
        with open(os.path.join(d, "config.json")) as f:
            print("====", name, "config.json:", f.read())
        model64 = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float64, attn_implementation="eager").eval()
        g = torch.Generator().manual_seed(77 + mi)
        prompts = []
        for L in PROMPT_LENGTHS:
            for attempt in range(50):
                ids = torch.randint(3, VOCAB, (L,), generator=g).tolist()
                toks, margins, last = greedy(model64, ids)
                if min(margins) >= MIN_MARGIN:
                    break
            top = torch.topk(last, 8)
            prompts.append({"ids": ids, "greedy": toks, "greedy_margins": margins,
                            "last_logits_top": [[int(i), float(v)] for v, i in zip(top.values, top.indices)],
                            "last_logits": [float(v) for v in last]})
            print(name, "len", L, "min margin %.4f" % min(margins), "attempts", attempt + 1)
        with open(os.path.join(d, "expected.json"), "w") as f:
            json.dump({"model": name, "reference": "transformers %s float64 eager, cpu" % transformers.__version__,
                       "prompts": prompts}, f, allow_nan=False)
        print("wrote", d, sorted(os.listdir(d)))


if __name__ == "__main__":
    main()
