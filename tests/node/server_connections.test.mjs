// Many connections on one event-driven I/O thread: 10,000 hostile or idle connections (idle
// keep-alive, headers trickled at 1 byte/s, bodies trickled at 1 byte/s) held open while 256
// streaming clients complete 5,000 greedy requests, each equal to the same request run alone
// (nothing lost, duplicated or crossed), and /health answers within 100 ms throughout (probed from
// a separate process, so the probe's own event loop is not the one holding 10,000 sockets). Also:
// header and body deadlines are absolute (a client that trickles bytes is cut at the deadline, not
// kept alive by each byte). The server's RSS per idle connection and its peak are reported.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

import { makeTinyModel, startServer, metrics, collectStream, SANITIZER_SLOWDOWN } from './server_helpers.mjs';

const IDLE = 6000, SLOW_HEADERS = 2000, SLOW_BODIES = 2000;  // 10,000 connections
const CLIENTS = 256, REQUESTS = 5000, MAX_TOKENS = 4, NUM_PROMPTS = 16;
const HOLD_MS = 30000;  // the attack lasts at least this long, and until the clients are done
const MiB = 1 << 20;

let model;
before(() => { model = makeTinyModel(); });
after(() => model?.remove());

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Opens one socket and resolves once connected (or failed).
function open(port) {
  return new Promise((resolve) => {
    const sock = connect(port, '127.0.0.1');
    sock.setNoDelay(true);
    sock.on('error', () => {});
    sock.once('connect', () => resolve(sock));
    sock.once('close', () => resolve(sock));
  });
}

// The attack: keeps `count` connections of one kind open until stop(); a connection the server
// closes (its deadline passed) is opened again, as a real attacker would.
function attackers(port, kind, count) {
  let running = true, reopened = 0, closedByServer = 0;
  const live = new Set();
  const trickles = new Set();
  async function one() {
    const sock = await open(port);
    if (!running) { sock.destroy(); return; }
    live.add(sock);
    sock.on('close', () => {
      live.delete(sock);
      if (!running) return;
      ++closedByServer;
      ++reopened;
      one();
    });
    if (kind === 'idle') {
      // One request, then silence: an idle keep-alive connection.
      sock.write('GET /health HTTP/1.1\r\nHost: x\r\n\r\n');
    } else {
      const text = kind === 'headers'
        ? 'POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n'
        : '{"prompt": "' + 'x'.repeat(980) + '"}';
      if (kind === 'bodies') sock.write('POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n');
      let i = 0;
      const timer = setInterval(() => {
        if (sock.destroyed || i >= text.length) { clearInterval(timer); trickles.delete(timer); return; }
        sock.write(text[i++]);
      }, 1000);
      trickles.add(timer);
    }
  }
  const started = (async () => {
    for (let i = 0; i < count; i += 250) {
      await Promise.all(Array.from({ length: Math.min(250, count - i) }, one));
    }
  })();
  return {
    started,
    live: () => live.size,
    stats: () => ({ reopened, closedByServer }),
    stop() {
      running = false;
      for (const t of trickles) clearInterval(t);
      for (const s of live) s.destroy();
    },
  };
}

