"""LLM: nano-vLLM's offline API (generate, chat, the step API) over the C++ engine."""
from __future__ import annotations

import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from . import _core
from .sampling_params import SamplingParams

Prompt = Union[str, List[int], Dict[str, List[int]]]

# nano-vLLM's Config fields, then ours: the keyword arguments LLM() takes.
_CONFIG_FIELDS = (
    "max_num_batched_tokens", "max_num_seqs", "max_model_len", "gpu_memory_utilization", "tensor_parallel_size",
    "enforce_eager", "kvcache_block_size", "num_kvcache_blocks",
    "device", "seed", "enable_prefix_caching", "cpu_kvcache_space_gb", "num_threads",
    "max_logprobs", "generation_config", "quantization", "kv_cache_dtype", "calculate_kv_scales",  # vLLM's
    "scheduling_policy",  # vLLM's: "fcfs" or "priority" (generate's priority=[...])
)


class Tokenizer:
    """The engine's tokenizer (tokenizer.json and the chat template of tokenizer_config.json)."""

    def __init__(self, engine: "_core.Engine") -> None:
        self._engine = engine

    def encode(self, text: str, add_special_tokens: bool = True) -> List[int]:
        """HF's encode: add_special_tokens applies the tokenizer's post-processor (Llama's BOS)."""
        return self._engine.encode(text, add_special_tokens)

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return self._engine.decode(list(token_ids), skip_special_tokens)

    def apply_chat_template(self, messages: Sequence[Dict[str, Any]], tokenize: bool = False,
                            add_generation_prompt: bool = True, enable_thinking: bool = True) -> Union[str, List[int]]:
        msgs = [{k: str(v) for k, v in m.items() if v is not None} for m in messages]
        text = self._engine.apply_chat_template(msgs, add_generation_prompt, enable_thinking)
        return self.encode(text, add_special_tokens=False) if tokenize else text


