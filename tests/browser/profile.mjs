// Where a browser put and get spend their time: the CPU profile of each worker of the page
// (self time by function, wasm functions by name) and the CPU time of every Chromium process
// and of the relay, for one put and one get of a file of random bytes through a local relay.
// A diagnostic, not a test: it asserts nothing. Profiles are also written to
// /tmp/shardweb-profile-<put|get>-<worker>.cpuprofile (open them in Chromium's DevTools).
//
//   cargo build --release -p shardweb && ./scripts/build-web
//   node tests/browser/profile.mjs [--mib 256] [--keep] [--local] [--no-resumable] [--libp2p] [--top 30] [--cpu-only]
//
// --libp2p: the put and the get take every shard over libp2p (`shardsOverHttp: false`) instead
// of over the relay's HTTP. --no-resumable: the put keeps no copy of the file (`resumable:
// false`). --local: the put keeps the file in the writer's browser only (`local: true`: no
// shard goes to the relay), and the get reads it from there through the relay circuit.
// --cpu-only: only the CPU time of each process and thread, without the sampling profiler
// (which slows the workers it samples).

import { spawn, spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import { ROOT, WWW, devtools, freePort, startRelay } from './lib.mjs';

// The DevTools protocol needs a WebSocket client: node 20 has one behind a flag.
if (typeof WebSocket === 'undefined') {
  const run = spawnSync(process.execPath, ['--experimental-websocket', ...process.argv.slice(1)], { stdio: 'inherit' });
  process.exit(run.status ?? 1);
}

const { values } = parseArgs({
  options: {
    mib: { type: 'string', default: '256' },
    keep: { type: 'boolean', default: false },
    'no-resumable': { type: 'boolean', default: false },
    local: { type: 'boolean', default: false },
    'segment-kib': { type: 'string', default: '' },
    libp2p: { type: 'boolean', default: false },
    top: { type: 'string', default: '30' },
    'cpu-only': { type: 'boolean', default: false },
  },
});
process.env.SHARDWEB_BIN ??= join(ROOT, 'target/release/shardweb');
process.env.SHARDWEB_LOG ??= 'warn';

const cleanups = [];
const dir = mkdtempSync(join(tmpdir(), 'shardweb-profile-'));
cleanups.push(() => rmSync(dir, { recursive: true, force: true, maxRetries: 5 }));

/** The Chromium and relay processes, by pid: their kind (renderer, network service, …). */
function processes() {
  const found = {};
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    let cmd;
    try {
      cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    } catch {
      continue;
    }
    if (cmd.includes(`${dir}/relay-`)) found[pid] = 'relay';
    else if (cmd.includes(`--user-data-dir=${dir}`)) {
      const type = cmd.match(/--type=([a-z-]+)/)?.[1] ?? 'browser';
      const sub = cmd.match(/--utility-sub-type=([a-zA-Z.]+)/)?.[1];
      found[pid] = sub ? `${type} (${sub})` : type;
    }
  }
  return found;
}

/** User plus system CPU time of a process (or of one thread: `pid/task/tid`), in clock ticks. */
function cpuTicks(pid) {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    return 0;
  }
}

/** The threads of the Chromium processes of kind `kind`, as `pid/task/tid`: their names. */
function threads(kind) {
  const found = {};
  for (const [pid, name] of Object.entries(processes()).filter(([, name]) => name === kind)) {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        found[`${pid}/task/${tid}`] = readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim();
      } catch {
        // The thread ended.
      }
    }
  }
  return found;
}

