// The browser node against real relay processes: files cross between the native CLI and the
// browser both ways (shards put and fetched over HTTP, and over libp2p when HTTP fails), relay sockets and
// AES-GCM run in helper workers (and on the node's worker where a policy forbids those), a
// download carries on when one of its relays is killed (asking the DHT for another holder when
// the rest run short), a browser serves a file only it holds to another through the relay's
// circuit, a reload resumes an upload, a full store fails cleanly, and a running upload is
// stopped by its signal, not cancelled under its feet.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { extname, join, normalize } from 'node:path';
import { test } from 'node:test';

import {
  cliPut,
  launch,
  openPage,
  randomFile,
  sha256File,
  shardweb,
  startRelay,
  status,
  tempDir,
  until,
  wwwWithHarness,
} from './lib.mjs';

/** A harness page with a started node in `window.node`. */
async function harness(browser, relay, options = {}) {
  const page = await openPage(browser, `${relay.url}/harness.html`);
  await page.waitForFunction(() => window.ready === true);
  await page.evaluate(async (opts) => {
    window.node = await window.shardweb.Node.start({ relays: [opts.url], ...opts.options });
  }, { url: relay.url, options });
  return page;
}

/** Puts the file at `path` through the harness page's node; resolves to the result. */
async function putFile(page, path, options = {}) {
  await page.locator('#file').setInputFiles(path);
  return page.evaluate(async (opts) => {
    const file = document.getElementById('file').files[0];
    try {
      return await window.node.put(file, opts);
    } catch (e) {
      return { error: { code: e.code, message: e.message, name: e.name } };
    }
  }, options);
}

/** Gets a link through the harness page's node; resolves to the digest of its bytes. */
function getLink(page, link) {
  return page.evaluate(async (l) => {
    try {
      const { stream, name, size } = await window.node.get(l);
      return { name, size, ...(await window.digestStream(stream)) };
    } catch (e) {
      return { error: { code: e.code, message: e.message } };
    }
  }, link);
}

const HTTP_SHARDS_OK = 'shardweb_requests_total{protocol="http_shard",outcome="ok"}';
const LIBP2P_SHARDS_OK = 'shardweb_requests_total{protocol="shard",outcome="ok"}';

test('the native CLI and the browser read each other’s files', async (t) => {
  const dir = tempDir(t);
  const relay = await startRelay(t, dir, { www: wwwWithHarness(dir) });
  const browser = await launch(t);
  const page = await harness(browser, relay);

  const fromCli = join(dir, 'from-cli.bin');
  const cliSha = randomFile(fromCli, 9_000_001);
  const link = await cliPut(relay, fromCli, ['--k', '3', '--m', '2']);
  // The relay takes shards over HTTP, and the CLI put them so.
  const putOverHttp = await relay.metric(HTTP_SHARDS_OK);
  assert.ok(putOverHttp >= 1, 'the CLI put nothing over HTTP');
  assert.equal(await relay.metric(LIBP2P_SHARDS_OK), 0);
  const got = await getLink(page, link);
  assert.deepEqual(got, { name: 'from-cli.bin', size: 9_000_001, sha256: cliSha });
  // The relay serves shards over HTTP, and the browser fetched them so: the three data
  // shards of each of the file's three stripes in one request.
  assert.equal((await relay.metric(HTTP_SHARDS_OK)) - putOverHttp, 3, 'not one batch per stripe over HTTP');

  const fromBrowser = join(dir, 'from-browser.bin');
  const browserSha = randomFile(fromBrowser, 7_654_321);
  const [httpBefore, libp2pBefore] = [await relay.metric(HTTP_SHARDS_OK), await relay.metric(LIBP2P_SHARDS_OK)];
  const result = await putFile(page, fromBrowser);
  assert.ok(result.link?.startsWith('shardweb:'), JSON.stringify(result));
  // Two stripes of six shards, each stripe put by one signed POST; none over libp2p.
  assert.equal((await relay.metric(HTTP_SHARDS_OK)) - httpBefore, 2);
  assert.equal(await relay.metric(LIBP2P_SHARDS_OK), libp2pBefore);
  assert.equal(result.url, `${relay.url}/#${result.link.slice('shardweb:'.length)}`);
  const out = join(dir, 'out.bin');
  const get = await shardweb(['get', result.url, '-o', out, '--relay', relay.url]);
  assert.equal(get.code, 0, get.stderr);
  assert.equal(await sha256File(out), browserSha);
});

