// The browser benchmark: the codec in Chromium beside the native one, upload and download of
// a file through a local relay beside a plain fetch POST and GET of the same bytes to this
// machine, the floors under a put's and a get's speed here (the work each cannot avoid, alone:
// see `floors` in bench/bench.html), and the worker's peak memory while a large file goes up.
// Every browser figure is measured in one run of one Chromium, launched directly (not through
// Playwright, which slows large fetch uploads many times over).
//
//   cargo build --release -p shardweb && ./scripts/build-web
//   node tests/browser/bench.mjs [--mib 256] [--memory-mib 1024] [--rounds 3] [--no-native]

import { spawn, spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import { WebSocketServer } from 'ws';

import { ROOT, WWW, devtools, freePort, startRelay } from './lib.mjs';

// The worker's JS heap is read over the DevTools protocol, which needs a WebSocket client:
// node 20 has one behind a flag.
if (typeof WebSocket === 'undefined') {
  const run = spawnSync(process.execPath, ['--experimental-websocket', ...process.argv.slice(1)], { stdio: 'inherit' });
  process.exit(run.status ?? 1);
}

const { values } = parseArgs({
  options: {
    mib: { type: 'string', default: '256' },
    'memory-mib': { type: 'string', default: '1024' },
    'no-native': { type: 'boolean', default: false },
    rounds: { type: 'string', default: '3' },
  },
});
process.env.SHARDWEB_BIN ??= join(ROOT, 'target/release/shardweb');
process.env.SHARDWEB_LOG ??= 'warn';

const cleanups = [];
const t = { after: (f) => cleanups.push(f) };
const dir = mkdtempSync(join(tmpdir(), 'shardweb-bench-'));
cleanups.push(() => rmSync(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 200 }));

function cors(res) {
  res.setHeader('Access-Control-Allow-Origin', '*');
  res.setHeader('Access-Control-Allow-Headers', '*');
}

