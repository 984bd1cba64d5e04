// The /health prober of server_connections.test.mjs, run as its own process (fork) so that its
// event loop is not the one holding 10,000 sockets: a fresh connection every 50 ms, timed from
// connect to the whole response. Sends 'ready', and {n, failures, max, p50, p99, slowest} (ms) once the
// parent sends 'stop'.
import { connect } from 'node:net';

const port = Number(process.argv[2]);
const lat = [];
let failures = 0, running = true;
process.on('message', (m) => { if (m === 'stop') running = false; });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const once = () => new Promise((resolve) => {
  const t0 = performance.now();
  const sock = connect(port, '127.0.0.1');
  let got = '', finished = false;
  const done = (ok) => {
    if (finished) return;
    finished = true;
    clearTimeout(timer);
    sock.destroy();
    if (ok) lat.push([performance.now() - t0, Date.now()]); else ++failures;
    resolve();
  };
  const timer = setTimeout(() => done(false), 5000);
  sock.on('error', () => done(false));
  sock.on('connect', () => sock.write('GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'));
  sock.on('data', (d) => { got += d; if (got.includes('"ok"')) done(got.startsWith('HTTP/1.1 200')); });
});

process.send('ready');
while (running) {
  await once();
  await sleep(50);
}
lat.sort((a, b) => a[0] - b[0]);
const q = (p) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))]?.[0] ?? null;
// The five slowest with the wall-clock time (ms since the epoch) each began, to match against
// what else happened then.
const slowest = lat.slice(-5).reverse().map(([ms, at]) => ({ ms: Math.round(ms), at }));
process.send({ n: lat.length, failures, max: lat.at(-1)?.[0] ?? null, p50: q(0.5), p99: q(0.99), slowest });
process.disconnect();