test('a browser whose HTTP requests for shards fail, or that is told not to use HTTP, gets and puts them over libp2p', async (t) => {
  const dir = tempDir(t);
  const relay = await startRelay(t, dir, { www: wwwWithHarness(dir) });
  const file = join(dir, 'file.bin');
  const sha = randomFile(file, 5_000_000);
  const link = await cliPut(relay, file, ['--k', '2', '--m', '1', '--no-http']);
  assert.equal(await relay.metric(HTTP_SHARDS_OK), 0);

  const browser = await launch(t);
  const page = await harness(browser, relay);
  let [refused, refusedBatches] = [0, 0];
  await page.context().route('**/api/shards/**', (route) => {
    refused += 1;
    return route.abort('connectionrefused');
  });
  await page.context().route('**/api/shard-batch/**', (route) => {
    refusedBatches += 1;
    return route.abort('connectionrefused');
  });
  // Puts are answered "stored" by something that is not the relay: a reply without the
  // relay's receipt, which the browser must not believe.
  let forged = 0;
  await page.context().route('**/api/shards', (route) => {
    forged += 1;
    return route.fulfill({ status: 200, contentType: 'application/octet-stream', body: Buffer.from([0x81, 0, 1, 0]) });
  });
  const before = await relay.metric(LIBP2P_SHARDS_OK);
  const got = await getLink(page, link);
  assert.deepEqual(got, { name: 'file.bin', size: 5_000_000, sha256: sha });
  // A failed batch is asked again a shard per request, and that failing, over libp2p.
  assert.ok(refusedBatches > 0, 'the browser asked for no batch over HTTP');
  assert.ok(refused > 0, 'the browser asked no single shard over HTTP');
  assert.equal(await relay.metric(HTTP_SHARDS_OK), 0);
  const libp2p = await relay.metric(LIBP2P_SHARDS_OK);
  assert.ok(libp2p > before, 'no shard came over libp2p');

  // Its upload's puts get forged replies over HTTP (those started before the first came back)
  // and go over libp2p, as do the next upload's, which do not try HTTP again.
  const upload = join(dir, 'upload.bin');
  const uploadSha = randomFile(upload, 3_000_000);
  const uploaded = await putFile(page, upload);
  assert.ok(uploaded.link?.startsWith('shardweb:'), JSON.stringify(uploaded));
  assert.ok(forged > 0, 'the upload did not try HTTP');
  const forgedBefore = forged;
  const next = join(dir, 'next.bin');
  randomFile(next, 1_000_000);
  assert.ok((await putFile(page, next)).link?.startsWith('shardweb:'));
  assert.equal(forged, forgedBefore, 'HTTP was asked again after it failed');
  assert.equal(await relay.metric(HTTP_SHARDS_OK), 0);

  // In a context with nothing in the way, a node told not to use HTTP does not.
  const other = await harness(browser, relay, { shardsOverHttp: false });
  const libp2pBefore = await relay.metric(LIBP2P_SHARDS_OK);
  assert.deepEqual(await getLink(other, link), got);
  assert.deepEqual(await getLink(other, uploaded.link), { name: 'upload.bin', size: 3_000_000, sha256: uploadSha });
  assert.equal(await relay.metric(HTTP_SHARDS_OK), 0);
  assert.ok((await relay.metric(LIBP2P_SHARDS_OK)) > libp2pBefore, 'no shard came over libp2p');
});

/**
 * Gets `link` on `page` and kills `relay` once it has sent 8 MB of it, while the download is
 * still going, then runs `afterKill`; resolves to the download's result.
 */
async function getKilling(page, link, relay, afterKill = async () => {}) {
  const before = await relay.metric('shardweb_bytes_out_total');
  let finished = false;
  const getting = getLink(page, link).finally(() => {
    finished = true;
  });
  await until('the download to draw on both relays', async () => (await relay.metric('shardweb_bytes_out_total')) > before + 8_000_000);
  await relay.kill();
  assert.equal(finished, false, 'the download ended before the relay was killed');
  await afterKill();
  return getting;
}

test('a relay killed in the middle of a browser download does not stop it', async (t) => {
  const dir = tempDir(t);
  const a = await startRelay(t, dir);
  const b = await startRelay(t, dir, { www: wwwWithHarness(dir) });
  const size = 120_000_000;
  const file = join(dir, 'both.bin');
  const sha = randomFile(file, size);
  // Four shards a stripe, two on each relay: either relay alone holds enough of every stripe.
  const link = await cliPut([a, b], file, ['--k', '2', '--m', '2']);

  const browser = await launch(t);
  const page = await harness(browser, b, { relays: [a.url, b.url] });
  const got = await getKilling(page, link, a);
  assert.deepEqual(got, { name: 'both.bin', size, sha256: sha });
});

test('a download from a lone relay that is down for 12 s in the middle of it waits for the relay and completes', async (t) => {
  const dir = tempDir(t);
  const www = wwwWithHarness(dir);
  const relay = await startRelay(t, dir, { www });
  const size = 60_000_000;
  const file = join(dir, 'restart.bin');
  const sha = randomFile(file, size);
  const link = await cliPut(relay, file, ['--k', '2', '--m', '1']);
  const browser = await launch(t);
  const page = await harness(browser, relay);
  // Down for 12 s: the browser dials it again after 15.5 s, and the download asks it again
  // for up to 27.75 s.
  const restart = async () => {
    await new Promise((resolve) => setTimeout(resolve, 12_000));
    await startRelay(t, dir, { www, port: relay.port });
  };
  const got = await getKilling(page, link, relay, restart);
  assert.deepEqual(got, { name: 'restart.bin', size, sha256: sha });
});

