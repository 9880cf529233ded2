// Shared pieces of the browser tests: real relay processes on loopback serving the page, the
// native CLI, headless Chromium through Playwright, and files of random bytes.

import { spawn } from 'node:child_process';
import { createHash, randomFillSync } from 'node:crypto';
import { cpSync, createReadStream, mkdirSync, mkdtempSync, openSync, closeSync, rmSync, writeSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
/**
 * The `shardweb` binary: the one `cargo test` builds, unless SHARDWEB_BIN names another. Read
 * each time a process is spawned, so that a script may set SHARDWEB_BIN after importing this
 * module (imports run first).
 */
export function bin() {
  return process.env.SHARDWEB_BIN ?? join(ROOT, 'target/debug/shardweb');
}
/** The built page (scripts/build-web). */
export const WWW = join(ROOT, 'www/dist');

const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-dev-shm-usage',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];

/** A fresh temporary directory, removed when the test ends unless SHARDWEB_KEEP_TEMP is set. */
export function tempDir(t) {
  const dir = mkdtempSync(join(tmpdir(), 'shardweb-browser-'));
  writers.set(dir, []);
  // A test's hooks run in the order they were added, this one before those of the relays
  // started in the directory: so it stops them itself, and waits for them to exit, before
  // removing what they wrote.
  t.after(async () => {
    await Promise.all(writers.get(dir).map((stop) => stop()));
    writers.delete(dir);
    if (process.env.SHARDWEB_KEEP_TEMP) t.diagnostic(`keeping ${dir}`);
    else rmSync(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 });
  });
  return dir;
}

/** The processes writing under each temporary directory: how to stop each and see it exit. */
const writers = new Map();

/** The page plus the test harness page, as a relay's `--www` directory. */
export function wwwWithHarness(dir) {
  const www = join(dir, 'www');
  cpSync(WWW, www, { recursive: true });
  cpSync(join(ROOT, 'tests/browser/harness.html'), join(www, 'harness.html'));
  return www;
}

/** A TCP port free on loopback now. */
export function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
    server.on('error', reject);
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Waits until `check()` is truthy, polling, for at most `ms`. */
export async function until(what, check, ms = 30_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

/** A `shardweb relay` process on loopback with free ports, stopped when the test ends. */
export async function startRelay(t, dir, { www = WWW, args = [], port: given } = {}) {
  // A port given (a relay's that was killed) starts it again on its data.
  const port = given ?? (await freePort());
  const data = join(dir, `relay-${port}`);
  mkdirSync(data, { recursive: true });
  const log = openSync(`${data}.log`, given ? 'a' : 'w');
  const child = spawn(
    bin(),
    [
      'relay', '--data-dir', data, '--http', `127.0.0.1:${port}`, '--www', www,
      '--listen', '/ip4/127.0.0.1/tcp/0', '--listen', '/ip4/127.0.0.1/tcp/0/ws',
      '--listen', '/ip4/127.0.0.1/udp/0/webrtc-direct',
      ...args,
    ],
    { stdio: ['ignore', 'ignore', log], env: { ...process.env, SHARDWEB_LOG: process.env.SHARDWEB_LOG ?? 'info' } },
  );
  closeSync(log);
  const exited = new Promise((resolve) => child.once('exit', resolve));
  const relay = {
    url: `http://127.0.0.1:${port}`,
    port,
    log: `${data}.log`,
    async info() {
      try {
        const response = await fetch(`${this.url}/api/info`);
        return response.ok ? await response.json() : null;
      } catch {
        return null;
      }
    },
    async metric(name) {
      const text = await (await fetch(`${this.url}/metrics`)).text();
      const line = text.split('\n').find((l) => l.startsWith(name) && !l.startsWith('#'));
      return line === undefined ? null : Number(line.split(' ').pop());
    },
    /** Sends it a signal (`SIGSTOP` and `SIGCONT` freeze and thaw it). */
    signal(name) {
      child.kill(name);
    },
    /** Kills it; resolves once it has exited. */
    kill() {
      child.kill('SIGKILL');
      return exited;
    },
  };
  writers.get(dir)?.push(() => {
    relay.kill();
    return exited;
  });
  t.after(() => relay.kill());
  await until(`the relay on port ${port} (see ${relay.log})`, async () => (await relay.info())?.addrs?.length >= 3);
  return relay;
}

/** Headless Chromium, closed when the test ends. */
export async function launch(t) {
  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', args: CHROMIUM_ARGS });
  t.after(() => browser.close());
  return browser;
}

/**
 * A page in a browser context of its own (its own storage), with its console errors kept in
 * `page.errors` for the assertions' messages.
 */
export async function openPage(browser, url) {
  const context = await browser.newContext({ acceptDownloads: true });
  const page = await context.newPage();
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(String(e)));
  page.on('console', (m) => m.type() === 'error' && page.errors.push(m.text()));
  await page.goto(url);
  return page;
}

