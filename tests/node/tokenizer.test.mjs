// Second reference for the tokenizer: `nanovllm tokenize` against transformers.js (encode/decode)
// and @huggingface/jinja (Qwen3's chat template) on texts and conversations the HF fixtures do
// not hold: seeded random multi-script strings, tool turns, multi-step tool exchanges.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const src = process.env.NANOVLLM_SOURCE_DIR ?? path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
const bin = process.env.NANOVLLM_BINARY;
const modelDir = path.join(src, 'models', 'qwen3-tokenizer');
const npm = path.join(src, 'third_party', 'npm', 'node_modules');
const skip = !bin ? 'NANOVLLM_BINARY is not set' :
  !fs.existsSync(path.join(modelDir, 'tokenizer.json')) ? 'models/qwen3-tokenizer is missing (scripts/setup.sh)' :
  !fs.existsSync(path.join(npm, '@huggingface', 'jinja')) ? 'third_party/npm is not installed (scripts/setup.sh)' : false;

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nanovllm-tok-'));
function cli(args) {
  return JSON.parse(execFileSync(bin, ['tokenize', '--model', modelDir, ...args], { encoding: 'utf8' }));
}
function cliEncode(text, i) {
  const f = path.join(tmp, `text${i}.txt`);
  fs.writeFileSync(f, text);
  return cli(['--text-file', f]).ids;
}

async function references() {
  const { PreTrainedTokenizer } = await import(path.join(npm, '@huggingface/transformers/dist/transformers.node.mjs'));
  const { Template } = await import(path.join(npm, '@huggingface/jinja/dist/index.js'));
  const tj = JSON.parse(fs.readFileSync(path.join(modelDir, 'tokenizer.json')));
  const tc = JSON.parse(fs.readFileSync(path.join(modelDir, 'tokenizer_config.json')));
  return { tok: new PreTrainedTokenizer(tj, tc), template: new Template(tc.chat_template) };
}

// mulberry32: a tiny seeded PRNG so the texts are the same on every run.
function rng(seed) {
  return () => {
    seed = (seed + 0x6D2B79F5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomTexts(n) {
  const r = rng(42);
  const ranges = [[0x20, 0x7e], [0x20, 0x7e], [0x09, 0x0d], [0xa0, 0x17f], [0x400, 0x44f], [0x4e00, 0x4fff],
    [0x3040, 0x30ff], [0xac00, 0xac80], [0x600, 0x64a], [0x900, 0x970], [0x1f300, 0x1f64f]];
  const words = ["'s", "'LL", ' the', '  ', '\n\n', '\r\n', '12345', '<|im_end|>', '<think>', '\u200d', '\u00a0'];
  const out = [];
  for (let i = 0; i < n; i++) {
    let s = '';
    const len = Math.floor(r() * 80);
    for (let k = 0; k < len; k++) {
      if (r() < 0.15) { s += words[Math.floor(r() * words.length)]; continue; }
      const [lo, hi] = ranges[Math.floor(r() * ranges.length)];
      s += String.fromCodePoint(lo + Math.floor(r() * (hi - lo + 1)));
    }
    out.push(s);
  }
  return out;
}

test('encode and decode agree with transformers.js', { skip }, async () => {
  const { tok } = await references();
  randomTexts(24).forEach((text, i) => {
    const want = tok.encode(text, { add_special_tokens: false });
    const ids = cliEncode(text, i);
    assert.deepEqual(ids, want, `encode ${JSON.stringify(text)}`);
    if (ids.length && i % 4 === 0) {  // decode on a sample: each CLI call loads the tokenizer
      assert.equal(cli(['--decode', ids.join(',')]).text, tok.decode(ids), `decode ${JSON.stringify(text)}`);
      assert.equal(cli(['--decode', ids.join(','), '--skip-special-tokens']).text,
        tok.decode(ids, { skip_special_tokens: true }));
    }
  });
});

const CONVERSATIONS = [
  [{ role: 'user', content: 'weather?' },
    { role: 'assistant', content: '<think>\nneed tool\n</think>\n\ncalling' },
    { role: 'tool', content: 'sunny' }, { role: 'tool', content: '20C' }],
  [{ role: 'system', content: 'sys' }, { role: 'user', content: 'q1' },
    { role: 'assistant', content: 'a1', reasoning_content: 'r1' },
    { role: 'user', content: '<tool_response>\nx\n</tool_response>' },
    { role: 'assistant', content: '\n\n<think>r2</think>a2' }],
  [{ role: 'user', content: 'q' }, { role: 'assistant', content: '<think>\n\n\nonly thinking\n\n</think>' }],
  [{ role: 'user', content: 'a' }, { role: 'system', content: 'late system' }, { role: 'user', content: 'b' }],
  [{ role: 'assistant', content: 'starts with assistant' }, { role: 'user', content: '你好 🙂' }],
];

test('chat template agrees with @huggingface/jinja', { skip }, async () => {
  const { tok, template } = await references();
  CONVERSATIONS.forEach((messages, i) => {
    const f = path.join(tmp, `chat${i}.json`);
    fs.writeFileSync(f, JSON.stringify(messages));
    for (const agp of [true, false]) {
      for (const think of [true, false]) {
        const rendered = template.render({ messages, add_generation_prompt: agp, enable_thinking: think });
        const flags = [...(agp ? [] : ['--no-generation-prompt']), ...(think ? [] : ['--no-thinking'])];
        assert.deepEqual(cli(['--chat-file', f, ...flags]).ids, tok.encode(rendered, { add_special_tokens: false }),
          `conversation ${i} agp=${agp} thinking=${think}\n${rendered}`);
      }
    }
  });
});

test('bad input is a clear error', { skip }, () => {
  const f = path.join(tmp, 'bad.txt');
  fs.writeFileSync(f, Buffer.from([0x61, 0x62, 0xff, 0x63]));
  assert.throws(() => execFileSync(bin, ['tokenize', '--model', modelDir, '--text-file', f], { stdio: 'pipe' }),
    (e) => /invalid UTF-8 at byte offset 2/.test(e.stderr.toString()));
  assert.throws(() => execFileSync(bin, ['tokenize', '--model', modelDir, '--decode', '1,x'], { stdio: 'pipe' }),
    (e) => /--decode '1,x': 'x' is not a token id/.test(e.stderr.toString()));
});
