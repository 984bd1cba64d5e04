// Second reference for the tokenizers: `nanovllm tokenize` against transformers.js (encode with
// and without special tokens, decode with and without skip_special_tokens) for every
// models/*-tokenizer, on the corpus of tests/reference/make_tokenizer_fixtures.py and seeded
// random strings; and @huggingface/jinja for Qwen3's chat template (tool turns, multi-step tool
// exchanges, late system messages).
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
// Every tokenizer scripts/setup.sh fetched: models/<name>-tokenizer.
const families = fs.existsSync(path.join(src, 'models')) ?
  fs.readdirSync(path.join(src, 'models')).filter((d) => d.endsWith('-tokenizer') &&
    fs.existsSync(path.join(src, 'models', d, 'tokenizer.json'))).sort() : [];

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nanovllm-tok-'));
function cli(args, dir = modelDir) {
  return JSON.parse(execFileSync(bin, ['tokenize', '--model', dir, ...args], { encoding: 'utf8', maxBuffer: 1 << 28 }));
}
function writeJson(name, value) {
  const f = path.join(tmp, name);
  fs.writeFileSync(f, JSON.stringify(value));
  return f;
}

async function transformersJs() {
  return import(path.join(npm, '@huggingface/transformers/dist/transformers.node.mjs'));
}
async function references() {
  const { PreTrainedTokenizer } = await transformersJs();
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

// Random multi-script strings sprinkled with words that matter to tokenizers: contractions,
// whitespace runs, digits, SentencePiece's "▁" and "<0x..>" spellings, and `specials` (added tokens).
function randomTexts(n, seed, specials = ['<|im_end|>', '<think>']) {
  const r = rng(seed);
  const ranges = [[0x20, 0x7e], [0x20, 0x7e], [0x09, 0x0d], [0xa0, 0x17f], [0x400, 0x44f], [0x4e00, 0x4fff],
    [0x3040, 0x30ff], [0xac00, 0xac80], [0x600, 0x64a], [0x900, 0x970], [0x1f300, 0x1f64f], [0x10300, 0x1034a]];
  const words = ["'s", "'LL", ' the', '  ', '   ', '\n\n', '\r\n', '\t\t', '12345', '\u200d', '\u00a0', '\u2581',
    '<0x41>', ...specials];
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

// The fixture script's corpus (multilingual, emoji, whitespace runs, every family's special tokens);
// without python3, the texts of Qwen3's committed fixture.
function corpus() {
  try {
    return JSON.parse(execFileSync('python3', [path.join(src, 'tests/reference/make_tokenizer_fixtures.py'), '--corpus'],
      { encoding: 'utf8', maxBuffer: 1 << 26 }));
  } catch {
    return JSON.parse(fs.readFileSync(path.join(src, 'tests/fixtures/tokenizer/encode.json'))).cases.map((c) => c.text);
  }
}

// transformers' tokenizer(text) (add_special_tokens=True). transformers replaces tokenizer.json's
// post-processor with "[bos] $A [eos]" when tokenizer_config.json sets add_bos_token or
// add_eos_token (update_post_processor: DeepSeek-V3 gets its BOS that way); transformers.js
// keeps tokenizer.json's, so that rule is applied here.
function encodeWithSpecial(tok, tc, text) {
  if (!('add_bos_token' in tc) && !('add_eos_token' in tc)) return tok.encode(text, { add_special_tokens: true });
  const ids = tok.encode(text, { add_special_tokens: false });
  const bos = tc.add_bos_token && tok.bos_token_id != null ? [tok.bos_token_id] : [];
  const eos = tc.add_eos_token && tok.eos_token_id != null ? [tok.eos_token_id] : [];
  return [...bos, ...ids, ...eos];
}

// HF's decode (Rust tokenizers) has no clean_up_tokenization_spaces; transformers.js applies it
// by default (and Llama 3.1's config asks transformers for it): off, to compare the decoders alone.
function decodeRef(tok, ids, skip) {
  return ids.length ? tok.decode(ids, { skip_special_tokens: skip, clean_up_tokenization_spaces: false }) : '';
}

function firstDifference(got, want, texts, what) {
  for (let i = 0; i < want.length; i++) {
    if (JSON.stringify(got[i]) !== JSON.stringify(want[i]))
      return `${what} differs for text ${i} ${JSON.stringify(texts[i])}:\n  nanovllm ${JSON.stringify(got[i])}\n  ` +
        `reference ${JSON.stringify(want[i])}`;
  }
  return null;
}

for (const family of families) {
  test(`${family}: encode and decode agree with transformers.js`, { skip }, async () => {
    const dir = path.join(src, 'models', family);
    const { PreTrainedTokenizer } = await transformersJs();
    const tj = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer.json')));
    const tc = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer_config.json')));
    const tok = new PreTrainedTokenizer(tj, tc);
    // Random texts carry this family's own added tokens (a few special, a few not).
    const added = tj.added_tokens;
    const specials = [...added.filter((t) => t.special).slice(0, 6), ...added.filter((t) => !t.special).slice(0, 4)]
      .map((t) => t.content);
    // Whole documents too: Llama 2 (no pre-tokenizer) runs BPE over each as one word of
    // thousands of symbols, where the long-piece loop hands over to its heap.
    const base = corpus();
    const docs = [0, 1, 2, 3].map((k) => base.filter((_, i) => i % 4 === k).join(k % 2 ? '\n' : ' '));
    const texts = [...base, ...randomTexts(120, 42, specials), ...docs];
    const textsFile = writeJson(`${family}-texts.json`, texts);

    const plain = texts.map((t) => tok.encode(t, { add_special_tokens: false }));
    const special = texts.map((t) => encodeWithSpecial(tok, tc, t));
    const diff1 = firstDifference(cli(['--texts-file', textsFile], dir).ids, plain, texts, 'encode');
    const diff2 = firstDifference(cli(['--texts-file', textsFile, '--add-special-tokens'], dir).ids, special, texts,
      'encode with special tokens');
    assert.equal(diff1 ?? diff2, null, diff1 ?? diff2);

    for (const [ids, what] of [[plain, 'decode'], [special, 'decode of the ids with special tokens']]) {
      const idsFile = writeJson(`${family}-ids.json`, ids);
      for (const skipSpecial of [false, true]) {
        const got = cli(['--decode-file', idsFile, ...(skipSpecial ? ['--skip-special-tokens'] : [])], dir).texts;
        const want = ids.map((v) => decodeRef(tok, v, skipSpecial));
        const d = firstDifference(got, want, texts, `${what}${skipSpecial ? ' (skip_special_tokens)' : ''}`);
        assert.equal(d, null, d);
      }
    }
    console.log(`${family}: ${texts.length} texts: encode (with and without special tokens) and 4 decodes equal`);
  });
}

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
