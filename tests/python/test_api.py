"""The Python package (nanovllm) on the CPU: nano-vLLM's API over the C++ engine, held to the C++
side (the `nanovllm generate` CLI) and to transformers' greedy tokens of the fixture models;
vLLM's sampling fields, logprobs and generation_config.json defaults."""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import unittest

from nanovllm import LLM, SamplingParams, _core

SOURCE = os.environ.get("NANOVLLM_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
BINARY = os.environ.get("NANOVLLM_BINARY", os.path.join(SOURCE, "build", "nanovllm"))
TINY = os.path.join(SOURCE, "tests", "fixtures", "models", "tiny-tied")
SMALL = dict(device="cpu", max_model_len=256, kvcache_block_size=16, num_kvcache_blocks=64, num_threads=1)


def cli_tokens(ids, *flags):
    """`nanovllm generate --json` on TINY with SMALL's engine settings: the first line's object."""
    out = subprocess.run([BINARY, "generate", "--model", TINY, "--device", "cpu", "--threads", "1",
                          "--max-model-len", "256", "--block-size", "16", "--num-kvcache-blocks", "64",
                          "--prompt-ids", ",".join(map(str, ids)), "--json", "--no-progress", *flags],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.splitlines()[0])


def tokenized_model(tmp):
    """The tiny random preset with the real Qwen3 tokenizer (text prompts, chat)."""
    tok = os.path.join(SOURCE, "models", "qwen3-tokenizer")
    if not os.path.exists(os.path.join(tok, "tokenizer.json")):
        raise unittest.SkipTest("no models/qwen3-tokenizer (run scripts/setup.sh)")
    subprocess.run([BINARY, "make-model", "--preset", "tiny", "--out", tmp, "--tokenizer", tok], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return tmp


class Generate(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.llm = LLM(TINY, **SMALL)
        with open(os.path.join(TINY, "expected.json")) as f:
            cls.prompts = json.load(f)["prompts"]

    def test_greedy_equals_transformers(self):
        ids = [p["ids"] for p in self.prompts[:4]]
        outs = self.llm.generate(ids, SamplingParams(temperature=0, max_tokens=16, ignore_eos=True), use_tqdm=False)
        for o, p in zip(outs, self.prompts):
            self.assertEqual(o["token_ids"], p["greedy"])
            self.assertEqual(o["finish_reason"], "length")
            self.assertEqual(o["prompt_token_ids"], p["ids"])

    def test_seeded_sampling_equals_the_cpp_api(self):
        ids = self.prompts[2]["ids"]
        out = self.llm.generate([ids], SamplingParams(temperature=0.8, max_tokens=12, ignore_eos=True, seed=5),
                                use_tqdm=False)[0]
        cli = subprocess.run([BINARY, "generate", "--model", TINY, "--device", "cpu", "--threads", "1",
                              "--max-model-len", "256", "--block-size", "16", "--num-kvcache-blocks", "64",
                              "--prompt-ids", ",".join(map(str, ids)), "--temperature", "0.8", "--max-tokens", "12",
                              "--ignore-eos", "--request-seed", "5", "--json", "--no-progress"],
                             check=True, capture_output=True, text=True).stdout
        self.assertEqual(out["token_ids"], json.loads(cli)["token_ids"])

    def test_quantization_fp8_equals_the_cli(self):
        ids = self.prompts[1]["ids"]
        llm = LLM(TINY, **SMALL, quantization="fp8")
        out = llm.generate([ids], SamplingParams(temperature=0, max_tokens=12, ignore_eos=True), use_tqdm=False)[0]
        cli = cli_tokens(ids, "--temperature", "0", "--max-tokens", "12", "--ignore-eos", "--quantization", "fp8")
        self.assertEqual(out["token_ids"], cli["token_ids"])
        with self.assertRaisesRegex(ValueError, "quantization 'int4': expected none, int8 or fp8"):
            LLM(TINY, **SMALL, quantization="int4")

    def test_argument_forms(self):
        ids = [p["ids"] for p in self.prompts[:2]]
        g = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)
        by_lists = self.llm.generate(ids, g, use_tqdm=False)
        by_dicts = self.llm.generate([{"prompt_token_ids": i} for i in ids], [g, g], use_tqdm=False)
        one = self.llm.generate(ids[1], g, use_tqdm=False)  # a single prompt of token ids
        self.assertEqual([o["token_ids"] for o in by_lists], [o["token_ids"] for o in by_dicts])
        self.assertEqual(one[0]["token_ids"], by_lists[1]["token_ids"])
        n3 = self.llm.generate(ids[0], SamplingParams(temperature=1.0, max_tokens=4, ignore_eos=True, n=3, seed=1),
                               use_tqdm=False)[0]
        self.assertEqual(len(n3["outputs"]), 3)
        self.assertEqual(n3["token_ids"], n3["outputs"][0]["token_ids"])
        stopped = self.llm.generate(ids[0], SamplingParams(temperature=0, max_tokens=16, ignore_eos=True,
                                                           stop_token_ids=[self.prompts[0]["greedy"][3]]),
                                    use_tqdm=False)[0]
        self.assertEqual(stopped["finish_reason"], "stop")
        self.assertEqual(stopped["token_ids"][-1], self.prompts[0]["greedy"][3])

    def test_fp8_kv_cache_equals_the_cli(self):
        ids = self.prompts[1]["ids"]
        g = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
        for kwargs, flags in (({"kv_cache_dtype": "fp8"}, ["--kv-cache-dtype", "fp8"]),
                              ({"kv_cache_dtype": "fp8_e5m2", "calculate_kv_scales": False},
                               ["--kv-cache-dtype", "fp8_e5m2", "--no-calculate-kv-scales"])):
            out = LLM(TINY, **SMALL, **kwargs).generate([ids], g, use_tqdm=False)[0]
            want = cli_tokens(ids, "--max-tokens", "12", "--ignore-eos", "--temperature", "0", *flags)
            self.assertEqual(out["token_ids"], want["token_ids"], kwargs)

    def test_bad_arguments(self):
        with self.assertRaisesRegex(TypeError, "unexpected keyword argument 'max_len'"):
            LLM(TINY, max_len=10)
        with self.assertRaisesRegex(ValueError, "max_tokens must be >= 1"):
            self.llm.generate([[1, 2]], SamplingParams(max_tokens=0), use_tqdm=False)
        with self.assertRaisesRegex(ValueError, "temperature"):
            self.llm.generate([[1, 2]], SamplingParams(temperature=-1), use_tqdm=False)
        with self.assertRaisesRegex(ValueError, "2 SamplingParams for 3 prompts"):
            self.llm.generate([[1], [2], [3]], [SamplingParams()] * 2, use_tqdm=False)
        with self.assertRaisesRegex(ValueError, "outside the vocabulary"):
            self.llm.generate([[1, 100000]], use_tqdm=False)
        with self.assertRaises(TypeError):
            self.llm.generate([3.5], use_tqdm=False)
        with self.assertRaisesRegex(ValueError, "device"):
            LLM(TINY, device="tpu")
        with self.assertRaisesRegex(ValueError, "kv_cache_dtype 'fp9'.*fp8_e5m2"):
            LLM(TINY, kv_cache_dtype="fp9", **SMALL)
        # Nothing of the refused requests is left in the engine.
        self.assertTrue(self.llm.is_finished())

    def test_step_api(self):
        g = SamplingParams(temperature=0, max_tokens=5, ignore_eos=True)
        a = self.llm.add_request(self.prompts[0]["ids"], g)
        b = self.llm.add_request(self.prompts[1]["ids"], g)
        finished, steps = {}, []
        while not self.llm.is_finished():
            outs, num_tokens = self.llm.step()
            steps.append(num_tokens)
            finished.update(outs)
        self.assertEqual(finished[a], self.prompts[0]["greedy"][:5])
        self.assertEqual(finished[b], self.prompts[1]["greedy"][:5])
        self.assertGreater(steps[0], 0)  # a prefill: its prompt tokens
        self.assertEqual(steps[-1], -2)  # a decode of two sequences

    def test_profile_range_leaves_the_tokens(self):
        g = SamplingParams(temperature=0, max_tokens=5, ignore_eos=True)
        self.llm.start_profile()
        out = self.llm.generate([self.prompts[0]["ids"]], g, use_tqdm=False)
        self.llm.stop_profile()
        self.assertEqual(out[0]["token_ids"], self.prompts[0]["greedy"][:5])

    def test_priority(self):
        g = SamplingParams(temperature=0, max_tokens=3, ignore_eos=True)
        ids = [self.prompts[i]["ids"] for i in range(3)]
        with self.assertRaisesRegex(ValueError, "priority 1: the scheduling policy is fcfs"):
            self.llm.generate(ids[:1], g, use_tqdm=False, priority=[1])
        with self.assertRaisesRegex(ValueError, "priority has 1 entries for 3 prompts"):
            self.llm.generate(ids, g, use_tqdm=False, priority=[0])
        llm = LLM(TINY, **{**SMALL, "max_num_seqs": 1}, scheduling_policy="priority")
        outs = llm.generate(ids, g, use_tqdm=False, priority=[2, 1, 0])
        self.assertEqual([o["token_ids"] for o in outs], [self.prompts[i]["greedy"][:3] for i in range(3)])
        # One sequence at a time: the order they finish in is the order they ran in.
        reqs = [llm.add_request(ids[i], g, priority=prio) for i, prio in enumerate([1, 1, 0])]
        order = []
        while not llm.is_finished():
            order += [r for r, _ in llm.step()[0]]
        self.assertEqual(order, [reqs[2], reqs[0], reqs[1]])

    def test_ctrl_c_aborts_and_leaves_the_engine_usable(self):
        # SIGINT sent from another thread in the middle of a generate (at its 5th engine step).
        engine, steps = self.llm._engine, [0]

        class Interrupting:
            def __getattr__(self, name):
                return getattr(engine, name)

            def step(self):
                steps[0] += 1
                if steps[0] == 5:
                    t = threading.Thread(target=os.kill, args=(os.getpid(), signal.SIGINT))
                    t.start()
                    t.join()
                return engine.step()

        self.llm._engine = Interrupting()
        try:
            with self.assertRaises(KeyboardInterrupt):
                self.llm.generate([p["ids"] for p in self.prompts[:4]],
                                  SamplingParams(temperature=0, max_tokens=200, ignore_eos=True), use_tqdm=False)
        finally:
            self.llm._engine = engine
        self.assertLess(steps[0], 50)  # it stopped there, not at the end
        s = self.llm._engine.stats()
        self.assertEqual(s["num_running"] + s["num_waiting"], 0)
        self.assertEqual(s["num_free_blocks"], s["num_kvcache_blocks"])
        out = self.llm.generate([self.prompts[0]["ids"]], SamplingParams(temperature=0, max_tokens=16, ignore_eos=True),
                                use_tqdm=False)
        self.assertEqual(out[0]["token_ids"], self.prompts[0]["greedy"])

    def test_tensor_parallel_workers_run_this_interpreter(self):
        # nano-vLLM's LLM(path, tensor_parallel_size=2): rank 1 is a process running this
        # package (nanovllm._worker); its tokens are transformers' greedy ones, and its sampled
        # tokens (the whole row gathered to rank 0) one rank's.
        llm = LLM(TINY, tensor_parallel_size=2, **SMALL)
        ids = [p["ids"] for p in self.prompts[:4]]
        outs = llm.generate(ids, SamplingParams(temperature=0, max_tokens=16, ignore_eos=True), use_tqdm=False)
        for o, p in zip(outs, self.prompts):
            self.assertEqual(o["token_ids"], p["greedy"])
        seeded = SamplingParams(temperature=0.8, top_p=0.9, max_tokens=12, ignore_eos=True, seed=3)
        tokens = lambda engine: [o["token_ids"] for o in engine.generate(ids, seeded, use_tqdm=False)]
        self.assertEqual(tokens(llm), tokens(self.llm))

    def test_two_engines_in_one_process(self):
        other = LLM(TINY, **SMALL)
        g = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)
        p = self.prompts[3]
        self.assertEqual(other.generate([p["ids"]], g, use_tqdm=False)[0]["token_ids"], p["greedy"])
        self.assertEqual(self.llm.generate([p["ids"]], g, use_tqdm=False)[0]["token_ids"], p["greedy"])


class Sampling(unittest.TestCase):
    """vLLM's SamplingParams fields and its logprobs format (one dict per position)."""

    @classmethod
    def setUpClass(cls):
        cls.llm = LLM(TINY, **SMALL)
        with open(os.path.join(TINY, "expected.json")) as f:
            cls.prompts = json.load(f)["prompts"]

    def gen(self, ids, **kwargs):
        return self.llm.generate([ids], SamplingParams(**kwargs), use_tqdm=False)[0]

    def test_defaults_are_vllms_and_the_cpp_structs(self):
        p = SamplingParams()
        self.assertEqual((p.top_p, p.top_k, p.min_p, p.repetition_penalty, p.presence_penalty, p.frequency_penalty,
                          p.logit_bias, p.min_tokens, p.logprobs, p.prompt_logprobs),
                         (1.0, 0, 0.0, 1.0, 0.0, 0.0, None, 0, None, None))
        self.assertEqual(SamplingParams._from_core(_core.SamplingParams()), p)
        self.assertEqual(SamplingParams(0.5, 7).max_tokens, 7)  # nano-vLLM's positional order is kept
        # The model has no generation_config.json: its defaults are SamplingParams'.
        self.assertEqual(self.llm.get_default_sampling_params(), p)

    def test_each_field_reaches_the_engine(self):
        # Python's tokens equal the CLI's (held to the C++ API in test_generate_cli.cpp) with the
        # same setting, and the setting changes them (so the comparison can tell).
        ids = self.prompts[1]["ids"]
        base = dict(max_tokens=16, ignore_eos=True, seed=4)
        sampled = self.gen(ids, **base)["token_ids"]
        greedy = self.gen(ids, temperature=0, **base)["token_ids"]
        for kwargs, flags, other in [
            (dict(top_p=0.05), ["--top-p", "0.05"], sampled),
            (dict(top_k=2), ["--top-k", "2"], sampled),
            (dict(min_p=0.9), ["--min-p", "0.9"], sampled),
            (dict(temperature=0, repetition_penalty=5.0), ["--temperature", "0", "--repetition-penalty", "5"], greedy),
            (dict(temperature=0, presence_penalty=2.0), ["--temperature", "0", "--presence-penalty", "2"], greedy),
            (dict(temperature=0, frequency_penalty=2.0), ["--temperature", "0", "--frequency-penalty", "2"], greedy),
            (dict(logit_bias={42: 6.0, 43: float("-inf")}), ["--logit-bias", "42=6", "--logit-bias", "43=-inf"], sampled),
            (dict(temperature=0, logit_bias={2: 20.0}, min_tokens=5, stop_token_ids=[2]),
             ["--temperature", "0", "--logit-bias", "2=20", "--min-tokens", "5", "--stop-token-ids", "2"], greedy),
        ]:
            with self.subTest(**{k: str(v) for k, v in kwargs.items()}):
                got = self.gen(ids, **base, **kwargs)["token_ids"]
                cli = cli_tokens(ids, "--max-tokens", "16", "--ignore-eos", "--request-seed", "4", *flags)
                self.assertEqual(got, cli["token_ids"])
                self.assertNotEqual(got, other)

    def test_logit_bias_and_top_k_one(self):
        ids = self.prompts[0]["ids"]
        self.assertEqual(self.gen(ids, temperature=0, max_tokens=8, ignore_eos=True, logit_bias={123: 100})["token_ids"],
                         [123] * 8)
        # top_k=1 at any temperature is transformers' greedy continuation.
        self.assertEqual(self.gen(ids, temperature=1.5, top_k=1, max_tokens=16, ignore_eos=True, seed=9)["token_ids"],
                         self.prompts[0]["greedy"])

    def test_logprobs(self):
        ids = self.prompts[2]["ids"]
        out = self.gen(ids, temperature=0, max_tokens=5, ignore_eos=True, logprobs=3)
        cli = cli_tokens(ids, "--temperature", "0", "--max-tokens", "5", "--ignore-eos", "--logprobs", "3")
        self.assertEqual(out["token_ids"], self.prompts[2]["greedy"][:5])
        self.assertEqual(len(out["logprobs"]), 5)
        for tok, pos, ref in zip(out["token_ids"], out["logprobs"], cli["logprobs"]):
            # Greedy: the chosen token is the most likely, so the dict is the 3 most likely, ranked 1..3.
            self.assertEqual(list(pos)[0], tok)
            self.assertEqual(list(pos), [t["token_id"] for t in ref["top_logprobs"]])
            self.assertEqual([e["rank"] for e in pos.values()], [1, 2, 3])
            values = [e["logprob"] for e in pos.values()]
            self.assertEqual(values, sorted(values, reverse=True))
            self.assertAlmostEqual(values[0], ref["logprob"], places=6)
            self.assertIsNone(pos[tok]["decoded_token"])  # the fixture has no tokenizer
        self.assertAlmostEqual(out["cumulative_logprob"], sum(p[t]["logprob"] for t, p in zip(out["token_ids"], out["logprobs"])))
        # Sampled, n = 2: each sample's tokens, the chosen one first with its own rank.
        many = self.gen(ids, temperature=1.0, max_tokens=4, ignore_eos=True, n=2, seed=3, logprobs=2)
        for o in many["outputs"]:
            self.assertEqual(len(o["logprobs"]), 4)
            for tok, pos in zip(o["token_ids"], o["logprobs"]):
                self.assertEqual(list(pos)[0], tok)
                self.assertIn(len(pos), (2, 3))
                self.assertGreaterEqual(pos[tok]["rank"], 1)
        # logprobs=0: the chosen token alone.
        bare = self.gen(ids, temperature=0, max_tokens=2, ignore_eos=True, logprobs=0)
        self.assertEqual([list(p) for p in bare["logprobs"]], [[t] for t in bare["token_ids"]])

    def test_prompt_logprobs(self):
        ids = self.prompts[3]["ids"]
        out = self.gen(ids, temperature=0, max_tokens=2, prompt_logprobs=2)
        plp = out["prompt_logprobs"]
        cli = cli_tokens(ids, "--temperature", "0", "--max-tokens", "2", "--prompt-logprobs", "2")["prompt_logprobs"]
        self.assertEqual(len(plp), len(ids))
        self.assertIsNone(plp[0])  # vLLM's leading None: nothing predicts the first token
        for tok, pos, ref in zip(ids[1:], plp[1:], cli[1:]):
            # vLLM's dict: the prompt's token with its rank, then the 2 most likely ranked 1, 2 (the
            # prompt's token, when among them, keeps its place and takes that rank).
            top = [t["token_id"] for t in ref["top_logprobs"]]
            self.assertEqual(list(pos), [tok] + [t for t in top if t != tok])
            self.assertEqual(pos[tok]["rank"], top.index(tok) + 1 if tok in top else ref["rank"])
            self.assertAlmostEqual(pos[tok]["logprob"], ref["logprob"], places=6)
            for k, t in enumerate(top):
                self.assertEqual(pos[t]["rank"], k + 1)
        self.assertIsNone(out["logprobs"])  # not asked for
        plain = self.gen(ids, temperature=0, max_tokens=2)
        self.assertIsNone(plain["logprobs"])
        self.assertIsNone(plain["prompt_logprobs"])

    def test_bad_values_name_the_field(self):
        for kwargs, error, pattern in [
            (dict(top_k="x"), TypeError, "SamplingParams.top_k must be an int"),
            (dict(top_p="0.5"), TypeError, "SamplingParams.top_p must be a number"),
            (dict(logit_bias={"a": 1.0}), TypeError, "SamplingParams.logit_bias must be an int"),
            (dict(logit_bias=[1, 2]), TypeError, "logit_bias must be a dict"),
            (dict(logprobs=2.5), TypeError, "SamplingParams.logprobs must be an int"),
            (dict(top_p=0.0), ValueError, r"top_p must be in \(0, 1\]"),
            (dict(top_k=-3), ValueError, "top_k must be"),
            (dict(min_p=1.5), ValueError, "min_p must be in"),
            (dict(repetition_penalty=0.0), ValueError, "repetition_penalty must be"),
            (dict(presence_penalty=3.0), ValueError, "presence_penalty must be in"),
            (dict(frequency_penalty=-3.0), ValueError, "frequency_penalty must be in"),
            (dict(logit_bias={100000: 1.0}), ValueError, "logit_bias: token id 100000"),
            (dict(min_tokens=70), ValueError, "min_tokens must be in"),
            (dict(logprobs=21), ValueError, r"logprobs must be in \[0, max_logprobs = 20\]"),
            (dict(prompt_logprobs=-1), ValueError, "prompt_logprobs must be in"),
        ]:
            with self.subTest(**{k: repr(v) for k, v in kwargs.items()}):
                with self.assertRaisesRegex(error, pattern):
                    self.llm.generate([[1, 2]], SamplingParams(**kwargs), use_tqdm=False)
        self.assertTrue(self.llm.is_finished())
        with self.assertRaisesRegex(ValueError, "max_logprobs must be in"):
            LLM(TINY, **SMALL, max_logprobs=100)
        with self.assertRaisesRegex(TypeError, "LLM\\(\\) argument 'max_logprobs' cannot be 'x'"):
            LLM(TINY, max_logprobs="x")
        small = LLM(TINY, **SMALL, max_logprobs=2)
        with self.assertRaisesRegex(ValueError, r"logprobs must be in \[0, max_logprobs = 2\]"):
            small.generate([[1, 2]], SamplingParams(logprobs=3), use_tqdm=False)


class GenerationConfig(unittest.TestCase):
    """LLM(generation_config=...): the defaults that generate() takes without sampling_params."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp()
        cls.model = os.path.join(cls.tmp, "model")
        shutil.copytree(TINY, cls.model)
        with open(os.path.join(cls.model, "generation_config.json"), "w") as f:
            json.dump({"temperature": 0.0, "top_k": 20, "top_p": 0.95, "min_p": 0.05, "repetition_penalty": 1.1,
                       "max_new_tokens": 5, "eos_token_id": 2}, f)
        cls.want = dict(temperature=0.0, top_k=20, top_p=0.95, min_p=0.05, repetition_penalty=1.1, max_tokens=5)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_auto_reads_the_models_file(self):
        llm = LLM(self.model, **SMALL)
        d = llm.get_default_sampling_params()
        self.assertEqual(d, SamplingParams(**self.want))
        self.assertIsNot(d, llm.get_default_sampling_params())  # a fresh object each call, as vLLM
        ids = [[5, 6, 7], [8, 9]]
        by_default = llm.generate(ids, use_tqdm=False)
        explicit = llm.generate(ids, SamplingParams(**self.want), use_tqdm=False)
        self.assertEqual([o["token_ids"] for o in by_default], [o["token_ids"] for o in explicit])
        self.assertTrue(all(len(o["token_ids"]) <= 5 for o in by_default))

    def test_vllm_ignores_it_and_a_directory_names_one(self):
        self.assertEqual(LLM(self.model, **SMALL, generation_config="vllm").get_default_sampling_params(),
                         SamplingParams())
        other = LLM(TINY, **SMALL, generation_config=self.model)
        self.assertEqual(other.get_default_sampling_params(), SamplingParams(**self.want))
        with self.assertRaisesRegex(RuntimeError, "generation_config.json does not exist"):
            LLM(TINY, **SMALL, generation_config=self.tmp)


class TextAndChat(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp()
        cls.llm = LLM(tokenized_model(cls.tmp), **SMALL)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_text_prompts_and_tokenizer(self):
        tok = self.llm.get_tokenizer()
        ids = tok.encode("Hello, world")
        self.assertEqual(tok.decode(ids), "Hello, world")
        g = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
        by_text = self.llm.generate("Hello, world", g, use_tqdm=False)[0]
        by_ids = self.llm.generate([ids], g, use_tqdm=False)[0]
        self.assertEqual(by_text["token_ids"], by_ids["token_ids"])
        self.assertEqual(by_text["text"], tok.decode(by_ids["token_ids"], skip_special_tokens=True))

    def test_logprobs_decode_each_token(self):
        tok = self.llm.get_tokenizer()
        out = self.llm.generate("Hello, world", SamplingParams(temperature=0, max_tokens=3, logprobs=2, prompt_logprobs=1),
                                use_tqdm=False)[0]
        for pos in out["logprobs"] + out["prompt_logprobs"][1:]:
            for token_id, e in pos.items():
                self.assertEqual(e["decoded_token"], tok.decode([token_id]))

    def test_chat(self):
        tok = self.llm.get_tokenizer()
        msgs = [{"role": "user", "content": "Hi"}]
        text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True, enable_thinking=False)
        self.assertIn("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", text)
        self.assertEqual(tok.apply_chat_template(msgs, tokenize=True), tok.encode(tok.apply_chat_template(msgs)))
        g = SamplingParams(temperature=0, max_tokens=5, ignore_eos=True)
        chat = self.llm.chat(msgs, g, use_tqdm=False, enable_thinking=False)[0]
        self.assertEqual(chat["token_ids"], self.llm.generate(text, g, use_tqdm=False)[0]["token_ids"])

    def test_nano_vllm_bench_runs(self):
        # nano-vLLM's bench.py as it is (but the model path): its workload, its report line.
        env = dict(os.environ, NANOVLLM_MODEL=self.tmp)
        out = subprocess.run([sys.executable, os.path.join(SOURCE, "examples", "python", "bench.py")], env=env,
                             check=True, capture_output=True, text=True, timeout=900).stdout
        self.assertRegex(out, r"Total: 133966tok, Time: [0-9.]+s, Throughput: [0-9.]+tok/s")

    def test_nano_vllm_example_runs(self):
        env = dict(os.environ, NANOVLLM_MODEL=self.tmp)
        out = subprocess.run([sys.executable, os.path.join(SOURCE, "examples", "python", "example.py")], env=env,
                             check=True, capture_output=True, text=True, timeout=600).stdout
        self.assertEqual(out.count("Completion: "), 2)


class Install(unittest.TestCase):
    def test_pip_install_in_a_fresh_venv(self):
        build = os.environ.get("NANOVLLM_BUILD_DIR") or os.path.join(SOURCE, "build")
        with tempfile.TemporaryDirectory() as tmp:
            venv = os.path.join(tmp, "venv")
            subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", venv], check=True)
            py = os.path.join(venv, "bin", "python")
            env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
            env["NANOVLLM_BUILD_DIR"] = build
            subprocess.run([py, "-m", "pip", "install", "-q", "--no-index", SOURCE], check=True, env=env, cwd=tmp)
            code = ("import nanovllm; from nanovllm import LLM, SamplingParams; "
                    f"o = LLM({TINY!r}, device='cpu', max_model_len=64, num_kvcache_blocks=8, kvcache_block_size=16)"
                    ".generate([[1, 2, 3]], SamplingParams(temperature=0, max_tokens=3), use_tqdm=False); "
                    "print(nanovllm.__file__, len(o[0]['token_ids']))")
            out = subprocess.run([py, "-c", code], check=True, capture_output=True, text=True, cwd=tmp, env=env).stdout
            self.assertIn(os.path.join(venv, "lib"), out)
            self.assertTrue(out.strip().endswith(" 3"), out)
            # The build tree is still the build's: the temporary venv's interpreter did not become its Python.
            with open(os.path.join(build, "CMakeCache.txt")) as f:
                self.assertNotIn(venv, f.read())


if __name__ == "__main__":
    unittest.main()
