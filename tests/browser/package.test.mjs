// The npm package as its users get it: `npm pack`, installed from the tarball into a Vite app
// that type-checks and builds, and into a plain `<script type="module">` page; both do a put
// and a get in headless Chromium against a real relay.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';

import { ROOT, launch, openPage, startRelay, tempDir } from './lib.mjs';

const APP = join(ROOT, 'tests/browser/vite-app');

function npm(args, cwd) {
  return execFileSync('npm', args, {
    cwd,
    encoding: 'utf8',
    timeout: 300_000,
  });
}

const PLAIN_PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>plain page</title></head>
<body><p id="result">running</p>
<script type="module">
  import { Node } from './shardweb/dist/index.js';
  const bytes = new Uint8Array(1_500_000).map((_, i) => (i * 7) & 255);
  const node = await Node.start({ relays: [location.origin], storeName: 'plain' });
  const { link } = await node.put(new Blob([bytes]), { name: 'plain.bin' });
  const got = await node.get(link);
  const back = new Uint8Array(await new Response(got.stream).arrayBuffer());
  const same = back.length === bytes.length && back.every((b, i) => b === bytes[i]);
  document.getElementById('result').textContent = same ? 'ok ' + got.name : 'mismatch';
</script></body></html>`;

test('the packed package installs, type-checks, builds with Vite and runs a put and a get', async (t) => {
  const dir = tempDir(t);
  const [packed] = JSON.parse(npm(['pack', '--json', '--pack-destination', dir], join(ROOT, 'web')));
  const files = packed.files.map((f) => f.path).sort();
  for (const needed of ['dist/index.js', 'dist/index.d.ts', 'dist/worker.js', 'pkg/shardweb_wasm.js', 'pkg/shardweb_wasm_bg.wasm', 'package.json']) {
    assert.ok(files.includes(needed), `the tarball lacks ${needed}: ${files.join(', ')}`);
  }
  assert.ok(!files.some((f) => f.startsWith('src/') || f.includes('node_modules')), files.join(', '));
  const tarball = join(dir, packed.filename);

  npm(['install', '--no-save', '--no-audit', '--no-fund', '--loglevel=error', tarball], APP);
  npm(['run', 'check'], APP);
  const www = join(dir, 'www');
  npm(['run', 'build', '--', '--outDir', www, '--emptyOutDir'], APP);

  // The plain page uses the installed files as they are, with no bundler.
  const plain = join(www, 'plain');
  mkdirSync(join(plain, 'shardweb'), { recursive: true });
  for (const part of ['dist', 'pkg']) {
    cpSync(join(APP, 'node_modules/shardweb', part), join(plain, 'shardweb', part), { recursive: true });
  }
  writeFileSync(join(plain, 'index.html'), PLAIN_PAGE);

  const relay = await startRelay(t, dir, { www });
  const browser = await launch(t);
  const vite = await openPage(browser, `${relay.url}/`);
  const result = vite.locator('#result');
  await result.filter({ hasText: /^(ok|error|mismatch)/ }).waitFor({ timeout: 60_000 });
  assert.equal(await result.textContent(), 'ok vite.bin 3000000 BAD_LINK', vite.errors.join('\n'));

  const page = await openPage(browser, `${relay.url}/plain/`);
  const text = page.locator('#result');
  await text.filter({ hasText: /^(ok|mismatch)/ }).waitFor({ timeout: 60_000 });
  assert.equal(await text.textContent(), 'ok plain.bin', page.errors.join('\n'));
});
