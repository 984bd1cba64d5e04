"""SamplingParams: how one request is sampled and when it stops (vLLM's names and defaults)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional


@dataclass
class SamplingParams:
    temperature: float = 1.0          # 0 = greedy
    max_tokens: int = 64
    ignore_eos: bool = False
    seed: Optional[int] = None        # this request's own seed; None: from the engine seed
    n: int = 1                        # samples of the prompt, sharing its KV blocks
    stop: List[str] = field(default_factory=list)
    stop_token_ids: List[int] = field(default_factory=list)
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]

    def _to_core(self, core):  # the C++ struct; the engine checks the values (ValueError naming the field)
        p = core.SamplingParams()
        p.temperature = float(self.temperature)
        p.max_tokens = int(self.max_tokens)
        p.ignore_eos = bool(self.ignore_eos)
        p.seed = None if self.seed is None else int(self.seed)
        p.n = int(self.n)
        p.stop = list(self.stop)
        p.stop_token_ids = [int(t) for t in self.stop_token_ids]
        p.include_stop_str_in_output = bool(self.include_stop_str_in_output)
        p.skip_special_tokens = bool(self.skip_special_tokens)
        return p