/** The baseline endpoint (a sink for uploads, a source for downloads) and the results inbox. */
function sinkServer(onResult) {
  const server = createServer((req, res) => {
    cors(res);
    const url = new URL(req.url, 'http://x');
    if (req.method === 'OPTIONS') return res.end();
    if (url.pathname === '/sink') {
      let n = 0;
      req.on('data', (d) => (n += d.length));
      req.on('end', () => res.end(String(n)));
    } else if (url.pathname === '/source') {
      let left = Number(url.searchParams.get('bytes'));
      const chunk = Buffer.alloc(1 << 20, 7);
      res.setHeader('Content-Length', String(left));
      const pump = () => {
        while (left > 0) {
          const n = Math.min(left, chunk.length);
          left -= n;
          if (!res.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return res.once('drain', pump);
        }
        res.end();
      };
      pump();
    } else if (url.pathname === '/result') {
      let body = '';
      req.on('data', (d) => (body += d));
      req.on('end', () => {
        res.end();
        onResult(JSON.parse(body));
      });
    } else {
      res.statusCode = 404;
      res.end();
    }
  });
  // A WebSocket baseline: what the browser moves over a bare WebSocket, in 64 KiB messages.
  const sockets = new WebSocketServer({ server });
  sockets.on('connection', (ws, req) => {
    const url = new URL(req.url, 'http://x');
    const bytes = Number(url.searchParams.get('bytes'));
    if (url.pathname === '/ws-sink') {
      let n = 0;
      ws.on('message', (d) => {
        n += d.length;
        if (n >= bytes) ws.send('done');
      });
    } else {
      const chunk = Buffer.alloc(64 << 10, 7);
      let left = bytes;
      const pump = () => {
        while (left > 0) {
          ws.send(left >= chunk.length ? chunk : chunk.subarray(0, left));
          left -= chunk.length;
          if (ws.bufferedAmount > 8 << 20) return setTimeout(pump, 1);
        }
      };
      pump();
    }
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

/**
 * Follows the JS heap of every worker of the page over the DevTools protocol; `peak(from, to)`
 * is the largest heap sampled between two times.
 */
async function heapMonitor(port) {
  const { send, workers, close } = await devtools(port, 'bench.html');
  const samples = [];
  // A worker that ends between two samples never answers: each sample waits 500 ms at most.
  const timer = setInterval(async () => {
    for (const worker of workers) {
      const late = new Promise((resolve) => setTimeout(() => resolve({}), 500));
      const { usedSize, backingStorageSize } = await Promise.race([send('Runtime.getHeapUsage', {}, worker), late]);
      if (usedSize !== undefined) samples.push([Date.now(), usedSize, backingStorageSize ?? null]);
    }
  }, 100);
  return {
    /** The largest heap sampled between two times, or null if none was. */
    peak: (from, to) => {
      const within = samples.filter(([t]) => t >= from && t <= to).map(([, s]) => s);
      return within.length ? Math.max(...within) : null;
    },
    /**
     * The largest JS heap plus array buffer memory (wasm memory among it) of one worker
     * sampled between two times, or null if the browser does not report the latter.
     */
    peakWithBuffers: (from, to) => {
      const within = samples.filter(([t, , b]) => t >= from && t <= to && b !== null).map(([, s, b]) => s + b);
      return within.length ? Math.max(...within) : null;
    },
    close() {
      clearInterval(timer);
      close();
    },
  };
}

const fmt = (n) => (n === null || n === undefined ? 'n/a' : n.toFixed(0).padStart(6));
const mib = (n) => (n === null || n === undefined ? 'n/a' : `${(n / 2 ** 20).toFixed(1)} MiB`);

async function main() {
  if (!values['no-native']) {
    console.log('native codec (cargo bench -p shardweb-core):');
    spawnSync('cargo', ['bench', '-p', 'shardweb-core', '--bench', 'codec'], { cwd: ROOT, stdio: 'inherit' });
  }
  const www = join(dir, 'www');
  cpSync(WWW, www, { recursive: true });
  cpSync(join(ROOT, 'tests/browser/bench'), join(www, 'bench'), { recursive: true });
  // Every round uploads new shards: no storage limit of the relay's may cut the bench short.
  const unlimited = String(2 ** 40);
  const relay = await startRelay(t, dir, { www, args: ['--max-storage', unlimited, '--max-storage-per-peer', unlimited] });

  let finish;
  let memoryStart = 0;
  let monitor;
  const finished = new Promise((resolve, reject) => (finish = { resolve, reject }));
  const server = await sinkServer(({ kind, value }) => {
    if (kind === 'codec') {
      console.log('\nbrowser codec (Chromium, wasm simd128, one worker), MB/s of plaintext:');
      for (const [params, stages] of Object.entries(value)) {
        console.log(`  ${params}`);
        for (const [stage, rate] of Object.entries(stages)) console.log(`    ${stage.padEnd(40)} ${fmt(rate)} MB/s`);
      }
    } else if (kind === 'transfer') {
      const { baseline: b, shardweb: s, shardwebNoKeep: n } = value;
      console.log(`\ntransfer of ${value.mib} MiB to a local relay, MB/s (plaintext bytes / wall time; median of ${value.rounds} runs; the WebSocket and libp2p lines, one run):`);
      console.log(`  plain fetch POST / GET to this machine      ${fmt(b.upload)} / ${fmt(b.download)}`);
      console.log(`  bare WebSocket up / down, 64 KiB messages   ${fmt(b.wsUpload)} / ${fmt(b.wsDownload)}`);
      console.log(`  shardweb put / get (4, 2), keeping shards   ${fmt(s.upload)} / ${fmt(s.download)}   (${((100 * s.upload) / b.upload).toFixed(0)}% / ${((100 * s.download) / b.download).toFixed(0)}% of the baseline)`);
      console.log(`  shardweb put / get (4, 2), keep: false      ${fmt(n.upload)} / ${fmt(n.download)}   (${((100 * n.upload) / b.upload).toFixed(0)}% / ${((100 * n.download) / b.download).toFixed(0)}% of the baseline)`);
      console.log(`  shardweb put, keep: false, resumable: false ${fmt(value.noCopy)}          (${((100 * value.noCopy) / b.upload).toFixed(0)}%: no copy of the file kept to resume from)`);
      console.log(`  the same with every shard over libp2p (shardsOverHttp: false):`);
      console.log(`    put / get, keeping shards                  ${fmt(s.uploadLibp2p)} / ${fmt(s.downloadLibp2p)}`);
      console.log(`    put / get, keep: false                     ${fmt(n.uploadLibp2p)} / ${fmt(n.downloadLibp2p)}`);
    } else if (kind === 'floors') {
      const { put, get, baseline: b } = value;
      const share = (n, of) => `${((100 * n) / of).toFixed(0)}% of the baseline's`;
      console.log(`\nthe floors under a put and a get of ${value.mib} MiB at (4, 2) on this machine: the work each cannot avoid, alone, MB/s of the file:`);
      console.log(`  seal + code + hash in a worker, as the node     ${fmt(put.work)}`);
      console.log(`  a fetch POST of the shards' bytes (1.5 times)   ${fmt(put.move)}   (6 MiB bodies, 3 at a time)`);
      console.log(`  both at once: the put's floor                   ${fmt(put.together)}   (${share(put.together, b.upload)} POST; no file read, no relay storing, no copy to resume from)`);
      console.log(`  verify + decode + open in a worker, as the node ${fmt(get.work)}`);
      console.log(`  fetch GETs of as many bytes                     ${fmt(get.move)}   (4 MiB replies, 4 at a time)`);
      console.log(`  both at once: the get's floor                   ${fmt(get.together)}   (${share(get.together, b.download)} GET; no relay reading, no stream out)`);
    } else if (kind === 'memory-start') {
      memoryStart = Date.now();
    } else if (kind === 'memory') {
      const heap = monitor?.peak(memoryStart, Date.now()) ?? null;
      console.log(`\nworker memory while ${value.mib} MiB goes up (${fmt(value.mbps)} MB/s, sampled every 200 ms):`);
      const together = heap === null ? 'n/a (no heap sample)' : mib(value.wasm + heap);
      console.log(`  peak wasm linear memory ${mib(value.wasm)}, peak JS heap ${mib(heap)}, together at most ${together}`);
      const all = monitor?.peakWithBuffers(memoryStart, Date.now()) ?? null;
      console.log(`  peak JS heap and array buffers of one worker (its wasm memory among them) ${mib(all)}`);
    } else if (kind === 'error') {
      finish.reject(new Error(value));
    } else if (kind === 'done') {
      finish.resolve();
    }
  });
  cleanups.push(() => server.close());
  const sink = `http://127.0.0.1:${server.address().port}`;
  const page = `${relay.url}/bench/bench.html?sink=${encodeURIComponent(sink)}&mib=${values.mib}&memoryMib=${values['memory-mib']}&rounds=${values.rounds}`;
  const devtoolsPort = await freePort();
  const chromium = spawn(
    process.env.CHROMIUM ?? '/usr/bin/chromium',
    [
      '--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--enable-precise-memory-info', `--user-data-dir=${join(dir, 'chromium')}`, `--remote-debugging-port=${devtoolsPort}`, page,
    ],
    // A process group of its own, so that its renderer, network and utility processes stop
    // with it instead of writing into the profile while it is being removed.
    { stdio: 'ignore', detached: true },
  );
  const exited = new Promise((resolve) => chromium.once('exit', resolve));
  cleanups.push(async () => {
    try {
      process.kill(-chromium.pid, 'SIGKILL');
    } catch {
      chromium.kill('SIGKILL');
    }
    await exited;
  });
  monitor = await heapMonitor(devtoolsPort);
  cleanups.push(() => monitor.close());
  const timeout = setTimeout(() => finish.reject(new Error('the benchmark did not finish in 20 minutes')), 20 * 60_000);
  await finished;
  clearTimeout(timeout);
}

// Interrupted, it still stops Chromium (in a process group of its own, out of reach of the
// terminal's signal) and removes its files.
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, async () => {
    for (const f of cleanups.splice(0).reverse()) await f();
    process.exit(130);
  });
}

main()
  .catch((e) => {
    console.error(`benchmark failed: ${e.message}`);
    process.exitCode = 1;
  })
  .finally(async () => {
    for (const f of cleanups.splice(0).reverse()) await f();
  });
