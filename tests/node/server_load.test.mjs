// Load: 256 concurrent streaming clients, several greedy requests each, continuously batched by one
// server; every answer must equal the same request run alone (no crossed, lost or duplicated
// tokens). Then clients that drop mid-stream: their requests are aborted and the KV cache empties.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';

import { makeTinyModel, startServer, metrics, collectStream } from './server_helpers.mjs';

const CLIENTS = 256;
const REQUESTS_PER_CLIENT = 3;
const MAX_TOKENS = 6;
const NUM_PROMPTS = 32;

let model, server, client;

before(async () => {
  model = makeTinyModel();
  server = await startServer(model.dir, ['--max-model-len', '4096', '--max-num-seqs', '256']);
  client = server.client();
});

after(async () => {
  if (server) assert.equal((await server.stop()).code, 0, server.stderr());
  model?.remove();
});

// Prompts of different lengths and content, so batches mix prefill and decode of unequal sequences.
const prompts = Array.from({ length: NUM_PROMPTS }, (_, i) =>
  `Prompt ${i}: ` + 'the quick brown fox jumps over the lazy dog '.repeat(1 + (i % 5)) + `and counts to ${i * 7}`);

const greedy = { model: 'tiny', temperature: 0, ignore_eos: true, max_tokens: MAX_TOKENS };

async function idleMetrics() {
  // Wait for the engine loop's snapshot to show no work: it is published every step and when idle.
  const deadline = Date.now() + 30000;
  for (;;) {
    const m = await metrics(server.baseURL);
    if (m['vllm:num_requests_running'] === 0 && m['vllm:num_requests_waiting'] === 0) return m;
    if (Date.now() > deadline) return m;
    await new Promise((r) => setTimeout(r, 100));
  }
}

test(`${CLIENTS} concurrent streaming clients get exactly what each request gets alone`, { timeout: 600000 }, async (t) => {
  // The references: every prompt run alone on the idle server.
  const expected = [];
  for (const prompt of prompts) {
    const r = await client.completions.create({ ...greedy, prompt });
    assert.equal(r.usage.completion_tokens, MAX_TOKENS);
    expected.push(r.choices[0].text);
  }
  const idle = await idleMetrics();

  const failures = [];
  let done = 0;
  async function runClient(k) {
    for (let j = 0; j < REQUESTS_PER_CLIENT; ++j) {
      const p = (k * 7 + j * 13) % NUM_PROMPTS;
      let s;
      try {
        const stream = await client.completions.create({
          ...greedy, prompt: prompts[p], stream: true, stream_options: { include_usage: true },
        });
        s = await collectStream(stream);
      } catch (e) {  // recorded, not thrown: the other clients and the poller still finish
        failures.push({ client: k, request: j, prompt: p, error: `${e}`, cause: `${e.cause ?? ''}` });
        continue;
      }
      if (s.texts.length !== 1 || s.texts[0] !== expected[p] || s.finish[0] !== 'length'
        || s.usage?.completion_tokens !== MAX_TOKENS) {
        failures.push({ client: k, request: j, prompt: p, got: s.texts, want: expected[p], finish: s.finish, usage: s.usage });
      }
      ++done;
    }
  }
  // Watch the batch while the clients run: the point is many sequences in one engine step.
  let maxRunning = 0, polling = true;
  const poller = (async () => {
    while (polling) {
      try {
        const m = await metrics(server.baseURL);
        maxRunning = Math.max(maxRunning, m['vllm:num_requests_running']);
      } catch (e) {
        failures.push({ poller: true, error: `${e}`, cause: `${e.cause ?? ''}` });
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  await Promise.all(Array.from({ length: CLIENTS }, (_, k) => runClient(k)));
  polling = false;
  await poller;
  t.diagnostic(`most requests running in one step: ${maxRunning}`);
  assert.deepEqual(failures.slice(0, 5), [], `${failures.length} requests failed or differ from the request run alone`);
  assert.ok(maxRunning >= 32, `only ${maxRunning} requests ever ran together`);
  assert.equal(done, CLIENTS * REQUESTS_PER_CLIENT);

  const m = await idleMetrics();
  assert.equal(m['vllm:num_requests_running'], 0);
  assert.equal(m['vllm:kv_cache_usage_perc'], idle['vllm:kv_cache_usage_perc']);
  assert.equal(m['vllm:request_success_total{finished_reason="length"}']
    - idle['vllm:request_success_total{finished_reason="length"}'], CLIENTS * REQUESTS_PER_CLIENT);
  assert.equal(m['vllm:generation_tokens_total'] - idle['vllm:generation_tokens_total'],
    CLIENTS * REQUESTS_PER_CLIENT * MAX_TOKENS);
});

test('clients that disconnect mid-request have their requests aborted and KV blocks freed', { timeout: 300000 }, async () => {
  const idle = await idleMetrics();
  const N = 24;
  // Long generations: left alone they would run for minutes on this model.
  const opened = await Promise.all(Array.from({ length: N }, async (_, i) => {
    const stream = await client.completions.create({ ...greedy, prompt: prompts[i % NUM_PROMPTS], max_tokens: 3500, stream: true });
    const it = stream[Symbol.asyncIterator]();
    await it.next();
    await it.next();
    return stream;
  }));
  // And non-streamed requests whose clients give up waiting (the server notices the closed socket).
  const M = 4;
  const controllers = Array.from({ length: M }, () => new AbortController());
  const unstreamed = controllers.map((ac, i) => client.completions
    .create({ ...greedy, prompt: prompts[i], max_tokens: 3500 }, { signal: ac.signal })
    .then(() => 'finished', (e) => e.constructor.name));
  for (;;) {
    const m = await metrics(server.baseURL);
    if (m['vllm:num_requests_running'] + m['vllm:num_requests_waiting'] >= N + M) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  const busy = await metrics(server.baseURL);
  assert.ok(busy['vllm:kv_cache_usage_perc'] > idle['vllm:kv_cache_usage_perc'], 'the streams hold KV blocks');
  for (const s of opened) s.controller.abort();
  for (const ac of controllers) ac.abort();
  assert.deepEqual(await Promise.all(unstreamed), Array(M).fill('APIUserAbortError'));

  const deadline = Date.now() + 60000;
  let m;
  for (;;) {
    m = await metrics(server.baseURL);
    if (m['vllm:num_requests_running'] === 0 && m['vllm:num_requests_waiting'] === 0
      && m['vllm:kv_cache_usage_perc'] === idle['vllm:kv_cache_usage_perc']) break;
    assert.ok(Date.now() < deadline, `KV cache did not return to idle: ${JSON.stringify({
      running: m['vllm:num_requests_running'], kv: m['vllm:kv_cache_usage_perc'] })}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(m['vllm:request_success_total{finished_reason="abort"}']
    - idle['vllm:request_success_total{finished_reason="abort"}'], N + M);
  // The server is still healthy and exact.
  const r = await client.completions.create({ ...greedy, prompt: prompts[0] });
  assert.equal(r.choices[0].finish_reason, 'length');
});