test('a download left short of shards part way ends its stream with a typed error', async (t) => {
  const dir = tempDir(t);
  const a = await startRelay(t, dir);
  const b = await startRelay(t, dir, { www: wwwWithHarness(dir) });
  const file = join(dir, 'half.bin');
  randomFile(file, 120_000_000);
  // Three shards a stripe on two relays: every other stripe has two of them on the relay
  // that is killed, and no one else holds any.
  const link = await cliPut([a, b], file, ['--k', '2', '--m', '1']);

  const browser = await launch(t);
  const page = await harness(browser, b, { relays: [a.url, b.url] });
  const reading = page.evaluate(async (l) => {
    const { stream } = await window.node.get(l, { keep: false });
    const reader = stream.getReader();
    let bytes = 0;
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return { bytes };
        bytes += value.byteLength;
      }
    } catch (e) {
      return { bytes, error: { code: e.code, name: e.name, typed: e instanceof window.shardweb.ShardwebError } };
    }
  }, link);
  const before = await a.metric('shardweb_bytes_out_total');
  await until('the download to draw on both relays', async () => (await a.metric('shardweb_bytes_out_total')) > before + 8_000_000);
  a.kill();
  const got = await reading;
  assert.ok(got.bytes > 0 && got.bytes < 120_000_000, JSON.stringify(got));
  assert.deepEqual(got.error, { code: 'NOT_ENOUGH_SHARDS', name: 'NotEnoughShardsError', typed: true }, JSON.stringify(got));
});

test('a download whose stream the page cancels unread leaves nothing; one cancelled part way stops running, and its record can be cancelled; a second download of the file meanwhile only reads', async (t) => {
  const dir = tempDir(t);
  const relay = await startRelay(t, dir, { www: wwwWithHarness(dir) });
  const file = join(dir, 'dropped.bin');
  randomFile(file, 40_000_000);
  const link = await cliPut(relay, file);
  const browser = await launch(t);
  const page = await harness(browser, relay);
  const left = await page.evaluate(async (l) => {
    // Cancelled unread, a download has asked for nothing: it leaves no record and no shard.
    const unread = (await window.node.get(l)).stream;
    await new Promise((r) => setTimeout(r, 1000));
    await unread.cancel();
    const untouched = { transfers: (await window.node.transfers()).length, bytes: (await window.node.stats()).store.bytes };
    const { stream } = await window.node.get(l);
    const reader = stream.getReader();
    await reader.read();
    const length = async (stream) => {
      const chunks = stream.getReader();
      let bytes = 0;
      for (let next = await chunks.read(); !next.done; next = await chunks.read()) {
        bytes += next.value.byteLength;
      }
      return bytes;
    };
    // A second download of the same file, while the first runs, reads it whole and writes
    // nothing under the first one's record.
    const read = await length((await window.node.get(l)).stream);
    const files = (await window.node.files()).length;
    await reader.cancel();
    const listed = async () => (await window.node.transfers()).filter((x) => x.kind.startsWith('download'));
    for (let i = 0; i < 100 && (await listed()).some((x) => x.kind.endsWith(':running')); i++) {
      await new Promise((r) => setTimeout(r, 100));
    }
    const before = await listed();
    const kept = (await window.node.stats()).store.bytes;
    await window.node.cancelTransfer(before[0].id);
    const bytes = (await window.node.stats()).store.bytes;
    // The manifest it kept, which no file listed here needs, is gone too.
    const manifests = await new Promise((resolve, reject) => {
      const open = indexedDB.open('shardweb');
      open.onerror = () => reject(open.error);
      open.onsuccess = () => {
        const db = open.result;
        try {
          const count = db.transaction('manifests').objectStore('manifests').count();
          count.onsuccess = () => resolve(count.result);
          count.onerror = () => reject(count.error);
        } catch (e) {
          reject(e);
        } finally {
          db.close();
        }
      };
    });
    // Started again at once, as the page does after a cancelled save, a download waits for the
    // run before it to let go of the file, and keeps it.
    const again = (await window.node.get(l)).stream.getReader();
    await again.read();
    await again.cancel();
    const retried = await length((await window.node.get(l)).stream);
    const keptAgain = (await window.node.files()).length;
    return { untouched, read, files, before: before.map((x) => x.kind), after: await listed(), kept, bytes, manifests, retried, keptAgain };
  }, link);
  assert.deepEqual(left.untouched, { transfers: 0, bytes: 0 });
  delete left.untouched;
  assert.equal(left.retried, 40_000_000);
  assert.equal(left.keptAgain, 1, JSON.stringify(left));
  delete left.retried;
  delete left.keptAgain;
  assert.ok(left.kept > 0, 'the download kept shards before it was cancelled');
  // Cancelling it removes the shards it kept and its manifest, with its record.
  assert.deepEqual(left, { read: 40_000_000, files: 0, before: ['download'], after: [], kept: left.kept, bytes: 0, manifests: 0 });
});

