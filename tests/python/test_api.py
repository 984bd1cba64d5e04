"""The Python package (nanovllm) on the CPU: nano-vLLM's API over the C++ engine, held to the C++
side (the `nanovllm generate` CLI) and to transformers' greedy tokens of the fixture models."""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import unittest

from nanovllm import LLM, SamplingParams

SOURCE = os.environ.get("NANOVLLM_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
BINARY = os.environ.get("NANOVLLM_BINARY", os.path.join(SOURCE, "build", "nanovllm"))
TINY = os.path.join(SOURCE, "tests", "fixtures", "models", "tiny-tied")
SMALL = dict(device="cpu", max_model_len=256, kvcache_block_size=16, num_kvcache_blocks=64, num_threads=1)


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

    def test_two_engines_in_one_process(self):
        other = LLM(TINY, **SMALL)
        g = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)
        p = self.prompts[3]
        self.assertEqual(other.generate([p["ids"]], g, use_tqdm=False)[0]["token_ids"], p["greedy"])
        self.assertEqual(self.llm.generate([p["ids"]], g, use_tqdm=False)[0]["token_ids"], p["greedy"])


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
