#!/usr/bin/env python3
"""Times Hugging Face tokenizers' single-thread encode on the corpus bench_tokenizer uses.

  NANOVLLM_BENCH_CORPUS=/tmp/corpus.txt build/bench_tokenizer   # writes the corpus once
  python3 tests/reference/bench_hf_tokenizer.py models/qwen3-tokenizer /tmp/corpus.txt

Documents in the corpus are separated by "\\n\\x1e\\n"; each is encoded with
add_special_tokens=False, one call per document, exactly as BM_Encode does. Prints MB/s.
"""
import os
import sys
import time

# Before tokenizers is imported: one thread, like BM_Encode.
os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import tokenizers  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402


def main():
    tok_dir = sys.argv[1] if len(sys.argv) > 1 else "models/qwen3-tokenizer"
    corpus_path = sys.argv[2] if len(sys.argv) > 2 else "/tmp/nanovllm_tokenizer_corpus.txt"
    t0 = time.perf_counter()
    tk = Tokenizer.from_file(os.path.join(tok_dir, "tokenizer.json"))
    load_ms = (time.perf_counter() - t0) * 1e3
    with open(corpus_path, "rb") as f:
        data = f.read()
    docs = [d for d in data.decode("utf-8").split("\n\x1e\n") if d]
    nbytes = sum(len(d.encode("utf-8")) for d in docs)
    tk.encode(docs[0], add_special_tokens=False)  # warm up
    best = None
    for _ in range(3):
        t0 = time.perf_counter()
        ntok = 0
        for d in docs:
            ntok += len(tk.encode(d, add_special_tokens=False).ids)
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    print(f"tokenizers {tokenizers.__version__}: load {load_ms:.0f} ms; encode {nbytes / 1e6:.1f} MB, "
          f"{ntok} tokens in {best:.2f} s = {nbytes / 1e6 / best:.2f} MB/s (single thread, best of 3)")


if __name__ == "__main__":
    main()