test('a node stopped in the middle of a download ends its stream with STOPPED, and calls after it reject so', async (t) => {
  const dir = tempDir(t);
  const relay = await startRelay(t, dir, { www: wwwWithHarness(dir) });
  const file = join(dir, 'long.bin');
  randomFile(file, 40_000_000);
  const link = await cliPut(relay, file);
  const browser = await launch(t);
  const page = await harness(browser, relay);
  const got = await page.evaluate(async (l) => {
    const { stream } = await window.node.get(l, { keep: false });
    const reader = stream.getReader();
    let bytes = (await reader.read()).value.byteLength;
    await window.node.stop();
    // The chunk read ahead may still come; then the stream ends, within seconds, not never.
    const late = new Promise((resolve) => setTimeout(() => resolve('hung'), 10_000));
    try {
      for (;;) {
        const next = await Promise.race([reader.read(), late]);
        if (next === 'hung') return { bytes, hung: true };
        if (next.done) return { bytes, done: true };
        bytes += next.value.byteLength;
      }
    } catch (e) {
      // A call after the stop settles at once, refused; stopping again does nothing.
      const after = await Promise.race([
        window.node.files().then(() => 'resolved', (e) => e.code),
        new Promise((resolve) => setTimeout(() => resolve('hung'), 5_000)),
      ]);
      await window.node.stop();
      return { bytes, code: e.code, after };
    }
  }, link);
  assert.equal(got.code, 'STOPPED', JSON.stringify(got));
  assert.equal(got.after, 'STOPPED', JSON.stringify(got));
  assert.ok(got.bytes < 40_000_000, JSON.stringify(got));
});

test('a browser download short of shards after a relay is killed finds a third holder in the DHT', async (t) => {
  const dir = tempDir(t);
  const a = await startRelay(t, dir);
  const tcp = (await a.info()).addrs.find((x) => x.includes('/tcp/') && !x.includes('/ws'));
  const b = await startRelay(t, dir, { www: wwwWithHarness(dir), args: ['--bootstrap', tcp] });
  const c = await startRelay(t, dir, { args: ['--bootstrap', tcp] });
  await until('the relays to meet', async () => (await b.metric('shardweb_peers')) >= 1 && (await c.metric('shardweb_peers')) >= 1);
  const size = 120_000_000;
  const file = join(dir, 'three.bin');
  const sha = randomFile(file, size);
  // Three shards a stripe, one on each relay: any two suffice, one alone does not.
  const link = await cliPut([a, b, c], file, ['--k', '2', '--m', '1']);

  const browser = await launch(t);
  const page = await harness(browser, b, { relays: [a.url, b.url] });
  const got = await getKilling(page, link, a);
  assert.deepEqual(got, { name: 'three.bin', size, sha256: sha });
  assert.ok((await c.metric('shardweb_bytes_out_total')) > 0, 'nothing came from the relay the DHT named');
});

/**
 * Serves `www` on loopback with `headers` on every response, as a site embedding the package
 * would; stopped when the test ends.
 */
async function staticSite(t, www, headers) {
  const types = { '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm' };
  const server = createServer((req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url, 'http://x').pathname));
    try {
      const body = readFileSync(join(www, path));
      res.writeHead(200, { 'content-type': types[extname(path)] ?? 'application/octet-stream', ...headers });
      res.end(body);
    } catch {
      res.writeHead(404);
      res.end();
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => server.close());
  return `http://127.0.0.1:${server.address().port}`;
}

test('the node moves its relay sockets, AES-GCM and its posts to helper workers, and where a policy forbids them does all itself', async (t) => {
  const dir = tempDir(t);
  const www = wwwWithHarness(dir);
  const relay = await startRelay(t, dir, { www });
  const browser = await launch(t);
  const file = join(dir, 'both-ways.bin');
  const sha = randomFile(file, 5_000_001);
  // The relay's own page allows blob: workers; the other site allows workers of its own
  // origin only, as strict sites do.
  const strict = await staticSite(t, www, { 'content-security-policy': "worker-src 'self'" });
  for (const [origin, helped] of [[relay.url, true], [strict, false]]) {
    const context = await browser.newContext();
    const page = await context.newPage();
    const workers = [];
    page.on('worker', (w) => workers.push(w.url()));
    await page.goto(`${origin}/harness.html`);
    await page.waitForFunction(() => window.ready === true);
    await page.evaluate(async (url) => {
      window.node = await window.shardweb.Node.start({ relays: [url] });
    }, relay.url);
    const before = await relay.metric(HTTP_SHARDS_OK);
    const result = await putFile(page, file, { keep: false });
    assert.ok(result.link, `${origin}: ${JSON.stringify(result)}`);
    // Every shard went by HTTP, from the relay's own origin and from another one (past the
    // preflight, with the receipt readable): two stripes of six, a POST each.
    assert.equal((await relay.metric(HTTP_SHARDS_OK)) - before, 2, origin);
    const out = join(dir, `out-${helped}.bin`);
    const get = await shardweb(['get', result.link, '-o', out, '--relay', relay.url]);
    assert.equal(get.code, 0, get.stderr);
    assert.equal(await sha256File(out), sha);
    const got = await page.evaluate(async (link) => {
      const { stream } = await window.node.get(link, { keep: false });
      return window.digestStream(stream);
    }, result.link);
    assert.equal(got.sha256, sha);
    // A pump for the relay's socket, the crypto worker and the post worker, or none.
    const helpers = workers.filter((url) => url.startsWith('blob:'));
    assert.equal(helpers.length, helped ? 3 : 0, `${origin}: workers ${workers.join(', ')}`);
    await context.close();
  }
});

