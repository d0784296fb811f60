/*
 * hub.mjs — black-box test support for the Node suite: a real chorus process
 * on a free loopback port, plus small promise helpers around the `ws` client.
 *
 *   withHub(opts, async (hub) => { ... })
 *     start:  $CHORUS_BIN serve --listen 127.0.0.1:<free port> --test-endpoints
 *             --threads 2 --data-dir <fresh tmp dir>/data [opts.args...]
 *             and wait until the port accepts a TCP connection;
 *     run:    the test body;
 *     stop:   SIGTERM, wait for exit, assert exit code 0.
 *   The hub's stdout+stderr is kept in memory and shown only when the body
 *   throws or the hub exits uncleanly (appended to the thrown error's message),
 *   so passing runs stay quiet. CHORUS_TEST_DEBUG=1 runs the hub at debug level.
 *
 *   Client(url, protocols?, options?)  a ws WebSocket whose messages are queued
 *   from the start, so none is lost between awaits:
 *     await c.opened; await c.next(); await c.take(n); await c.closed -> {code, reason}
 *
 * Every wait has a time bound; a hung server fails the test instead of the run.
 * Node's test runner only picks *.test.mjs files, so this module is not a test.
 */
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';
import WebSocket from 'ws';

export { WebSocket };

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const CHORUS_BIN = process.env.CHORUS_BIN || path.join(ROOT, 'build', 'chorus');

/* Hubs still running when the test process exits are killed, never left behind. */
const live = new Set();
process.on('exit', () => {
  for (const p of live) {
    try { p.kill('SIGKILL'); } catch { /* already gone */ }
  }
});

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/* Resolve with the promise's value, or reject after ms naming what was awaited. */
export function within(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function canConnect(port) {
  return new Promise((resolve) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    sock.setTimeout(200);
    sock.once('connect', () => { sock.destroy(); resolve(true); });
    sock.once('timeout', () => { sock.destroy(); resolve(false); });
    sock.once('error', () => { sock.destroy(); resolve(false); });
  });
}

export class Hub {
  /* opts.args: extra flags; opts.threads (default 2); opts.testEndpoints (default true). */
  constructor(opts = {}) {
    this.args = opts.args || [];
    this.threads = opts.threads ?? 2;
    this.testEndpoints = opts.testEndpoints ?? true;
    this.tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chorus-node-'));
    this.dataDir = path.join(this.tmp, 'data');
    this.port = null;
    this.proc = null;
    this.exit = null; /* promise of {code, signal} */
    this.out = [];
  }

  url(p = '/') { return `http://127.0.0.1:${this.port}${p}`; }

  /** An admin token minted with `chorus token` on this hub's data directory. */
  adminToken() {
    if (!this._admin) {
      this._admin = execFileSync(CHORUS_BIN, ['token', '--user', 'admin', '--device', 'node-tests',
        '--scopes', 'admin', '--ttl', '3600', '--data-dir', this.dataDir]).toString().trim();
    }
    return this._admin;
  }

  /** GET /metrics (admin credential) as text. */
  async metrics() {
    const r = await fetch(this.url('/metrics'), { headers: { Authorization: `Bearer ${this.adminToken()}` } });
    assert.equal(r.status, 200, `GET /metrics answered ${r.status}`);
    return r.text();
  }
  wsUrl(p) { return `ws://127.0.0.1:${this.port}${p}`; }
  logs() { return Buffer.concat(this.out).toString('utf8'); }