class LLM:
    """nanovllm's engine with nano-vLLM's API: LLM(model, **config), generate(prompts, sampling_params).

    generation_config="auto" (vLLM's default) takes the model's generation_config.json for the
    default sampling parameters (get_default_sampling_params); "vllm" ignores it; a directory
    names another generation_config.json. max_logprobs (20) bounds SamplingParams.logprobs and
    prompt_logprobs."""

    def __init__(self, model: str, **kwargs: Any) -> None:
        config = _core.EngineConfig()
        config.model = str(model)
        for key, value in kwargs.items():
            if key not in _CONFIG_FIELDS:
                raise TypeError(f"LLM() got an unexpected keyword argument '{key}' "
                                f"(it takes {', '.join(_CONFIG_FIELDS)})")
            try:
                setattr(config, key, value)
            except TypeError:
                raise TypeError(f"LLM() argument '{key}' cannot be {value!r} ({type(value).__name__})") from None
        if config.tensor_parallel_size > 1 and not config.worker_command:
            # Ranks 1..N-1 run this interpreter with this package (nanovllm._worker).
            package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
            config.worker_command = [sys.executable, "-c",
                                     f"import sys; sys.path.insert(0, {package_parent!r}); "
                                     "from nanovllm._worker import main; main()"]
        self._engine = _core.Engine(config)
        self._samples_left: Dict[int, int] = {}     # request id -> samples still running
        self._wants: Dict[int, Tuple[bool, bool]] = {}  # request id -> (logprobs, prompt_logprobs) asked
        self._done: Dict[int, Dict[str, Any]] = {}  # finished requests' outputs, until handed out

    # ---- nano-vLLM's LLMEngine API ----
    def add_request(self, prompt: Prompt, sampling_params: Optional[SamplingParams] = None, priority: int = 0) -> int:
        if sampling_params is None:
            sampling_params = self.get_default_sampling_params()
        return self._add(self._token_ids(prompt), sampling_params, priority)

    def step(self) -> Tuple[List[Tuple[int, List[int]]], int]:
        """One engine step: the requests it finished as (id, generated token ids), and its tokens
        (positive: prompt tokens prefilled; negative: minus the sequences decoded), as nano-vLLM."""
        before = self._engine.stats()
        events = self._engine.step()
        after = self._engine.stats()
        finished = []
        for request_id, _index, _tokens, done in events:
            if done and self._sample_finished(request_id):
                finished.append((request_id, self._done.pop(request_id)["token_ids"]))
        prefilled = after["prefill_tokens"] - before["prefill_tokens"]
        return finished, prefilled if prefilled > 0 else -(after["decode_tokens"] - before["decode_tokens"])

    def is_finished(self) -> bool:
        return self._engine.is_finished()

    # ---- generate and chat ----
    def generate(self, prompts: Union[Prompt, Sequence[Prompt]],
                 sampling_params: Union[SamplingParams, Sequence[SamplingParams], None] = None,
                 use_tqdm: bool = True, priority: Optional[Sequence[int]] = None) -> List[Dict[str, Any]]:
        """Runs every prompt to completion; one dict per prompt, in order: {"text", "token_ids",
        "finish_reason", "logprobs", "prompt_logprobs", ...}. Without sampling_params, those of
        get_default_sampling_params(). priority: one per prompt, as vLLM's (lower runs first; needs
        LLM(scheduling_policy="priority")). Ctrl-C aborts the requests (their blocks are freed) and re-raises."""
        prompts = self._prompt_list(prompts)
        params = self._params_list(sampling_params, len(prompts))
        priorities = [0] * len(prompts) if priority is None else list(priority)
        if len(priorities) != len(prompts):
            raise ValueError(f"priority has {len(priorities)} entries for {len(prompts)} prompts (give one per prompt)")
        ids = [self._token_ids(p) for p in prompts]
        requests: List[int] = []
        try:
            for i, p, prio in zip(ids, params, priorities):
                requests.append(self._add(i, p, prio))
            self._run(set(requests), len(requests), use_tqdm)
            return [self._done.pop(r) for r in requests]
        except BaseException:
            for r in requests:
                self._engine.abort_request(r)
                self._done.pop(r, None)
                self._samples_left.pop(r, None)
                self._wants.pop(r, None)
            raise

    def chat(self, messages: Union[Sequence[Dict[str, Any]], Sequence[Sequence[Dict[str, Any]]]],
             sampling_params: Union[SamplingParams, Sequence[SamplingParams], None] = None,
             use_tqdm: bool = True, add_generation_prompt: bool = True,
             enable_thinking: bool = True) -> List[Dict[str, Any]]:
        """generate() over the model's chat template: one conversation, or a list of them."""
        conversations = [messages] if messages and isinstance(messages[0], dict) else list(messages)
        tok = self.get_tokenizer()
        prompts = [tok.apply_chat_template(c, add_generation_prompt=add_generation_prompt,
                                           enable_thinking=enable_thinking) for c in conversations]
        return self.generate(prompts, sampling_params, use_tqdm)

    def get_default_sampling_params(self) -> SamplingParams:
        """SamplingParams' defaults with the model's generation_config.json applied (temperature,
        top_k, top_p, min_p, repetition_penalty, max_new_tokens as max_tokens), as vLLM's: what
        generate() uses without sampling_params. A new object each call."""
        return SamplingParams._from_core(self._engine.default_sampling_params())

    def start_profile(self) -> None:
        """vLLM's: what runs until stop_profile() is what a profiler started with collection off
        records (CUDA: ncu --profile-from-start off, nsys --capture-range=cudaProfilerApi; with
        tensor parallelism, rank 0's GPU). Nothing on the CPU."""
        self._engine.start_profile()

    def stop_profile(self) -> None:
        self._engine.stop_profile()

    def get_tokenizer(self) -> Tokenizer:
        if not self._engine.has_tokenizer():
            raise RuntimeError("the model directory has no tokenizer.json")
        return Tokenizer(self._engine)

    # ---- internals ----
    def _add(self, token_ids: List[int], params: SamplingParams, priority: int = 0) -> int:
        core = params._to_core(_core)
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise TypeError(f"priority must be an integer, got {priority!r}")
        core.priority = priority
        request_id = self._engine.add_request(token_ids, core)
        self._samples_left[request_id] = params.n
        self._wants[request_id] = (params.logprobs is not None, params.prompt_logprobs is not None)
        return request_id

    def _sample_finished(self, request_id: int) -> bool:
        """Counts a finished sample; once the request's last one is in, its output moves to _done."""
        left = self._samples_left.get(request_id)
        if left is None:
            return False
        if left > 1:
            self._samples_left[request_id] = left - 1
            return False
        del self._samples_left[request_id]
        self._done[request_id] = self._engine.take_output(request_id, *self._wants.pop(request_id))
        return True

    def _run(self, pending: set, total: int, use_tqdm: bool) -> None:
        bar = _Progress(total) if use_tqdm else None
        prefill_tps = decode_tps = 0.0
        while pending:
            before = self._engine.stats()
            t = time.perf_counter()
            events = self._engine.step()
            dt = max(time.perf_counter() - t, 1e-9)
            for request_id, _index, _tokens, done in events:
                if done and self._sample_finished(request_id) and request_id in pending:
                    pending.discard(request_id)
                    if bar:
                        bar.update()
            if bar:
                after = self._engine.stats()
                if after["prefill_tokens"] > before["prefill_tokens"]:
                    prefill_tps = (after["prefill_tokens"] - before["prefill_tokens"]) / dt
                else:
                    decode_tps = (after["decode_tokens"] - before["decode_tokens"]) / dt
                bar.postfix(prefill_tps, decode_tps)
            if pending and not events and self._engine.is_finished():
                raise RuntimeError("the engine went idle with requests pending")
        if bar:
            bar.close()

    def _token_ids(self, prompt: Prompt) -> List[int]:
        if isinstance(prompt, str):
            return self._engine.encode(prompt)
        if isinstance(prompt, dict):
            if "prompt_token_ids" not in prompt:
                raise ValueError("a dict prompt needs 'prompt_token_ids' (vLLM's TokensPrompt)")
            prompt = prompt["prompt_token_ids"]
        try:
            return [int(t) for t in prompt]
        except TypeError:
            raise TypeError(f"a prompt is a str, a list of token ids or {{'prompt_token_ids': [...]}}, "
                            f"not {type(prompt).__name__}") from None

    @staticmethod
    def _prompt_list(prompts: Any) -> List[Prompt]:
        if isinstance(prompts, (str, dict)):
            return [prompts]
        prompts = list(prompts)
        if prompts and all(isinstance(t, int) for t in prompts):
            return [prompts]  # one prompt as token ids
        return prompts

    def _params_list(self, params: Any, n: int) -> List[SamplingParams]:
        if params is None:
            return [self.get_default_sampling_params()] * n
        if isinstance(params, SamplingParams):
            return [params] * n
        params = list(params)
        if len(params) != n:
            raise ValueError(f"{len(params)} SamplingParams for {n} prompts (give one for all, or one per prompt)")
        return params


class _Progress:
    """nano-vLLM's bar: tqdm when it is installed, else one line on a terminal's stderr."""

    def __init__(self, total: int) -> None:
        self.total, self.done = total, 0
        try:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, desc="Generating", dynamic_ncols=True)
        except ImportError:
            self.bar = None
        self.tty = sys.stderr.isatty()
        self.text = ""

    def update(self) -> None:
        self.done += 1
        if self.bar:
            self.bar.update(1)

    def postfix(self, prefill: float, decode: float) -> None:
        if self.bar:
            self.bar.set_postfix({"Prefill": f"{int(prefill)}tok/s", "Decode": f"{int(decode)}tok/s"})
        elif self.tty:
            sys.stderr.write(f"\rGenerating: {self.done}/{self.total} [Prefill={int(prefill)}tok/s, "
                             f"Decode={int(decode)}tok/s]")

    def close(self) -> None:
        if self.bar:
            self.bar.close()
        elif self.tty:
            sys.stderr.write("\n")
