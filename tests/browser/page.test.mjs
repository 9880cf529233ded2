// The web page against a real relay: upload in one browser, download in another with its own
// storage, and the messages a user sees for bad links. SHARDWEB_SCREENSHOTS=1 also writes the
// screenshots in docs/.

import assert from 'node:assert/strict';
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';

import { ROOT, launch, openPage, randomFile, sha256File, startRelay, status, tempDir } from './lib.mjs';

async function screenshot(page, dir, name) {
  const path = join(dir, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  if (process.env.SHARDWEB_SCREENSHOTS) copyFileSync(path, join(ROOT, 'docs', `screenshot-${name}.png`));
}

test('a 20 MB file uploaded on the page downloads identical in another browser', async (t) => {
  const dir = tempDir(t);
  const relay = await startRelay(t, dir);
  const browser = await launch(t);
  const file = join(dir, 'holiday photos.bin');
  const sha = randomFile(file, 20_000_000);

  const a = await openPage(browser, `${relay.url}/`);
  await status(a, /^Ready/);
  await a.getByTestId('file-input').setInputFiles(file);
  assert.match(await status(a, /done$|^error/, 120_000), /done$/, a.errors.join('\n'));
  const link = (await a.getByTestId('share-link').textContent()).trim();
  assert.match(link, new RegExp(`^${relay.url}/#[\\w-]{43}\\.[\\w-]{43}$`));
  await screenshot(a, dir, 'upload');

  const b = await openPage(browser, link);
  assert.match(await status(b, /^Ready: |^error/), /^Ready: holiday photos\.bin \(20\.0 MB\)/);
  const [download] = await Promise.all([
    b.waitForEvent('download', { timeout: 60_000 }),
    b.getByTestId('download-button').click(),
  ]);
  assert.equal(download.suggestedFilename(), 'holiday photos.bin');
  assert.equal(await sha256File(await download.path()), sha, 'the bytes came back identical');
  assert.match(await status(b, /done$|^error/), /^holiday photos\.bin saved: done$/);
  await screenshot(b, dir, 'download');
  assert.deepEqual(b.errors, []);
});

test('malformed links, unknown files and wrong keys say what is wrong', async (t) => {
  const dir = tempDir(t);
  const relay = await startRelay(t, dir);
  const browser = await launch(t);
  const page = await openPage(browser, `${relay.url}/#not-a-link`);
  assert.match(
    await status(page, /^error/),
    /^error: This link is malformed \(the link has no '\.' between its manifest id and its key\)/,
  );

  await page.goto(`${relay.url}/#${'A'.repeat(43)}.${'A'.repeat(43)}`);
  assert.match(await status(page, /^error/), /^error: File not found/);

  const file = join(dir, 'small.txt');
  randomFile(file, 1000);
  await page.goto(`${relay.url}/`);
  await status(page, /^Ready/);
  await page.getByTestId('file-input').setInputFiles(file);
  await status(page, /done$/);
  const link = (await page.getByTestId('share-link').textContent()).trim();
  const wrongKey = `${link.slice(0, link.lastIndexOf('.') + 1)}${'A'.repeat(43)}`;
  await page.goto(wrongKey);
  assert.match(await status(page, /^error/), /^error: Wrong key/);
});
