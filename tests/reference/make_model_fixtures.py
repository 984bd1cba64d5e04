#!/usr/bin/env python3
"""Makes the Hugging Face reference fixtures for the engine: small random Qwen3 checkpoints and
their greedy continuations, computed by transformers in float64 on the CPU (the exact reference).

Run on the GPU machine (it has torch + transformers):  python3 tests/reference/make_model_fixtures.py OUT_DIR
Writes OUT_DIR/<name>/{config.json, model.safetensors or shards + index, expected.json}.

expected.json: {"prompts": [{"ids": [...], "greedy": [16 ids], "greedy_margins": [top1 - top2 logit per step],
                             "last_logits_top": [[id, logit], ...8]}]}
"""
import json
import os
import sys

import torch
import transformers
from transformers import Qwen3Config, Qwen3ForCausalLM

NUM_GREEDY = 16
PROMPT_LENGTHS = [1, 2, 5, 15, 16, 17, 33, 64, 100, 129, 150, 200]
MIN_MARGIN = 2e-3  # a prompt whose greedy path has a closer call than this is redrawn

MODELS = {
    # tied embeddings, GQA 2, head_dim 64; config rewritten with the legacy top-level rope_theta
    "tiny-tied": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=64, vocab_size=1000, tie_word_embeddings=True,
                      rope_theta=10000.0, max_position_embeddings=512, legacy_rope=True, shard=False),
    # separate lm_head, GQA 4, head_dim 128, q width != hidden, transformers 5's rope_parameters, sharded
    "small-untied": dict(hidden_size=96, intermediate_size=192, num_hidden_layers=3, num_attention_heads=4,
                         num_key_value_heads=1, head_dim=128, vocab_size=1000, tie_word_embeddings=False,
                         rope_theta=1000000.0, max_position_embeddings=1024, legacy_rope=False, shard=True),
}


def build(name, spec, seed):
    torch.manual_seed(seed)
    cfg = Qwen3Config(
        vocab_size=spec["vocab_size"], hidden_size=spec["hidden_size"], intermediate_size=spec["intermediate_size"],
        num_hidden_layers=spec["num_hidden_layers"], num_attention_heads=spec["num_attention_heads"],
        num_key_value_heads=spec["num_key_value_heads"], head_dim=spec["head_dim"],
        max_position_embeddings=spec["max_position_embeddings"], rms_norm_eps=1e-6,
        tie_word_embeddings=spec["tie_word_embeddings"], initializer_range=0.1,
        bos_token_id=1, eos_token_id=2, attention_bias=False, torch_dtype="float32")
    try:
        cfg.rope_parameters = {"rope_type": "default", "rope_theta": spec["rope_theta"]}
    except Exception:
        pass
    cfg.rope_theta = spec["rope_theta"]
    cfg._attn_implementation = "eager"
    model = Qwen3ForCausalLM(cfg).to(torch.float32).eval()
    # Norm weights are 1 at init: make them random so a missing norm shows up in the logits.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
    return cfg, model


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
    print("transformers", transformers.__version__, "torch", torch.__version__)
    for mi, (name, spec) in enumerate(MODELS.items()):
        cfg, model = build(name, spec, seed=1234 + mi)
        d = os.path.join(out_dir, name)
        os.makedirs(d, exist_ok=True)
        for f in os.listdir(d):
            os.remove(os.path.join(d, f))
        model.save_pretrained(d, safe_serialization=True, max_shard_size="1MB" if spec["shard"] else "1GB")
        cfg_path = os.path.join(d, "config.json")
        with open(cfg_path) as f:
            cj = json.load(f)
        if spec["legacy_rope"]:
            cj.pop("rope_parameters", None)
            cj.pop("rope_scaling", None)
            cj["rope_theta"] = spec["rope_theta"]
        else:
            cj.pop("rope_theta", None)
            cj["rope_parameters"] = {"rope_type": "default", "rope_theta": spec["rope_theta"]}
        with open(cfg_path, "w") as f:
            json.dump(cj, f, indent=2)
        gen_cfg = os.path.join(d, "generation_config.json")
        if os.path.exists(gen_cfg):
            os.remove(gen_cfg)

        # The reference: reload what was written (so the fixture matches the files) in float64.
        model64 = Qwen3ForCausalLM.from_pretrained(d, torch_dtype=torch.float64, attn_implementation="eager").eval()
        g = torch.Generator().manual_seed(99 + mi)
        prompts = []
        for L in PROMPT_LENGTHS:
            for attempt in range(50):
                ids = torch.randint(3, spec["vocab_size"], (L,), generator=g).tolist()
                toks, margins, last = greedy(model64, ids)
                if min(margins) >= MIN_MARGIN:
                    break
            top = torch.topk(last, 8)
            prompts.append({"ids": ids, "greedy": toks, "greedy_margins": margins,
                            "last_logits_top": [[int(i), float(v)] for v, i in zip(top.values, top.indices)]})
            print(name, "len", L, "min margin %.4f" % min(margins), "attempts", attempt + 1)
        with open(os.path.join(d, "expected.json"), "w") as f:
            json.dump({"model": name, "reference": "transformers %s float64 eager, cpu" % transformers.__version__,
                       "prompts": prompts}, f)
        print("wrote", d, sorted(os.listdir(d)))


if __name__ == "__main__":
    main()
