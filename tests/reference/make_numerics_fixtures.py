#!/usr/bin/env python3
"""Makes the numerics fixtures: how far transformers' own bf16 is from float32 on a model, along
float32's greedy path. bench_numerics and the GPU numerics test hold the CUDA engine to these.

Run on the GPU machine (torch + transformers):
    python3 tests/reference/make_numerics_fixtures.py NAME=MODEL_DIR [...] --out DIR
Writes DIR/NAME.json: {"model": NAME, "path_len": 24, "cases": [{"ids": [...], "path": [24 ids],
  "hf_bf16": {"max_abs": [24], "rel": [24], "kl": [24], "greedy_agree": k}}]}
- path: float32's greedy continuation of ids (TF32 off), fed back token by token.
- max_abs, rel, kl: per path position, bf16's logits against float32's on the same tokens
  (max |diff|, that over float32's row range, KL(softmax f32 || softmax bf16)), one forward over
  ids + path (teacher forcing), bf16 logits as transformers returns them (bf16, then float).
- greedy_agree: how many leading tokens bf16's own greedy continuation shares with the path.
- argmax: per path position, whether bf16's argmax is float32's (greedy agreement, teacher-forced).
Prompts are seeded random ids, LENGTHS[n] of length n where the model's context takes it.
--bf16-copy NAME=SRC_DIR=DST_DIR first writes SRC's checkpoint in bf16 to DST (a bf16 checkpoint,
as real ones are), to be measured as NAME.
"""
import argparse
import json
import os
import random

import torch
from transformers import AutoModelForCausalLM

LENGTHS = {1: 8, 7: 8, 33: 8, 150: 4, 1000: 2, 4096: 2}  # prompt length: how many prompts
PATH_LEN = 24


def greedy(model, ids, n, dev):
    out = model(torch.tensor([ids], device=dev), use_cache=True)
    past, path = out.past_key_values, [int(out.logits[0, -1].argmax())]
    for _ in range(n - 1):
        out = model(torch.tensor([[path[-1]]], device=dev), past_key_values=past, use_cache=True)
        past = out.past_key_values
        path.append(int(out.logits[0, -1].argmax()))
    return path


def path_logits(model, ids, path, dev):
    out = model(torch.tensor([ids + path[:-1]], device=dev))
    return out.logits[0, len(ids) - 1:].double()


def errors(ref, x):
    diff = (x - ref).abs().amax(dim=1)
    rng = ref.amax(dim=1) - ref.amin(dim=1)
    lp, lq = torch.log_softmax(ref, dim=1), torch.log_softmax(x, dim=1)
    kl = (lp.exp() * (lp - lq)).sum(dim=1).clamp_min(0)
    same = (x.argmax(dim=1) == ref.argmax(dim=1))
    return {"max_abs": diff.tolist(), "rel": (diff / rng).tolist(), "kl": kl.tolist(), "argmax": same.tolist()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+", help="NAME=MODEL_DIR")
    ap.add_argument("--out", required=True)
    ap.add_argument("--bf16-copy", action="append", default=[], help="NAME=SRC_DIR=DST_DIR")
    a = ap.parse_args()
    for spec in a.bf16_copy:
        name, src, dst = spec.split("=", 2)
        AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16).save_pretrained(dst)
        a.models.append(f"{name}={dst}")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = "cuda"
    os.makedirs(a.out, exist_ok=True)
    for spec in a.models:
        name, path = spec.split("=", 1)
        f32 = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(dev).eval()
        bf16 = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).to(dev).eval()
        cfg = f32.config
        rng = random.Random(1234)
        cases = []
        with torch.no_grad():
            for length, count in LENGTHS.items():
                if length + PATH_LEN > cfg.max_position_embeddings:
                    continue
                for _ in range(count):
                    ids = [rng.randrange(cfg.vocab_size) for _ in range(length)]
                    p = greedy(f32, ids, PATH_LEN, dev)
                    e = errors(path_logits(f32, ids, p, dev), path_logits(bf16, ids, p, dev))
                    b = greedy(bf16, ids, PATH_LEN, dev)
                    e["greedy_agree"] = next((k for k in range(PATH_LEN) if b[k] != p[k]), PATH_LEN)
                    cases.append({"ids": ids, "path": p, "hf_bf16": e})
                    print(f"{name} len {length}: bf16 rel mean {sum(e['rel']) / PATH_LEN:.5f}, "
                          f"greedy kept {e['greedy_agree']}", flush=True)
        with open(os.path.join(a.out, f"{name}.json"), "w") as f:
            json.dump({"model": name, "path_len": PATH_LEN, "cases": cases}, f)
        del f32, bf16
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