/** Profiles the workers of the page on demand, over the DevTools protocol. */
async function profiler(port) {
  const { send, workers, close } = await devtools(port, 'profile.html');
  return {
    async start() {
      if (values['cpu-only']) return;
      for (const worker of workers) {
        await send('Profiler.enable', {}, worker);
        await send('Profiler.setSamplingInterval', { interval: 200 }, worker);
        await send('Profiler.start', {}, worker);
      }
    },
    /** Stops profiling; prints each worker's functions by self time. */
    async stop(what) {
      if (values['cpu-only']) return;
      for (const worker of workers) {
        const { profile } = await send('Profiler.stop', {}, worker);
        if (!profile) continue;
        const file = join(tmpdir(), `shardweb-profile-${what}-${worker.slice(0, 8)}.cpuprofile`);
        writeFileSync(file, JSON.stringify(profile));
        const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
        const self = new Map();
        let total = 0;
        profile.samples.forEach((sample, i) => {
          const { functionName, url, lineNumber } = nodes.get(sample).callFrame;
          const name = functionName || `(anonymous) ${url.split('/').pop()}:${lineNumber + 1}`;
          const dt = profile.timeDeltas[i] ?? 0;
          self.set(name, (self.get(name) ?? 0) + dt);
          total += dt;
        });
        console.log(`  worker ${worker.slice(0, 8)}: ${(total / 1e3).toFixed(0)} ms sampled, ${file}`);
        for (const [name, us] of [...self].sort((a, b) => b[1] - a[1]).slice(0, Number(values.top))) {
          console.log(`    ${((100 * us) / total).toFixed(1).padStart(5)}%  ${name.slice(0, 100)}`);
        }
      }
    },
    close,
  };
}

async function main() {
  const www = join(dir, 'www');
  cpSync(WWW, www, { recursive: true });
  cpSync(join(ROOT, 'tests/browser/bench'), join(www, 'bench'), { recursive: true });
  const relay = await startRelay({ after: (f) => cleanups.push(f) }, dir, { www });
  let tools;
  let before = {};
  let finish;
  const finished = new Promise((resolve, reject) => (finish = { resolve, reject }));
  const server = createServer((req, res) => {
    res.setHeader('Access-Control-Allow-Origin', '*');
    res.setHeader('Access-Control-Allow-Headers', '*');
    if (req.method === 'OPTIONS') return res.end();
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', async () => {
      const { kind, value } = JSON.parse(body);
      if (kind === 'start') {
        const ids = [...Object.keys(processes()), ...Object.keys(threads('renderer')), ...Object.keys(threads('browser'))];
        before = Object.fromEntries(ids.map((pid) => [pid, cpuTicks(pid)]));
        await tools.start();
      } else if (kind === 'stop') {
        const used = {};
        for (const [pid, name] of Object.entries(processes())) {
          used[name] = (used[name] ?? 0) + cpuTicks(pid) - (before[pid] ?? 0);
        }
        const cpu = Object.entries(used)
          .filter(([, ticks]) => ticks > 0)
          .map(([name, ticks]) => `${name} ${(ticks / 100).toFixed(2)} s`)
          .join(', ');
        console.log(`\n${value.what}: ${value.mbps.toFixed(1)} MB/s; CPU: ${cpu}`);
        for (const kind of ['renderer', 'browser']) {
          const busy = Object.entries(threads(kind))
            .map(([id, name]) => [name, cpuTicks(id) - (before[id] ?? 0)])
            .filter(([, ticks]) => ticks >= 5)
            .sort((a, b) => b[1] - a[1])
            .map(([name, ticks]) => `${name} ${(ticks / 100).toFixed(2)} s`);
          console.log(`  ${kind} threads: ${busy.join(', ')}`);
        }
        await tools.stop(value.what);
      } else if (kind === 'error') {
        finish.reject(new Error(value));
      } else if (kind === 'done') {
        finish.resolve();
      }
      res.end();
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => server.close());
  const sink = `http://127.0.0.1:${server.address().port}`;
  const port = await freePort();
  const page = `${relay.url}/bench/profile.html?sink=${encodeURIComponent(sink)}&mib=${values.mib}&keep=${values.keep ? 1 : 0}&http=${values.libp2p ? 0 : 1}&resumable=${values['no-resumable'] ? 0 : 1}&segment=${values['segment-kib']}&local=${values.local ? 1 : 0}`;
  const chromium = spawn(
    process.env.CHROMIUM ?? '/usr/bin/chromium',
    [
      '--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      `--user-data-dir=${dir}/chromium`, `--remote-debugging-port=${port}`, page,
    ],
    // A process group of its own, so that its helper processes go with it and stop writing
    // into the profile directory before that is removed.
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
  tools = await profiler(port);
  cleanups.push(() => tools.close());
  const timeout = setTimeout(() => finish.reject(new Error('the profile did not finish in 10 minutes')), 10 * 60_000);
  await finished;
  clearTimeout(timeout);
}

main()
  .catch((e) => {
    console.error(`profile failed: ${e.message}`);
    process.exitCode = 1;
  })
  .finally(async () => {
    for (const f of cleanups.reverse()) await f();
  });
