#!/usr/bin/env python3
"""Makes the sampling fixtures: what Hugging Face transformers' logits processors keep, and the
log-probabilities transformers computes on the fixture models. The CPU sampler and the engine's
logprobs are tested against them (tests/test_sampler_reference.cpp).

Run where torch + transformers are (the GPU machine; the CPU is enough):
    python3 tests/reference/make_sampling_fixtures.py [OUT_DIR]   # default tests/fixtures/sampling
Writes OUT_DIR/processors.json and OUT_DIR/logprobs.json.

processors.json: {"cases": [{"name", "logits": [V floats, null for -inf], "input_ids": [...], "settings":
  {"temperature", "top_k", "top_p", "min_p", "repetition_penalty"}, "processed": [V floats or
  null for a removed entry]}]}
  processed = the scores after transformers' processors in float64, in HF's order: the repetition
  penalty (over input_ids), then the temperature, top-k, top-p and min-p warpers, each applied only
  when its setting is not the neutral one. (vLLM applies min-p before top-k/top-p; the two orders
  agree on these cases because no case sets min-p together with top-p or top-k.)
logprobs.json: {"models": {NAME: [{"prompt": [...], "greedy": [ids], "logprobs": [per generated
  token: {"token_id", "logprob", "top": [[id, logprob] x 5]}], "prompt_logprobs": [per prompt
  position 1..: {"token_id", "logprob", "top": [[id, logprob] x 5]}]}]}}
  transformers in float32 (eager attention, on the CPU): log_softmax of the logits, the greedy path
  fed back token by token.
"""
import json
import math
import os
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM

try:
    from transformers.generation.logits_process import (MinPLogitsWarper, RepetitionPenaltyLogitsProcessor,
                                                        TemperatureLogitsWarper, TopKLogitsWarper,
                                                        TopPLogitsWarper)
except ImportError:  # older layouts export them at the top level
    from transformers import (MinPLogitsWarper, RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper,
                              TopKLogitsWarper, TopPLogitsWarper)

VOCAB = 1000
TOP_N = 5
NUM_GREEDY = 8


def hf_process(logits, input_ids, s):
    scores = logits.clone().unsqueeze(0)
    ids = torch.tensor([input_ids if input_ids else [0]], dtype=torch.long)
    if s.get("repetition_penalty", 1.0) != 1.0:
        scores = RepetitionPenaltyLogitsProcessor(penalty=s["repetition_penalty"])(ids, scores)
    if s.get("temperature", 1.0) != 1.0:
        scores = TemperatureLogitsWarper(s["temperature"])(ids, scores)
    if s.get("top_k", 0) > 0:
        scores = TopKLogitsWarper(top_k=s["top_k"])(ids, scores)
    if s.get("top_p", 1.0) < 1.0:
        scores = TopPLogitsWarper(top_p=s["top_p"])(ids, scores)
    if s.get("min_p", 0.0) > 0.0:
        scores = MinPLogitsWarper(min_p=s["min_p"])(ids, scores)
    return scores[0]