  async start(timeoutMs = 10000) {
    for (let attempt = 0; attempt < 5; attempt++) {
      this.port = await freePort();
      const args = ['serve', '--listen', `127.0.0.1:${this.port}`, '--data-dir', this.dataDir,
        '--threads', String(this.threads),
        '--log-level', process.env.CHORUS_TEST_DEBUG ? 'debug' : 'info'];
      if (this.testEndpoints) args.push('--test-endpoints');
      args.push(...this.args);
      this.out.push(Buffer.from(`$ ${CHORUS_BIN} ${args.join(' ')}\n`));
      const p = spawn(CHORUS_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
      this.proc = p;
      live.add(p);
      p.stdout.on('data', (d) => this.out.push(d));
      p.stderr.on('data', (d) => this.out.push(d));
      this.exit = new Promise((resolve) => {
        p.once('error', (err) => { this.out.push(Buffer.from(`spawn error: ${err.message}\n`)); });
        p.once('close', (code, signal) => { live.delete(p); resolve({ code, signal }); });
      });
      let exited = false;
      this.exit.then(() => { exited = true; });
      const deadline = Date.now() + timeoutMs;
      while (Date.now() < deadline && !exited) {
        if (await canConnect(this.port)) return this;
        await sleep(20);
      }
      await this.stop();
    }
    throw new Error(`chorus did not start on 127.0.0.1 after 5 attempts (${CHORUS_BIN})`);
  }

  /* Send sig and wait for the exit; SIGKILL after timeoutMs. Returns the exit
   * code, or a string like 'signal SIGKILL' when the process died of a signal. */
  async stop(sig = 'SIGTERM', timeoutMs = 10000) {
    if (this.proc === null) return null;
    const p = this.proc;
    if (p.exitCode === null && p.signalCode === null) p.kill(sig);
    let res;
    try {
      res = await within(this.exit, timeoutMs, `chorus to exit after ${sig}`);
    } catch {
      this.out.push(Buffer.from(`(test harness: no exit ${timeoutMs} ms after ${sig}; SIGKILL)\n`));
      p.kill('SIGKILL');
      res = await this.exit;
    }
    this.proc = null;
    return res.code !== null ? res.code : `signal ${res.signal}`;
  }

  cleanup() {
    fs.rmSync(this.tmp, { recursive: true, force: true });
  }
}

function withLogs(err, hub, header) {
  const text = `\n---- ${header} ----\n${hub.logs()}---- end of chorus log ----`;
  if (err instanceof Error) {
    try { err.message += text; } catch { /* read-only message: keep the error as is */ }
    return err;
  }
  return new Error(String(err) + text);
}

/* Run body(hub) against a fresh hub; stop it with SIGTERM and assert a clean exit. */
export async function withHub(opts, body) {
  if (typeof opts === 'function') { body = opts; opts = {}; }
  const hub = new Hub(opts);
  let failure = null;
  try {
    await hub.start();
    await body(hub);
  } catch (err) {
    failure = err;
  }
  const rc = await hub.stop();
  hub.cleanup();
  if (failure) throw withLogs(failure, hub, `chorus log (exit ${rc})`);
  if (rc !== 0) {
    throw withLogs(new assert.AssertionError({
      message: `chorus did not exit cleanly after SIGTERM (rc=${rc})`, actual: rc, expected: 0,
      operator: 'strictEqual',
    }), hub, 'chorus log');
  }
}

/*
 * A ws client with a message queue. Default perMessageDeflate is OFF here
 * (ws turns it on by default for clients); pass it explicitly to negotiate.
 * Each message is {data: Buffer, binary: boolean}.
 */
export class Client {
  constructor(url, protocols, options) {
    if (protocols !== undefined && !Array.isArray(protocols) && typeof protocols === 'object') {
      options = protocols;
      protocols = undefined;
    }
    options = { perMessageDeflate: false, ...(options || {}) };
    this.ws = protocols === undefined ? new WebSocket(url, options) : new WebSocket(url, protocols, options);
    this.queue = [];
    this.waiters = [];
    this.upgradeHeaders = null;
    this.error = null;
    this.ws.on('upgrade', (res) => { this.upgradeHeaders = res.headers; });
    this.ws.on('message', (data, isBinary) => {
      const m = { data: Buffer.isBuffer(data) ? data : Buffer.concat(data), binary: isBinary };
      const w = this.waiters.shift();
      if (w) w.resolve(m); else this.queue.push(m);
    });
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', () => resolve(this));
      this.ws.once('unexpected-response', (req, res) => {
        reject(new Error(`unexpected HTTP ${res.statusCode} to the upgrade of ${url}`));
        req.destroy();
      });
      this.ws.once('error', reject);
    });
    this.opened.catch(() => {}); /* observed later by whoever awaits it */
    this.ws.on('error', (err) => { this.error = err; });
    this.closed = new Promise((resolve) => {
      this.ws.once('close', (code, reason) => {
        for (const w of this.waiters.splice(0)) {
          w.reject(new Error(`connection closed (${code} ${reason}) while waiting for a message`));
        }
        resolve({ code, reason: reason.toString('utf8') });
      });
    });
  }

  /* Open a client and wait for the handshake. */
  static async open(url, protocols, options, ms = 10000) {
    const c = new Client(url, protocols, options);
    await within(c.opened, ms, `the WebSocket handshake with ${url}`);
    return c;
  }

  send(data, opts = {}) {
    return new Promise((resolve, reject) => {
      this.ws.send(data, opts, (err) => (err ? reject(err) : resolve()));
    });
  }

  next(ms = 10000) {
    if (this.queue.length) return Promise.resolve(this.queue.shift());
    if (this.ws.readyState === WebSocket.CLOSED) {
      return Promise.reject(new Error('connection already closed while waiting for a message'));
    }
    return new Promise((resolve, reject) => {
      const w = {
        resolve: (m) => { clearTimeout(w.timer); resolve(m); },
        reject: (e) => { clearTimeout(w.timer); reject(e); },
      };
      w.timer = setTimeout(() => {
        /* Drop the waiter so a late message is queued, not swallowed. */
        this.waiters = this.waiters.filter((x) => x !== w);
        reject(new Error(`timed out after ${ms} ms waiting for a message`));
      }, ms);
      this.waiters.push(w);
    });
  }

  async take(n, ms = 20000) {
    const out = [];
    const deadline = Date.now() + ms;
    while (out.length < n) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out with ${out.length}/${n} messages received`);
      out.push(await this.next(left));
    }
    return out;
  }

  waitClosed(ms = 10000) {
    return within(this.closed, ms, 'the connection to close');
  }

  close(code, reason) { this.ws.close(code, reason); }
  terminate() { this.ws.terminate(); }
}
