#!/usr/bin/env python3
"""Makes the FP8 fixtures: transformers' own dequantization of an FP8 checkpoint, and the
dequantized model's logits and greedy tokens, for tests/test_fp8_weights.cpp.

The checkpoint is committed beside the fixtures (tests/fixtures/fp8/model): nanovllm's
`make-model --quantize fp8` wrote it (Qwen3-FP8's layout: F8_E4M3 projections with 128 x 128
F32 weight_scale_inv blocks, bf16 embedding/norms, quantization_config {quant_method: fp8, fmt:
e4m3, activation_scheme: dynamic, weight_block_size: [128, 128]}). So both sides read the same
bytes, and this script needs nothing of nanovllm. Every matrix dimension is a multiple of 128
(or one block): transformers' Fp8Dequantize derives the block from the weight and scale shapes
(rows // scale_rows), which is wrong for a partial last block.

Run on the GPU machine (torch + transformers 5.17), from the repository root:
    CUDA_VISIBLE_DEVICES= python3 tests/reference/make_fp8_fixtures.py tests/fixtures/fp8
Writes DIR/dequantized.bin and DIR/expected.json:
  {"reference": "...", "dequantized": [{"name", "shape", "offset"}],   (bf16 bits, little-endian)
   "prompts": [{"ids", "greedy": [16], "greedy_margins": [16], "last_logits": [vocab]}]}
- dequantized: the bf16 weights transformers' FineGrainedFP8 (dequantize=True) leaves in the model,
  (q.float() * scale_inv).to(bfloat16); checked here against that formula computed from the file.
- last_logits, greedy: that dequantized model in float64 (eager attention, no cache), the
  prompt's last position, then 16 greedy steps and each step's top-1 minus top-2 logit.
"""
import json
import os
import random
import sys

import torch
import transformers
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, FineGrainedFP8Config

MATRICES = ["model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight",
            "model.layers.1.mlp.down_proj.weight"]
PROMPT_LENGTHS = [1, 5, 17, 64, 130]
NUM_GREEDY = 16


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/fp8"
    model_dir = os.path.join(out, "model")
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    assert cfg["quantization_config"]["quant_method"] == "fp8", "expected make-model --quantize fp8's checkpoint"

    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.bfloat16, device_map="cpu", attn_implementation="eager",
        quantization_config=FineGrainedFP8Config(weight_block_size=(128, 128), dequantize=True))
    model.eval()
    params = dict(model.named_parameters())
    raw = load_file(os.path.join(model_dir, "model.safetensors"))

    # (a) transformers' dequantized weights, bit for bit, checked against q.float() * scale_inv.
    entries, blob = [], bytearray()
    for name in MATRICES:
        w = params[name].detach()
        assert w.dtype == torch.bfloat16, f"{name} is {w.dtype}: transformers did not dequantize it"
        q, s = raw[name], raw[name[: -len(".weight")] + ".weight_scale_inv"]
        rows, cols = q.shape
        ref = (q.float().reshape(s.shape[0], rows // s.shape[0], s.shape[1], cols // s.shape[1])
               * s.float()[:, None, :, None]).reshape(rows, cols).to(torch.bfloat16)
        assert torch.equal(w.view(torch.int16), ref.view(torch.int16)), f"{name}: not q.float() * scale_inv"
        entries.append({"name": name, "shape": [rows, cols], "offset": len(blob)})
        blob += w.contiguous().view(torch.int16).numpy().astype("<i2").tobytes()
    with open(os.path.join(out, "dequantized.bin"), "wb") as f:
        f.write(blob)

    # (b) the dequantized model in float64: last-position logits and greedy continuations.
    model = model.double()
    rng = random.Random(0)
    vocab = cfg["vocab_size"]
    prompts = []
    with torch.no_grad():
        for n in PROMPT_LENGTHS:
            ids = [rng.randrange(3, vocab) for _ in range(n)]
            seq, greedy, margins, last = list(ids), [], [], None
            for step in range(NUM_GREEDY):
                logits = model(torch.tensor([seq]), use_cache=False).logits[0, -1]
                if step == 0:
                    last = logits.tolist()
                top = torch.topk(logits, 2)
                greedy.append(int(top.indices[0]))
                margins.append(float(top.values[0] - top.values[1]))
                seq.append(greedy[-1])
            prompts.append({"ids": ids, "greedy": greedy, "greedy_margins": margins,
                            "last_logits": [round(x, 9) for x in last]})
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump({"reference": f"transformers {transformers.__version__}, FineGrainedFP8 dequantize=True into "
                                "bfloat16, forward in float64 eager on the cpu",
                   "dequantized": entries, "prompts": prompts}, f)
    print(f"wrote {out}/expected.json ({len(prompts)} prompts) and {out}/dequantized.bin ({len(blob)} bytes)")


if __name__ == "__main__":
    main()