test('a file only one browser holds reaches another browser through the relay circuit', async (t) => {
  const dir = tempDir(t);
  const relay = await startRelay(t, dir, { www: wwwWithHarness(dir) });
  const browser = await launch(t);
  const holder = await harness(browser, relay, { storeName: 'holder' });
  await until('the holder to be reachable through the relay', () =>
    holder.evaluate(async () => (await window.node.stats()).relays[0]?.reachableAt !== null),
  );
  const file = join(dir, 'only-here.bin');
  const sha = randomFile(file, 6_000_000);
  const result = await putFile(holder, file, { local: true, k: 2, m: 1 });
  assert.ok(result.link, JSON.stringify(result));
  assert.equal(await relay.metric('shardweb_shards_stored'), 0, 'the relay holds nothing of it');

  const reader = await harness(browser, relay, { storeName: 'reader' });
  const got = await getLink(reader, result.link);
  assert.deepEqual(got, { name: 'only-here.bin', size: 6_000_000, sha256: sha });
  const served = await holder.evaluate(async () => (await window.node.stats()).traffic);
  assert.ok(served.served > 0 && served.bytesOut >= 6_000_000, JSON.stringify(served));
  assert.equal(await relay.metric('shardweb_shards_stored'), 0);
});

test('a reload in the middle of an upload resumes it without sending again what was stored', async (t) => {
  const dir = tempDir(t);
  const relay = await startRelay(t, dir);
  const browser = await launch(t);
  const size = 96 << 20;
  const file = join(dir, 'big.bin');
  const sha = randomFile(file, size);
  const page = await openPage(browser, `${relay.url}/`);
  await status(page, /^Ready/);
  await page.getByTestId('file-input').setInputFiles(file);
  // Six stripes of six shards stored: a third of the file.
  await until('part of the upload to be stored', async () => (await relay.metric('shardweb_shards_stored')) >= 36, 120_000);
  const before = await relay.metric('shardweb_bytes_in_total');
  await page.reload();
  assert.match(await status(page, /done$|^error/, 180_000), /^big\.bin uploaded: done$/, page.errors.join('\n'));
  const link = (await page.getByTestId('share-link').textContent()).trim();

  const wire = (size / 4 + 16) * 6; // (4, 2): every byte goes out as 1.5 bytes of shards.
  const received = await relay.metric('shardweb_bytes_in_total');
  // Only what was in flight at the reload may go out twice: three stripes being put, and
  // those acknowledged whose record was still being written (a stripe or two).
  const window = 5 * 6 * ((4 << 20) / 4 + 16);
  assert.ok(before > 0 && received <= wire + window, `received ${received}, file ${wire}, before reload ${before}`);

  const out = join(dir, 'out.bin');
  const get = await shardweb(['get', link, '-o', out, '--relay', relay.url]);
  assert.equal(get.code, 0, get.stderr);
  assert.equal(await sha256File(out), sha);
});

