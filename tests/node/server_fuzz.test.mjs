// A bounded fuzz of request bodies against the running server: random bytes, mutated valid JSON,
// wrong-typed and out-of-range fields (numbers beyond double's too), deep nesting. No crash, no
// hang, and every answer is an HTTP status with a body (OpenAI's error object for every error).
// Seeded: NANOVLLM_FUZZ_SEED reproduces.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';

import { makeTinyModel, startServer, metrics, errorObject } from './server_helpers.mjs';

const COUNT = Number(process.env.NANOVLLM_FUZZ_COUNT ?? 1000);
const SEED = Number(process.env.NANOVLLM_FUZZ_SEED ?? 20261123);
const CONCURRENCY = 8;

let model, server;

before(async () => {
  model = makeTinyModel();
  server = await startServer(model.dir, ['--max-model-len', '128']);
});

after(async () => {
  if (server) assert.equal((await server.stop()).code, 0, server.stderr());
  model?.remove();
});

// mulberry32: a small seeded PRNG, so a failing body can be regenerated from the seed.
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6D2B79F5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rand = rng(SEED);
const pick = (xs) => xs[Math.floor(rand() * xs.length)];
const int = (lo, hi) => lo + Math.floor(rand() * (hi - lo + 1));

const SEEDS = [
  ['/v1/completions', { model: 'tiny', prompt: 'Hello there', max_tokens: 3, temperature: 0 }],
  ['/v1/completions', { model: 'tiny', prompt: ['a', 'b c'], max_tokens: 2, n: 2, seed: 3, stop: ['x'] }],
  ['/v1/completions', { model: 'tiny', prompt: [1, 2, 3], max_tokens: 2, stream: true, stream_options: { include_usage: true } }],
  ['/v1/completions', {
    model: 'tiny', prompt: 'Hi', max_tokens: 3, logprobs: 2, echo: true, top_k: 5, top_p: 0.9, min_p: 0.05,
    logit_bias: { 5: 3 }, presence_penalty: 0.5, min_tokens: 1,
  }],
  ['/v1/chat/completions', { model: 'tiny', messages: [{ role: 'user', content: 'hi' }], max_tokens: 3 }],
  ['/v1/chat/completions', {
    model: 'tiny', messages: [{ role: 'user', content: 'hi' }], max_tokens: 3, logprobs: true, top_logprobs: 2,
    stream: true, repetition_penalty: 1.2, frequency_penalty: -0.5,
  }],
  ['/v1/chat/completions', {
    model: 'tiny', messages: [{ role: 'system', content: 's' }, { role: 'user', content: [{ type: 'text', text: 'q' }] }],
    max_completion_tokens: 2, stream: true, chat_template_kwargs: { enable_thinking: false },
  }],
];
const KEYS = ['model', 'prompt', 'messages', 'max_tokens', 'max_completion_tokens', 'temperature', 'top_p', 'top_k',
  'n', 'seed', 'stop', 'stream', 'stream_options', 'ignore_eos', 'logprobs', 'echo', 'best_of', 'presence_penalty',
  'stop_token_ids', 'skip_special_tokens', 'chat_template_kwargs', 'user', 'role', 'content', 'include_usage',
  'min_p', 'repetition_penalty', 'frequency_penalty', 'logit_bias', 'min_tokens', 'top_logprobs', 'prompt_logprobs'];

function randomString() {
  return pick(['', 'x', 'tiny', '\u0000', '\uffff', '😀', 'a'.repeat(int(0, 300)), '\\', '"', '\ud83d',
    String.fromCharCode(...Array.from({ length: int(1, 20) }, () => int(0, 0xd7ff)))]);
}

function randomValue(depth = 0) {
  switch (int(0, depth > 2 ? 5 : 7)) {
    case 0: return null;
    case 1: return rand() < 0.5;
    case 2: return pick([0, -1, 1, 2, 3, 127, 128, 129, 4096, 2 ** 31, 2 ** 53, -(2 ** 63), 1e308, 0.5, -0.0, 1e-300]);
    case 3: return int(-5, 300);
    case 4: return randomString();
    case 5: return rand() * 4 - 1;
    case 6: return Array.from({ length: int(0, 4) }, () => randomValue(depth + 1));
    default: return Object.fromEntries(Array.from({ length: int(0, 3) }, () => [pick(KEYS), randomValue(depth + 1)]));
  }
}