/** The text of the page's status line, once it matches `pattern`. */
export async function status(page, pattern, timeout = 60_000) {
  const line = page.getByTestId('status');
  await line.filter({ hasText: pattern }).waitFor({ timeout });
  return (await line.textContent()).trim();
}

/** A file of `size` random bytes; returns its SHA-256. */
export function randomFile(path, size) {
  const fd = openSync(path, 'w');
  const chunk = Buffer.alloc(1 << 20);
  const hash = createHash('sha256');
  for (let left = size; left > 0; ) {
    const n = Math.min(left, chunk.length);
    randomFillSync(chunk, 0, n);
    writeSync(fd, chunk, 0, n);
    hash.update(chunk.subarray(0, n));
    left -= n;
  }
  closeSync(fd);
  return hash.digest('hex');
}

/** The SHA-256 of a file, streamed. */
export function sha256File(path) {
  return new Promise((resolveHash, reject) => {
    const hash = createHash('sha256');
    createReadStream(path)
      .on('data', (d) => hash.update(d))
      .on('end', () => resolveHash(hash.digest('hex')))
      .on('error', reject);
  });
}

/** Runs the native CLI; resolves to `{ code, stdout, stderr }`, killing it after `timeout`. */
export function shardweb(args, { cwd = ROOT, timeout = 120_000 } = {}) {
  return new Promise((resolveRun) => {
    const child = spawn(bin(), args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeout);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolveRun({ code, stdout, stderr });
    });
  });
}

/**
 * Uploads `file` with the native CLI to `relays` (one or several relays from `startRelay`),
 * with extra `flags`; resolves to its `shardweb:` link, failing with the CLI's stderr.
 */
export async function cliPut(relays, file, flags = []) {
  const urls = [relays].flat().map((r) => r.url).join(',');
  const put = await shardweb(['put', file, '--relay', urls, ...flags]);
  if (put.code !== 0) throw new Error(`shardweb put exited with ${put.code}: ${put.stderr}`);
  return put.stdout.trim();
}

/** The page's link (`<relay>/#<manifest id>.<key>`) for a `shardweb:` link. */
export function pageLink(relay, link) {
  return link.replace(/^shardweb:/, `${relay.url}/#`);
}

/**
 * A DevTools protocol client for the Chromium listening on `port`, attached to its page whose
 * URL contains `page`, following that page's workers (their session ids in `workers`).
 */
export async function devtools(port, page) {
  const version = await until('DevTools', async () => {
    try {
      return await (await fetch(`http://127.0.0.1:${port}/json/version`)).json();
    } catch {
      return null;
    }
  });
  const ws = new WebSocket(version.webSocketDebuggerUrl);
  await new Promise((r) => ws.addEventListener('open', r, { once: true }));
  let id = 0;
  const waiting = new Map();
  const workers = new Set();
  const send = (method, params = {}, sessionId) =>
    new Promise((resolve) => {
      id += 1;
      waiting.set(id, resolve);
      ws.send(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }));
    });
  ws.addEventListener('message', ({ data }) => {
    const message = JSON.parse(data);
    if (message.id && waiting.has(message.id)) {
      waiting.get(message.id)(message.result ?? {});
      waiting.delete(message.id);
    } else if (message.method === 'Target.attachedToTarget' && message.params.targetInfo.type === 'worker') {
      workers.add(message.params.sessionId);
    } else if (message.method === 'Target.detachedFromTarget') {
      workers.delete(message.params.sessionId);
    }
  });
  const target = await until(`the page ${page}`, async () =>
    (await send('Target.getTargets')).targetInfos?.find((t) => t.type === 'page' && t.url.includes(page)),
  );
  const { sessionId } = await send('Target.attachToTarget', { targetId: target.targetId, flatten: true });
  await send('Target.setAutoAttach', { autoAttach: true, waitForDebuggerOnStart: false, flatten: true }, sessionId);
  return { send, workers, close: () => ws.close() };
}