test('a full browser store rejects an upload with QUOTA_EXCEEDED and keeps nothing of it; a download goes on, keeping nothing', async (t) => {
  const dir = tempDir(t);
  const relay = await startRelay(t, dir, { www: wwwWithHarness(dir) });
  const browser = await launch(t);
  const file = join(dir, 'too-big.bin');
  randomFile(file, 24_000_000);

  // The node's own limit.
  const limited = await harness(browser, relay, { storeName: 'limited', maxStoreBytes: 10_000_000 });
  const result = await putFile(limited, file);
  assert.equal(result.error?.code, 'QUOTA_EXCEEDED', JSON.stringify(result));
  assert.equal(result.error.name, 'QuotaExceededError');
  const left = await limited.evaluate(async () => {
    const stats = await window.node.stats();
    return { bytes: stats.store.bytes, transfers: await window.node.transfers(), files: await window.node.files() };
  });
  assert.deepEqual(left, { bytes: 0, transfers: [], files: [] });

  // The browser's own quota, as a site running out of disk meets it.
  const page = await harness(browser, relay, { storeName: 'quota' });
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Storage.overrideQuotaForOrigin', { origin: relay.url, quotaSize: 40_000_000 });
  const sent = await relay.metric('shardweb_shards_stored');
  const refused = await putFile(page, file);
  assert.equal(refused.error?.code, 'QUOTA_EXCEEDED', JSON.stringify(refused));
  assert.ok((await relay.metric('shardweb_shards_stored')) > sent, `it failed part way through: ${JSON.stringify(refused)}`);
  const after = await page.evaluate(async () => ({
    bytes: (await window.node.stats()).store.bytes,
    transfers: await window.node.transfers(),
  }));
  assert.deepEqual(after, { bytes: 0, transfers: [] });
  // Within the quota, the same node still works.
  const small = join(dir, 'small.bin');
  randomFile(small, 1_000_000);
  const ok = await putFile(page, small);
  assert.ok(ok.link, JSON.stringify(ok));
  // The copy of the file that would let a reload resume was written beside the upload, and
  // the finished upload's record went only after it: nothing is left to resume.
  assert.deepEqual(await page.evaluate(() => window.node.transfers()), []);

  // A download that meets the quota part way still reads the whole file, and keeps nothing
  // of it: what it kept goes, and its record. (A quota below what the store already holds,
  // which fails even the download's record, is applied by Chromium only after a while, now
  // and then: CI once saw such a download keep everything.)
  const bigger = join(dir, 'bigger.bin');
  randomFile(bigger, 48_000_000);
  const link = await cliPut(relay, bigger);
  const held = await page.evaluate(async () => (await window.node.stats()).store.bytes);
  assert.deepEqual(await getLink(page, link), { name: 'bigger.bin', size: 48_000_000, sha256: await sha256File(bigger) });
  const kept = await page.evaluate(async () => ({
    bytes: (await window.node.stats()).store.bytes,
    transfers: await window.node.transfers(),
    files: (await window.node.files()).length,
  }));
  assert.deepEqual(kept, { bytes: held, transfers: [], files: 1 });
});

test('a running upload is not cancelled under its own feet; its signal stops it and keeps nothing', async (t) => {
  const dir = tempDir(t);
  const relay = await startRelay(t, dir, { www: wwwWithHarness(dir) });
  const browser = await launch(t);
  const file = join(dir, 'big.bin');
  randomFile(file, 64 << 20);
  const page = await harness(browser, relay);
  await page.locator('#file').setInputFiles(file);
  // A misspelt option is refused, naming it, before anything is written.
  const typo = await page.evaluate(async () => {
    const file = document.getElementById('file').files[0];
    const refused = await window.node.put(file, { resumeable: false }).then(
      () => ({ stored: true }),
      (e) => ({ code: e.code, message: e.message }),
    );
    return { ...refused, transfers: (await window.node.transfers()).length };
  });
  assert.equal(typo.code, 'INVALID_OPTIONS', JSON.stringify(typo));
  assert.match(typo.message, /resumeable/);
  assert.equal(typo.transfers, 0);
  await page.evaluate(() => {
    window.abort = new AbortController();
    const file = document.getElementById('file').files[0];
    window.running = window.node
      .put(file, { signal: window.abort.signal })
      .catch((e) => ({ error: { code: e.code, message: e.message } }));
  });
  const id = await until('the upload to be listed as running', async () => {
    const running = await page.evaluate(async () => (await window.node.transfers()).find((x) => x.kind.endsWith(':running')));
    return running?.id;
  }, 60_000);
  const refused = await page.evaluate(async (id) => {
    try {
      await window.node.cancelTransfer(id);
      return { cancelled: true };
    } catch (e) {
      return { error: { code: e.code, name: e.name, message: e.message } };
    }
  }, id);
  assert.deepEqual([refused.error?.code, refused.error?.name], ['BUSY', 'BusyError'], JSON.stringify(refused));
  assert.match(refused.error.message, /is running in this tab/);
  // Once the copy of its file is kept with its record, a reload could resume it.
  await until('the upload to be resumable', async () => {
    const [listed] = await page.evaluate(() => window.node.transfers());
    return listed?.resumable === true;
  });

  const stopped = await page.evaluate(async () => {
    window.abort.abort();
    return window.running;
  });
  assert.equal(stopped.error?.code, 'STOPPED', JSON.stringify(stopped));
  const left = await page.evaluate(async () => ({
    bytes: (await window.node.stats()).store.bytes,
    transfers: await window.node.transfers(),
  }));
  assert.deepEqual(left, { bytes: 0, transfers: [] });
});

