// The web page against a real relay: upload in one browser, download in another with its own
// storage, and the messages a user sees for bad links. SHARDWEB_SCREENSHOTS=1 also writes the
// screenshots in docs/.

import assert from 'node:assert/strict';
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';

import {
  ROOT,
  cliPut,
  launch,
  openPage,
  pageLink,
  randomFile,
  sha256File,
  startRelay,
  status,
  tempDir,
  until,
} from './lib.mjs';

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
  assert.match(download.url(), /\/_shardweb\/download\//, 'saved through the service worker');
  assert.equal(await sha256File(await download.path()), sha, 'the bytes came back identical');
  assert.match(await status(b, /done$|^error/), /^holiday photos\.bin saved: done$/);
  await screenshot(b, dir, 'download');
  assert.deepEqual(b.errors, []);
});

test('a download a reload interrupted is offered again and fetches only what it lacked', async (t) => {
  const dir = tempDir(t);
  const relay = await startRelay(t, dir);
  const browser = await launch(t);
  const size = 128 << 20;
  const file = join(dir, 'film.bin');
  const sha = randomFile(file, size);
  const link = pageLink(relay, await cliPut(relay, file));

  // Opening the link already fetches the first stripes.
  const before = await relay.metric('shardweb_bytes_out_total');
  const page = await openPage(browser, link);
  assert.match(await status(page, /^Ready: |^error/), /^Ready: film\.bin/);
  // The browser starts saving the file (the page hands the stream to its service worker).
  await Promise.all([
    page.waitForEvent('download', { timeout: 60_000 }),
    page.getByTestId('download-button').click(),
  ]);
  // (4, 2): the data shards of a stripe are 4 MiB; a quarter of the file has been served.
  await until('part of the download to be served', async () => {
    const line = (await page.getByTestId('status').textContent()).trim();
    assert.doesNotMatch(line, /^error/, page.errors.join('\n'));
    return (await relay.metric('shardweb_bytes_out_total')) - before >= size / 4;
  }, 120_000);
  await page.goto(`${relay.url}/`);

  const resume = page.getByRole('button', { name: 'Continue downloading film.bin' });
  await resume.waitFor({ timeout: 30_000 });
  await resume.click();
  assert.match(await status(page, /^Ready: |^error/), /^Ready: film\.bin/);
  const [download] = await Promise.all([
    page.waitForEvent('download', { timeout: 120_000 }),
    page.getByTestId('download-button').click(),
  ]);
  assert.equal(await sha256File(await download.path()), sha, 'the bytes came back identical');
  assert.match(await status(page, /done$|^error/, 180_000), /^film\.bin saved: done$/);

  // What was kept before the reload is not fetched again: only shards in flight at the reload
  // may have been sent twice: the window of four stripes (their data shards, and a parity
  // shard where a request failed) and the two writes to the store that run behind it.
  const served = (await relay.metric('shardweb_bytes_out_total')) - before;
  const window = (4 * 6 + 2) * ((4 << 20) / 4 + 16);
  t.diagnostic(`served ${served} bytes for a file of ${size}; at most ${size + 4096 * 6 + window}`);
  assert.ok(served <= size + 4096 * 6 + window, `served ${served} for a file of ${size}`);
  assert.deepEqual(page.errors, []);
});

test('a download cancelled in the browser stops fetching, and can be saved again', async (t) => {
  const dir = tempDir(t);
  const relay = await startRelay(t, dir);
  const browser = await launch(t);
  const size = 128 << 20;
  const file = join(dir, 'talk.bin');
  const sha = randomFile(file, size);
  const link = pageLink(relay, await cliPut(relay, file));

  const page = await openPage(browser, link);
  assert.match(await status(page, /^Ready: |^error/), /^Ready: talk\.bin/);
  const before = await relay.metric('shardweb_bytes_out_total');
  const [download] = await Promise.all([
    page.waitForEvent('download', { timeout: 60_000 }),
    page.getByTestId('download-button').click(),
  ]);
  await until('part of the download to be served', async () => {
    return (await relay.metric('shardweb_bytes_out_total')) - before >= size / 8;
  }, 120_000);
  assert.match(download.url(), /\/_shardweb\/download\//, 'saved through the service worker');
  await download.cancel();
  assert.match(await status(page, /cancelled\.$|^error/), /^talk\.bin: download cancelled\.$/);
  // The node stops fetching: after the cancel, at most what was in flight is served (the
  // window's four stripes of 4 MiB of data shards, and reads ahead of the stream).
  const stopped = await relay.metric('shardweb_bytes_out_total');
  await new Promise((resolve) => setTimeout(resolve, 2000));
  const after = await relay.metric('shardweb_bytes_out_total');
  t.diagnostic(`served ${stopped - before} bytes at the cancel, ${after - before} two seconds later`);
  assert.ok(after - stopped <= 32 << 20, `served ${after - stopped} more bytes after the cancel`);
  assert.ok(after - before < size, `served ${after - before} of ${size}`);

  // After a reload the download is listed as interrupted; forgetting it takes it off for good.
  await page.goto(`${relay.url}/`);
  const forget = page.getByRole('button', { name: 'Forget the download of talk.bin' });
  await forget.waitFor({ timeout: 30_000 });
  // Another tab forgets it first; this tab's Forget then finds nothing left to forget, and
  // takes the row off all the same, with no error.
  const other = await page.context().newPage();
  await other.goto(`${relay.url}/`);
  const otherForget = other.getByRole('button', { name: 'Forget the download of talk.bin' });
  await otherForget.waitFor({ timeout: 30_000 });
  await otherForget.click();
  await otherForget.waitFor({ state: 'detached', timeout: 10_000 });
  await other.close();
  await forget.click();
  await forget.waitFor({ state: 'detached', timeout: 10_000 });
  assert.doesNotMatch(await page.getByTestId('status').textContent(), /error/);
  await page.reload();
  assert.match(await status(page, /^Ready|^error/), /^Ready/);
  // The page lists interrupted transfers just after it is ready: give it time to.
  await new Promise((resolve) => setTimeout(resolve, 2000));
  assert.equal(await page.getByRole('button', { name: /Continue downloading/ }).count(), 0);

  // The link still saves the whole file.
  await page.goto(link);
  assert.match(await status(page, /^Ready: |^error/), /^Ready: talk\.bin/);
  const [again] = await Promise.all([
    page.waitForEvent('download', { timeout: 60_000 }),
    page.getByTestId('download-button').click(),
  ]);
  assert.equal(await sha256File(await again.path()), sha, 'the bytes came back identical');
  assert.match(await status(page, /done$|^error/, 180_000), /^talk\.bin saved: done$/);
  assert.deepEqual(page.errors, []);
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