// Replaces, removes or adds a field somewhere in the object tree.
function mutateTree(v, depth = 0) {
  if (Array.isArray(v) && v.length && rand() < 0.6) {
    const i = int(0, v.length - 1);
    v[i] = mutateTree(v[i], depth + 1);
    return v;
  }
  if (v && typeof v === 'object' && !Array.isArray(v)) {
    const keys = Object.keys(v);
    const r = rand();
    if (keys.length && r < 0.4) {
      const k = pick(keys);
      v[k] = rand() < 0.5 ? mutateTree(v[k], depth + 1) : randomValue();
    } else if (keys.length && r < 0.6) {
      delete v[pick(keys)];
    } else {
      v[pick(KEYS)] = randomValue();
    }
    return v;
  }
  return randomValue();
}

function mutateBytes(s) {
  const b = Buffer.from(s);
  const n = int(1, 4);
  for (let i = 0; i < n && b.length; ++i) b[int(0, b.length - 1)] = int(0, 255);
  return rand() < 0.3 ? b.subarray(0, int(0, b.length)) : b;
}

function makeBody() {
  const [path, seed] = pick(SEEDS);
  const base = JSON.parse(JSON.stringify(seed));
  const kind = int(0, 9);
  let body;
  if (kind <= 4) body = JSON.stringify(rand() < 0.5 ? mutateTree(base) : mutateTree(mutateTree(base)));
  // A number beyond double's range, which JSON.stringify cannot write.
  if (kind <= 4 && rand() < 0.15) body = body.replace(/:(-?\d+(\.\d+)?)/, pick([':1e400', ':-1e999']));
  else if (kind <= 6) body = mutateBytes(JSON.stringify(base));
  else if (kind === 7) body = Buffer.from(Array.from({ length: int(0, 200) }, () => int(0, 255)));
  else if (kind === 8) body = '['.repeat(int(1, 20000)) + ']'.repeat(int(0, 3));
  else body = JSON.stringify(randomValue());
  // Generation stays short whatever a mutation does to max_tokens: --max-model-len 128 bounds it.
  return { path: rand() < 0.05 ? pick(['/v1/models', '/v1/x', '/v1/completions/']) : path, body };
}

test(`fuzz: ${COUNT} request bodies, seed ${SEED}`, { timeout: 600000 }, async (t) => {
  const counts = {};
  let next = 0;
  const bad = [];
  async function worker() {
    while (next < COUNT) {
      const i = next++;
      const { path, body } = makeBody();
      let status, text;
      try {
        const res = await fetch(server.baseURL + path, {
          method: 'POST', body, headers: { 'Content-Type': 'application/json' }, signal: AbortSignal.timeout(120000),
        });
        status = res.status;
        text = await res.text();
      } catch (e) {
        bad.push({ i, body: String(body).slice(0, 200), error: String(e) });
        continue;
      }
      counts[status] = (counts[status] ?? 0) + 1;
      if (!text.length || status >= 500 && status !== 503) {
        bad.push({ i, status, body: String(body).slice(0, 200), text: text.slice(0, 200) });
      } else if (status >= 400) {
        try { errorObject(JSON.parse(text)); } catch (e) { bad.push({ i, status, text: text.slice(0, 200), error: String(e) }); }
      }
    }
  }
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  t.diagnostic(`statuses: ${JSON.stringify(counts)}`);
  assert.deepEqual(bad.slice(0, 5), [], `${bad.length} bad answers (seed ${SEED}); statuses ${JSON.stringify(counts)}`);
  assert.ok(server.proc.exitCode === null, 'the server is still running');
  assert.equal((await fetch(server.baseURL + '/health')).status, 200);
  // Nothing left running once the fuzz is over.
  const deadline = Date.now() + 60000;
  for (;;) {
    const m = await metrics(server.baseURL);
    if (m['vllm:num_requests_running'] === 0 && m['vllm:num_requests_waiting'] === 0) break;
    assert.ok(Date.now() < deadline, 'requests still running after the fuzz');
    await new Promise((r) => setTimeout(r, 200));
  }
});