test('10,000 idle and slow connections held while 256 streaming clients complete 5,000 requests; /health within 100 ms', { timeout: 900000 }, async (t) => {
  const s = await startServer(model.dir, ['--max-model-len', '256', '--max-num-seqs', '256']);
  let probe;
  const attacks = [];
  try {
    const c = s.client();
    const greedy = { model: 'tiny', temperature: 0, ignore_eos: true, max_tokens: MAX_TOKENS };
    const prompts = Array.from({ length: NUM_PROMPTS }, (_, i) => `Prompt ${i}: ` + 'lazy dog '.repeat(1 + (i % 4)) + `${i * 7}`);
    const expected = [];
    for (const prompt of prompts) expected.push((await c.completions.create({ ...greedy, prompt })).choices[0].text);
    const idleMem = s.memory();

    // The 10,000 connections.
    const t0 = Date.now();
    attacks.push(attackers(s.port, 'idle', IDLE), attackers(s.port, 'headers', SLOW_HEADERS), attackers(s.port, 'bodies', SLOW_BODIES));
    await Promise.all(attacks.map((a) => a.started));
    await sleep(2000);
    const heldMem = s.memory();
    const m0 = await metrics(s.baseURL);
    const open0 = m0['nanovllm:http_connections'];
    const perConn = (heldMem.rss - idleMem.rss) / open0;
    t.diagnostic(`${open0} connections open after ${Date.now() - t0} ms; server RSS ${(idleMem.rss / MiB).toFixed(0)} -> ` +
      `${(heldMem.rss / MiB).toFixed(0)} MiB (${(perConn / 1024).toFixed(1)} KiB per connection)`);
    assert.ok(open0 >= 10000, `only ${open0} connections open`);

    // The prober, then the clients.
    probe = fork(join(fileURLToPath(new URL('.', import.meta.url)), 'health_probe.mjs'), [String(s.port)], { stdio: 'inherit' });
    await new Promise((r) => probe.once('message', r));
    const failures = [];
    let next = 0, done = 0;
    const tLoad = Date.now();
    async function client() {
      for (;;) {
        const k = next++;
        if (k >= REQUESTS) return;
        const p = k % NUM_PROMPTS;
        try {
          const stream = await c.completions.create({ ...greedy, prompt: prompts[p], stream: true, stream_options: { include_usage: true } });
          const r = await collectStream(stream);
          if (r.texts.length !== 1 || r.texts[0] !== expected[p] || r.finish[0] !== 'length' || r.usage?.completion_tokens !== MAX_TOKENS)
            failures.push({ k, got: r.texts, want: expected[p], finish: r.finish });
          else ++done;
        } catch (e) {
          failures.push({ k, error: `${e}`, cause: `${e.cause ?? ''}` });
        }
      }
    }
    // The attacking connections open, sampled: slow headers all reach their deadline together and
    // reconnect as one wave, so the least sample dips while a wave reconnects.
    const samples = [];
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        samples.push(attacks.reduce((a, x) => a + x.live(), 0));
        await sleep(500);
      }
    })();
    await Promise.all(Array.from({ length: CLIENTS }, client));
    const loadMs = Date.now() - tLoad;
    const rest = HOLD_MS - (Date.now() - t0);
    if (rest > 0) await sleep(rest);
    sampling = false;
    await sampler;
    probe.send('stop');
    const health = await new Promise((r) => probe.once('message', r));
    const m1 = await metrics(s.baseURL);
    samples.sort((a, b) => a - b);
    const minOpen = samples[0], medianOpen = samples[Math.floor(samples.length / 2)];
    const peak = s.memory().peak;
    t.diagnostic(`${REQUESTS} requests by ${CLIENTS} streaming clients in ${loadMs} ms (${(REQUESTS / loadMs * 1000).toFixed(1)} req/s); ` +
      `attack held ${Date.now() - t0} ms, attacking connections open: median ${medianOpen}, least ${minOpen} (${samples.length} samples); ` +
      `reconnects ${JSON.stringify(attacks.map((a) => a.stats()))}`);
    t.diagnostic(`/health: ${health.n} probes, p50 ${health.p50?.toFixed(1)} ms, p99 ${health.p99?.toFixed(1)} ms, ` +
      `max ${health.max?.toFixed(1)} ms (slowest at ${health.slowest.map((x) => `${x.ms} ms @${((x.at - t0) / 1000).toFixed(1)} s`).join(', ')}), ${health.failures} failed; server peak RSS ${(peak / MiB).toFixed(0)} MiB; ` +
      `header timeouts ${m1['nanovllm:http_header_timeouts_total']}, body timeouts ${m1['nanovllm:http_body_timeouts_total']}`);
    assert.deepEqual(failures.slice(0, 5), [], `${failures.length} requests failed or differ from the request run alone`);
    assert.equal(done, REQUESTS);
    assert.ok(medianOpen >= 9900, `attacking connections: median ${medianOpen}`);
    assert.ok(minOpen >= 7000, `attacking connections fell to ${minOpen}`);
    assert.equal(health.failures, 0);
    assert.ok(health.n >= 20, `only ${health.n} probes`);
    // The issue's target: 100 ms for every probe. The I/O thread waits mostly for a CPU, which the
    // engine's compute threads yield to it (--engine-nice, docs/server.md: worst 28-63 ms at load
    // average 6-9 with it, 48-140 ms without). Under ASan + UBSan (a correctness run) p99 is held
    // to SANITIZER_SLOWDOWN times that, and the worst probe to 1 s (90-273 ms measured there).
    const worst = SANITIZER_SLOWDOWN > 1 ? 1000 : 100;
    assert.ok(health.p99 < 100 * SANITIZER_SLOWDOWN, `/health p99 ${health.p99} ms (bound x${SANITIZER_SLOWDOWN})`);
    assert.ok(health.max < worst, `/health took ${health.max} ms (bound ${worst} ms)`);
    assert.ok(peak < 2048 * MiB, `server peak RSS ${peak}`);
  } finally {
    for (const a of attacks) a.stop();
    probe?.kill();
    assert.equal((await s.stop()).code, 0, s.stderr());
  }
});

test('deadlines are absolute: headers or a body trickled at 1 byte/s are cut at the deadline', { timeout: 120000 }, async () => {
  const s = await startServer(model.dir, ['--max-model-len', '64', '--timeout-headers', '3', '--timeout-body', '3']);
  try {
    const trickle = (head, text) => new Promise((resolve) => {
      const t0 = Date.now();
      const sock = connect(s.port, '127.0.0.1');
      let got = '', i = 0, timer;
      const giveUp = setTimeout(() => { clearInterval(timer); sock.destroy(); }, 30000);
      sock.on('error', () => {});
      sock.on('connect', () => {
        if (head) sock.write(head);
        timer = setInterval(() => { if (i < text.length) sock.write(text[i++]); }, 1000);
      });
      sock.on('data', (d) => { got += d; });
      sock.on('close', () => { clearInterval(timer); clearTimeout(giveUp); resolve({ ms: Date.now() - t0, text: got, sent: i }); });
    });
    const [h, b] = await Promise.all([
      trickle(null, 'GET /health HTTP/1.1\r\nHost: x\r\nX-Padding: ' + 'y'.repeat(100) + '\r\n\r\n'),
      trickle('POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n', 'z'.repeat(100)),
    ]);
    // Cut at ~3 s, though a byte arrived every second (a per-read timeout would never fire).
    assert.ok(h.ms >= 2500 && h.ms < 6000, `headers cut after ${h.ms} ms (${h.sent} bytes sent)`);
    assert.equal(h.text, '');
    assert.ok(b.ms >= 2500 && b.ms < 6000, `body cut after ${b.ms} ms (${b.sent} bytes sent)`);
    assert.match(b.text, /^HTTP\/1\.1 408/);
    const m = await metrics(s.baseURL);
    assert.ok(m['nanovllm:http_header_timeouts_total'] >= 1);
    assert.ok(m['nanovllm:http_body_timeouts_total'] >= 1);
  } finally {
    assert.equal((await s.stop()).code, 0);
  }
});
