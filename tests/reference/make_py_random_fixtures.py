#!/usr/bin/env python3
# Writes tests/fixtures/py_random/draws.json: CPython's own random-module draws, the reference
# that src/cli/bench/py_random.cpp is held to. Run with any CPython 3.x (made with 3.11):
#   python3 tests/reference/make_py_random_fixtures.py
import json
import os
import random
import sys

SEEDS = [0, 1, 42, 2**32 + 5, 2**64 + 7, -42, 3**80 + 17]  # 3**80 needs 4 words
BITS = [1, 5, 31, 32, 33, 64, 100]
# Ranges for randint(a, b); 0..2**k forces rejection often (n = 2**k + 1 barely needs k+1 bits).
RANGES = [(0, 10000), (100, 1024), (1, 6), (-50, 50), (0, 1), (5, 5), (0, 2**62)]
RANGES += [(0, 2**k) for k in (1, 3, 8, 16, 31, 32, 33, 40)]
N = 12


def case(seed):
    out = {"seed": str(seed)}
    r = random.Random(seed)
    out["random"] = [r.random() for _ in range(N)]
    out["getrandbits"] = {}
    for k in BITS:
        r = random.Random(seed)
        out["getrandbits"][str(k)] = [format(r.getrandbits(k), "x") for _ in range(N)]
    out["randint"] = []
    for a, b in RANGES:
        r = random.Random(seed)
        out["randint"].append({"a": str(a), "b": str(b), "draws": [str(r.randint(a, b)) for _ in range(N)]})
    r = random.Random(seed)
    out["expovariate_2_5"] = [r.expovariate(2.5) for _ in range(N)]
    # One generator, mixed calls: the state must carry across kinds of draws.
    r = random.Random(seed)
    mixed = []
    for i in range(N):
        mixed.append(str(r.randint(0, 10000)))
        mixed.append(format(r.getrandbits(33 + i), "x"))
        mixed.append(repr(r.random()))
    out["mixed"] = mixed
    return out


def bench_workload():
    # nano-vLLM bench.py's workload, exactly as it is written there.
    random.seed(0)
    prompts = [[random.randint(0, 10000) for _ in range(random.randint(100, 1024))] for _ in range(256)]
    max_tokens = [random.randint(100, 1024) for _ in range(256)]
    return {
        "num_seqs": 256,
        "prompt_tokens": sum(len(p) for p in prompts),
        "output_tokens": sum(max_tokens),
        "first_prompt_len": len(prompts[0]),
        "first_prompt_head": prompts[0][:8],
        "last_prompt_tail": prompts[-1][-8:],
        "max_tokens_head": max_tokens[:8],
        "max_tokens_tail": max_tokens[-8:],
    }


def main():
    data = {"python": sys.version.split()[0], "cases": [case(s) for s in SEEDS], "bench_workload": bench_workload()}
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "py_random", "draws.json")
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    print("wrote", os.path.normpath(path))


if __name__ == "__main__":
    main()