test('a signal stops an upload at once while its relay has stopped answering, and it keeps nothing', async (t) => {
  const dir = tempDir(t);
  const relay = await startRelay(t, dir, { www: wwwWithHarness(dir) });
  const browser = await launch(t);
  const file = join(dir, 'stalled.bin');
  randomFile(file, 64 << 20);
  const page = await harness(browser, relay);
  await page.locator('#file').setInputFiles(file);
  const stored = await relay.metric('shardweb_shards_stored');
  await page.evaluate(() => {
    window.abort = new AbortController();
    const file = document.getElementById('file').files[0];
    window.running = window.node
      .put(file, { signal: window.abort.signal })
      .then(() => ({ stored: true }), (e) => ({ error: { code: e.code, message: e.message } }));
  });
  await until('the relay to store a stripe', async () => (await relay.metric('shardweb_shards_stored')) >= stored + 6);
  // Frozen, the relay answers nothing: the requests under way to it hang (for a minute, over
  // HTTP, before they time out).
  relay.signal('SIGSTOP');
  t.after(() => relay.signal('SIGCONT'));
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const stopped = await page.evaluate(async () => {
    window.abort.abort();
    const late = new Promise((resolve) => setTimeout(() => resolve({ late: true }), 20_000));
    return Promise.race([window.running, late]);
  });
  relay.signal('SIGCONT');
  assert.equal(stopped.error?.code, 'STOPPED', JSON.stringify(stopped));
  const left = await page.evaluate(async () => ({
    bytes: (await window.node.stats()).store.bytes,
    transfers: await window.node.transfers(),
  }));
  assert.deepEqual(left, { bytes: 0, transfers: [] });
});

test('an upload that keeps no copy of its file (resumable: false) completes; after a reload it can only be cancelled', async (t) => {
  const dir = tempDir(t);
  const relay = await startRelay(t, dir, { www: wwwWithHarness(dir) });
  const browser = await launch(t);
  const page = await harness(browser, relay);
  const small = join(dir, 'generated.bin');
  const sha = randomFile(small, 3_000_000);
  const put = await putFile(page, small, { resumable: false });
  assert.ok(put.link, JSON.stringify(put));
  assert.deepEqual(await getLink(page, put.link), { name: 'generated.bin', size: 3_000_000, sha256: sha });
  assert.deepEqual(await page.evaluate(() => window.node.transfers()), []);
  const held = await page.evaluate(async () => (await window.node.stats()).store.bytes);

  const big = join(dir, 'big.bin');
  randomFile(big, 128 << 20);
  await page.locator('#file').setInputFiles(big);
  // The page reloads itself once a fifth of the file is encoded: well before the end.
  await Promise.all([
    page.waitForEvent('load', { timeout: 60_000 }),
    page.evaluate(() => {
      const file = document.getElementById('file').files[0];
      const onProgress = (p) => {
        if (p.wireBytes > 0 && p.bytes >= file.size / 5 && !window.reloading) {
          window.reloading = true;
          location.reload();
        }
      };
      window.node.put(file, { resumable: false, onProgress }).catch(() => {});
    }),
  ]);
  await page.waitForFunction(() => window.ready === true);
  const after = await page.evaluate(async (url) => {
    window.node = await window.shardweb.Node.start({ relays: [url] });
    const [listed, ...more] = await window.node.transfers();
    let resumed;
    try {
      resumed = await window.node.resume(listed.id);
    } catch (e) {
      resumed = { error: { code: e.code } };
    }
    const kept = (await window.node.stats()).store.bytes;
    await window.node.cancelTransfer(listed.id);
    const left = { bytes: (await window.node.stats()).store.bytes, transfers: await window.node.transfers() };
    // Cancelled already (a second click, or another tab was first): nothing is left to cancel.
    const again = await window.node.cancelTransfer(listed.id).then(
      () => ({ cancelled: true }),
      (e) => ({ code: e.code, name: e.name }),
    );
    return { listed: { kind: listed.kind, name: listed.name, resumable: listed.resumable }, more, resumed, kept, left, again };
  }, relay.url);
  assert.deepEqual(after.listed, { kind: 'upload', name: 'big.bin', resumable: false });
  assert.deepEqual(after.more, []);
  assert.deepEqual(after.resumed, { error: { code: 'FILE_UNREADABLE' } });
  assert.ok(after.kept > held, 'the interrupted upload kept shards here');
  // Cancelling it removes every shard it wrote here, also those of stripes written but not yet
  // recorded when the reload came, and none of the finished file's.
  assert.deepEqual(after.left, { bytes: held, transfers: [] });
  assert.deepEqual(after.again, { code: 'NO_SUCH_TRANSFER', name: 'ShardwebError' });
});

