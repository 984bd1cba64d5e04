"""nanovllm: nano-vLLM's Python API over nanovllm's C++ engine.

    from nanovllm import LLM, SamplingParams
    llm = LLM("/models/Qwen3-0.6B", enforce_eager=False, max_model_len=4096)
    outputs = llm.generate(["Hello"], SamplingParams(temperature=0.6, max_tokens=64))
    print(outputs[0]["text"])
"""
from .llm import LLM, Tokenizer
from .sampling_params import SamplingParams

__all__ = ["LLM", "SamplingParams", "Tokenizer"]
