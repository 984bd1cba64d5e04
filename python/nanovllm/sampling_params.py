"""SamplingParams: how one request is sampled and when it stops (vLLM's names and defaults)."""
from __future__ import annotations

import numbers
import struct
from dataclasses import dataclass, field
from typing import Dict, List, Optional


@dataclass
class SamplingParams:
    # nano-vLLM's fields first, in its order (they may be given by position) ...
    temperature: float = 1.0          # 0 (below 1e-5) = greedy
    max_tokens: int = 64
    ignore_eos: bool = False
    seed: Optional[int] = None        # this request's own seed; None: from the engine seed
    n: int = 1                        # samples of the prompt, sharing its KV blocks
    stop: List[str] = field(default_factory=list)
    stop_token_ids: List[int] = field(default_factory=list)
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True
    # ... then vLLM's sampling controls (applied in vLLM's order: logit_bias and the min_tokens
    # mask, the penalties, the temperature, then min_p, top_k and top_p).
    top_p: float = 1.0                # (0, 1]; 1 = off
    top_k: int = 0                    # 0 or -1 = off
    min_p: float = 0.0                # [0, 1]; 0 = off
    repetition_penalty: float = 1.0   # > 0, over prompt and output tokens; 1 = off
    presence_penalty: float = 0.0     # [-2, 2], over output tokens; 0 = off
    frequency_penalty: float = 0.0    # [-2, 2], over output tokens; 0 = off
    logit_bias: Optional[Dict[int, float]] = None  # token id -> added to its logit
    min_tokens: int = 0               # no EOS or stop token id before this many tokens
    # Raw log-probabilities (the model's, before any setting above), at most LLM(max_logprobs=20):
    logprobs: Optional[int] = None    # per generated token: its logprob and rank, and the N most likely
    prompt_logprobs: Optional[int] = None  # the same for each prompt token after the first

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        if self.stop is None:  # vLLM's default is None
            self.stop = []
        if self.stop_token_ids is None:
            self.stop_token_ids = []

    def _to_core(self, core):
        """The C++ struct. Types are checked here (TypeError naming the field); the engine checks
        the values (ValueError naming the field)."""
        p = core.SamplingParams()
        for name in _FLOATS:
            setattr(p, name, _number(name, getattr(self, name)))
        for name in _INTS:
            setattr(p, name, _int(name, getattr(self, name)))
        for name in _BOOLS:
            setattr(p, name, bool(getattr(self, name)))
        for name in ("seed", "logprobs", "prompt_logprobs"):
            value = getattr(self, name)
            setattr(p, name, None if value is None else _int(name, value))
        bias = self.logit_bias or {}
        if not isinstance(bias, dict):
            raise TypeError(f"SamplingParams.logit_bias must be a dict {{token_id: bias}}, got {bias!r}")
        p.logit_bias = {_int("logit_bias", k): _number("logit_bias", v) for k, v in bias.items()}
        p.stop = [str(s) for s in self.stop]
        p.stop_token_ids = [_int("stop_token_ids", t) for t in self.stop_token_ids]
        return p

    @classmethod
    def _from_core(cls, p) -> "SamplingParams":
        """From the C++ struct (the engine's defaults), floats as written (0.95, not 0.949999988)."""
        kwargs = {name: _float32_str(getattr(p, name)) for name in _FLOATS}
        kwargs.update({name: getattr(p, name) for name in _INTS + _BOOLS})
        kwargs.update(seed=p.seed, logprobs=p.logprobs, prompt_logprobs=p.prompt_logprobs,
                      logit_bias=dict(p.logit_bias) or None, stop=list(p.stop), stop_token_ids=list(p.stop_token_ids))
        return cls(**kwargs)


_FLOATS = ("temperature", "top_p", "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty")
_INTS = ("top_k", "min_tokens", "max_tokens", "n")
_BOOLS = ("ignore_eos", "include_stop_str_in_output", "skip_special_tokens")


def _number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"SamplingParams.{name} must be a number, got {value!r}")
    return float(value)


def _int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"SamplingParams.{name} must be an int, got {value!r}")
    return int(value)


def _float32_str(x: float) -> float:
    """The shortest decimal that is the same float32: the engine keeps float32, Python shows doubles."""
    for digits in range(1, 10):
        y = float(f"{x:.{digits}g}")
        if struct.unpack("f", struct.pack("f", y))[0] == x:
            return y
    return x