test('a shard two files share stays until neither needs it: a cancel or a remove frees only what no one else uses', async (t) => {
  const dir = tempDir(t);
  // A relay that takes nothing: an upload to it fails after keeping its shards here, and its
  // record stays, to be resumed or cancelled.
  const relay = await startRelay(t, dir, { www: wwwWithHarness(dir), args: ['--max-storage-per-peer', '1'] });
  const browser = await launch(t);
  const page = await harness(browser, relay);
  const seen = await page.evaluate(async () => {
    // 10 bytes at k = 10 seal to 26 bytes in shards of 4: shards 7 to 9 are zero padding,
    // one and the same shard in every such file.
    const tiny = () => new Blob([crypto.getRandomValues(new Uint8Array(10))]);
    const sha = async (blob) => window.digestStream(blob.stream());
    const opts = { k: 10, m: 2 };
    const failed = await window.node.put(tiny(), opts).then(() => 'stored', (e) => e.code);
    const [interrupted] = await window.node.transfers();
    const keptFailed = (await window.node.stats()).store.shards;
    // Two files kept here only, both needing the padding shard the failed upload added.
    const [first, second] = [tiny(), tiny()];
    const one = await window.node.put(first, { ...opts, local: true });
    const two = await window.node.put(second, { ...opts, local: true });
    await window.node.cancelTransfer(interrupted.id);
    await window.node.remove(one.manifestId);
    // Removed already: nothing is left to remove.
    const again = await window.node.remove(one.manifestId).then(
      () => 'removed',
      (e) => ({ code: e.code, name: e.name }),
    );
    // Read back with no relay: only this browser's store can answer.
    await window.node.stop();
    const offline = await window.shardweb.Node.start({ relays: [] });
    const read = await offline
      .get(two.link)
      .then(({ stream }) => window.digestStream(stream), (e) => ({ error: e.code, message: e.message }));
    await offline.remove(two.manifestId);
    const left = (await offline.stats()).store.bytes;
    // A new upload that no relay can take is refused and leaves no record.
    const unsent = await offline.put(tiny()).then(() => 'stored', (e) => e.code);
    const records = (await offline.transfers()).length;
    await offline.stop();
    return { failed, interrupted: interrupted?.kind, keptFailed, again, read, expected: await sha(second), left, unsent, records };
  });
  assert.deepEqual(seen.again, { code: 'NOT_FOUND', name: 'NotFoundError' }, JSON.stringify(seen));
  assert.equal(seen.unsent, 'NO_RELAYS', JSON.stringify(seen));
  assert.equal(seen.records, 0, JSON.stringify(seen));
  assert.equal(seen.failed, 'UPLOAD_FAILED', JSON.stringify(seen));
  assert.equal(seen.interrupted, 'upload');
  // It kept its 10 distinct shards here, the padding shard among them, before it failed.
  assert.equal(seen.keptFailed, 10, JSON.stringify(seen));
  // The cancel and the first file's removal left the shard the second file needs.
  assert.deepEqual(seen.read, seen.expected, JSON.stringify(seen));
  // The last file's removal took it: nothing is left.
  assert.equal(seen.left, 0);
});

test('an upload running in one tab is listed as running in another, which can neither cancel nor resume it', async (t) => {
  const dir = tempDir(t);
  const relay = await startRelay(t, dir, { www: wwwWithHarness(dir) });
  const browser = await launch(t);
  const file = join(dir, 'shared.bin');
  const sha = randomFile(file, 128 << 20);
  const a = await harness(browser, relay);
  // A second tab of the same origin, sharing the first one's store.
  const b = await a.context().newPage();
  await b.goto(`${relay.url}/harness.html`);
  await b.waitForFunction(() => window.ready === true);
  await b.evaluate(async (url) => {
    window.node = await window.shardweb.Node.start({ relays: [url] });
  }, relay.url);

  await a.locator('#file').setInputFiles(file);
  await a.evaluate(() => {
    const file = document.getElementById('file').files[0];
    window.running = window.node.put(file).catch((e) => ({ error: { code: e.code, message: e.message } }));
  });
  const seen = await b.evaluate(async () => {
    // Asked back to back, so that the first listing comes as soon as the record is written.
    let listed;
    for (const end = Date.now() + 10000; !listed && Date.now() < end; ) {
      listed = (await window.node.transfers()).find((x) => x.kind.startsWith('upload'));
    }
    const attempt = async (call) => {
      try {
        await call();
        return 'done';
      } catch (e) {
        return { code: e.code, message: e.message };
      }
    };
    return {
      kind: listed?.kind,
      cancel: await attempt(() => window.node.cancelTransfer(listed.id)),
      resume: await attempt(() => window.node.resume(listed.id)),
    };
  });
  assert.equal(seen.kind, 'upload:running', JSON.stringify(seen));
  for (const refused of [seen.cancel, seen.resume]) {
    assert.equal(refused.code, 'BUSY', JSON.stringify(seen));
    assert.match(refused.message, /is running or being cancelled, in this tab or another/);
  }
  // The first tab's upload was left alone and completes.
  const put = await a.evaluate(() => window.running);
  assert.ok(put.link, JSON.stringify(put));
  const out = join(dir, 'out.bin');
  const get = await shardweb(['get', put.link, '-o', out, '--relay', relay.url]);
  assert.equal(get.code, 0, get.stderr);
  assert.equal(await sha256File(out), sha);
});