def processor_cases():
    g = torch.Generator().manual_seed(20261206)
    rows = {
        "normal": lambda: torch.randn(VOCAB, generator=g, dtype=torch.float64) * 3.0,
        "peaked": lambda: torch.randn(VOCAB, generator=g, dtype=torch.float64) * 1.0 +
                          torch.where(torch.rand(VOCAB, generator=g, dtype=torch.float64) < 0.01, 12.0, 0.0),
        "flat": lambda: torch.randn(VOCAB, generator=g, dtype=torch.float64) * 0.05,
        # coarse values: many ties (top-k and min-p keep every tie; top-p cases avoid these rows)
        "ties": lambda: torch.round(torch.randn(VOCAB, generator=g, dtype=torch.float64) * 2.0) / 2.0,
        "neg_inf": lambda: torch.where(torch.rand(VOCAB, generator=g, dtype=torch.float64) < 0.2, -math.inf,
                                       torch.randn(VOCAB, generator=g, dtype=torch.float64) * 2.0),
        "all_equal": lambda: torch.full((VOCAB,), 1.5, dtype=torch.float64),
    }
    settings = [
        ("top_k", {"top_k": 1}), ("top_k", {"top_k": 20}), ("top_k", {"top_k": 500}), ("top_k", {"top_k": 5000}),
        ("top_p", {"top_p": 0.95}), ("top_p", {"top_p": 0.5}), ("top_p", {"top_p": 0.01}), ("top_p", {"top_p": 1.0}),
        ("min_p", {"min_p": 0.1}), ("min_p", {"min_p": 0.9}), ("min_p", {"min_p": 0.001}),
        ("temperature", {"temperature": 0.6}),
        ("repetition_penalty", {"repetition_penalty": 1.3}), ("repetition_penalty", {"repetition_penalty": 0.7}),
        ("combo", {"temperature": 0.6, "top_k": 20, "top_p": 0.95}),  # Qwen3's recommended settings
        ("combo", {"temperature": 0.7, "top_k": 50, "top_p": 0.8, "repetition_penalty": 1.05}),
        ("combo", {"temperature": 1.5, "top_p": 0.9}),
        ("combo", {"temperature": 0.5, "min_p": 0.05}),
        ("combo", {"temperature": 2.0, "top_k": 100}),
    ]
    cases = []
    for row_name, make in rows.items():
        for kind, s in settings:
            if row_name in ("ties", "all_equal") and s.get("top_p", 1.0) < 1.0:
                continue  # HF's sort cuts a group of ties at the top-p boundary arbitrarily; we keep it whole
            logits = make()
            input_ids = torch.randint(0, VOCAB, (40,), generator=g).tolist()
            out = hf_process(logits, input_ids, s)
            cases.append({"name": f"{row_name}/{kind}",
                          "logits": [None if math.isinf(float(x)) else float(x) for x in logits],
                          "input_ids": input_ids, "settings": s,
                          "processed": [None if math.isinf(float(x)) and float(x) < 0 else float(x) for x in out]})
    return cases


def top(lp, n):
    v, i = torch.topk(lp, n)
    return [[int(a), float(b)] for a, b in zip(i, v)]


def logprob_cases(model_dir):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager").eval()
    with open(os.path.join(model_dir, "expected.json")) as f:
        prompts = [p["ids"] for p in json.load(f)["prompts"]]
    out = []
    with torch.no_grad():
        for ids in [p for p in prompts if 2 <= len(p) <= 64][:4]:
            seq = list(ids)
            full = torch.log_softmax(model(torch.tensor([seq])).logits[0].float(), dim=-1)
            prompt_lps = [{"token_id": seq[j], "logprob": float(full[j - 1, seq[j]]), "top": top(full[j - 1], TOP_N)}
                          for j in range(1, len(seq))]
            lps, greedy = [], []
            lp = full[-1]
            for _ in range(NUM_GREEDY):
                t = int(lp.argmax())
                greedy.append(t)
                lps.append({"token_id": t, "logprob": float(lp[t]), "top": top(lp, TOP_N)})
                seq.append(t)
                lp = torch.log_softmax(model(torch.tensor([seq])).logits[0, -1].float(), dim=-1)
            out.append({"prompt": ids, "greedy": greedy, "logprobs": lps, "prompt_logprobs": prompt_lps})
    return out


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/sampling"
    os.makedirs(out_dir, exist_ok=True)
    torch.set_num_threads(4)
    ref = "transformers %s, torch %s" % (transformers.__version__, torch.__version__)
    with open(os.path.join(out_dir, "processors.json"), "w") as f:
        json.dump({"reference": ref + ", float64", "cases": processor_cases()}, f, allow_nan=False)
    models = {}
    for name in ("tiny-tied", "small-untied"):
        models[name] = logprob_cases(os.path.join("tests/fixtures/models", name))
    with open(os.path.join(out_dir, "logprobs.json"), "w") as f:
        json.dump({"reference": ref + ", float32 eager on the CPU", "top_n": TOP_N, "models": models}, f, allow_nan=False)
    print("wrote", out_dir, sorted(os.listdir(out_dir)))


if __name__ == "__main__":
    main()
