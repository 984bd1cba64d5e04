#!/usr/bin/env python3
"""Where a run's time goes, from a NANOVLLM_STEP_TRACE file (one CSV line per engine step).

Fits every decode step's time (launch to results on the host) by least squares as

    step_us = fixed + per_row * padded_rows + per_token * context_tokens

and prints the fit, the KV-cache read rate it implies, and the run's time split into those three
parts plus prefill. It takes the trace's last run: from the start of its last block of consecutive
prefill steps (a bench trace holds the untimed warm-up first), unless --from-step says otherwise.

  python3 scripts/fit_steps.py steps.csv [--kv-bytes-per-token 114688] [--from-step N]

--kv-bytes-per-token: K and V bytes one context token costs a decode step, all layers together
(2 x layers x kv heads x head_dim x 2 bytes; Qwen3-0.6B in bf16: 2 x 28 x 8 x 128 x 2 = 114,688).
Standard library only, so any python3 runs it (the GPU machine's too).
"""
import argparse
import csv
import sys


def solve3(a, b):
    """Solves the 3x3 system a x = b by Gaussian elimination with partial pivoting."""
    m = [row[:] + [rhs] for row, rhs in zip(a, b)]
    for c in range(3):
        p = max(range(c, 3), key=lambda r: abs(m[r][c]))
        if abs(m[p][c]) < 1e-300:
            raise ValueError("the decode steps do not determine the fit (all the same batch or context?)")
        m[c], m[p] = m[p], m[c]
        for r in range(3):
            if r != c:
                f = m[r][c] / m[c][c]
                m[r] = [x - f * y for x, y in zip(m[r], m[c])]
    return [m[i][3] / m[i][i] for i in range(3)]


def read_steps(path):
    need = ["prefill", "seqs", "padded", "tokens", "context_tokens", "us"]
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path}: no steps")
    missing = [k for k in need if k not in rows[0]]
    if missing:
        raise ValueError(f"{path}: no column {', '.join(missing)} (a NANOVLLM_STEP_TRACE file has {', '.join(need)})")
    steps = []
    for i, r in enumerate(rows, start=2):
        try:
            steps.append({"prefill": int(r["prefill"]) != 0, "seqs": int(r["seqs"]), "padded": int(r["padded"]),
                          "tokens": int(r["tokens"]), "context": int(r["context_tokens"]), "us": float(r["us"])})
        except (TypeError, ValueError):
            raise ValueError(f"{path}: line {i}: not a step: {r}") from None
    return steps


def last_run_start(steps):
    """Index of the first step of the last block of consecutive prefill steps (0 if none)."""
    start = 0
    for i in range(1, len(steps)):
        if steps[i]["prefill"] and not steps[i - 1]["prefill"]:
            start = i
    return start


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trace")
    ap.add_argument("--kv-bytes-per-token", type=float, default=114688.0)
    ap.add_argument("--from-step", type=int, default=0, help="1-based first step of the run (default: auto)")
    args = ap.parse_args()
    try:
        steps = read_steps(args.trace)
    except (OSError, ValueError) as e:
        sys.exit(f"fit_steps: {e}")
    start = args.from_step - 1 if args.from_step > 0 else last_run_start(steps)
    if not 0 <= start < len(steps):
        sys.exit(f"fit_steps: --from-step {args.from_step}: the trace has {len(steps)} steps")
    run = steps[start:]
    dec = [s for s in run if not s["prefill"]]
    pre = [s for s in run if s["prefill"]]
    if len(dec) < 3:
        sys.exit(f"fit_steps: {len(dec)} decode steps from step {start + 1}: too few to fit")

    # Normal equations of the least-squares fit over (1, padded, context).
    xs = [(1.0, float(s["padded"]), float(s["context"])) for s in dec]
    ata = [[sum(x[i] * x[j] for x in xs) for j in range(3)] for i in range(3)]
    atb = [sum(x[i] * s["us"] for x, s in zip(xs, dec)) for i in range(3)]
    try:
        fixed, per_row, per_tok = solve3(ata, atb)
    except ValueError as e:
        sys.exit(f"fit_steps: {e}")
    pred = [fixed + per_row * x[1] + per_tok * x[2] for x in xs]
    resid = [s["us"] - p for s, p in zip(dec, pred)]
    rms = (sum(r * r for r in resid) / len(resid)) ** 0.5

    total = sum(s["us"] for s in run) / 1e6
    dec_s = sum(s["us"] for s in dec) / 1e6
    pre_s = sum(s["us"] for s in pre) / 1e6
    rows = sum(s["padded"] for s in dec)
    ctx = sum(s["context"] for s in dec)
    rate = args.kv_bytes_per_token / (per_tok * 1e-6) / 1e12 if per_tok > 0 else float("inf")

    print(f"run: steps {start + 1}..{len(steps)} of {args.trace}: {len(pre)} prefill ({pre_s:.3f} s, "
          f"{sum(s['tokens'] for s in pre):,} tokens), {len(dec)} decode ({dec_s:.3f} s); "
          f"{total:.3f} s of step time in all")
    print(f"decode step = {fixed / 1e3:.3f} ms + {per_row:.2f} us x padded rows + context tokens x "
          f"{args.kv_bytes_per_token:,.0f} B / {rate:.2f} TB/s   (rms residual {rms:.0f} us)")
    print(f"  fixed per step   {fixed * len(dec) / 1e6:7.3f} s  ({len(dec)} steps)")
    print(f"  per padded row   {per_row * rows / 1e6:7.3f} s  ({rows:,} rows)")
    print(f"  KV reads         {per_tok * ctx / 1e6:7.3f} s  ({ctx * args.kv_bytes_per_token / 1e12:.2f} TB)")
    print(f"  prefill          {pre_s:7.3f} s")


if __name__ == "__main__":
    main()
