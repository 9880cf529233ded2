// The shardweb page: upload, share, download. It uses only the public API of the `shardweb`
// package, as any other app would.

import { Node, ShardwebError } from './shardweb/dist/index.js';

const $ = (id) => document.getElementById(id);
const status = $('status');
let node;

// ---------- formatting and messages ----------

function bytes(n) {
  if (n === null || n === undefined) return '?';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000;
    i += 1;
  }
  return `${n.toFixed(i === 0 ? 0 : n < 10 ? 2 : 1)} ${units[i]}`;
}

function duration(seconds) {
  if (seconds === null || !Number.isFinite(seconds)) return '';
  if (seconds < 60) return `${Math.ceil(seconds)} s left`;
  const m = Math.floor(seconds / 60);
  return m < 60 ? `${m} min ${Math.ceil(seconds % 60)} s left` : `${Math.floor(m / 60)} h ${m % 60} min left`;
}

function speed(p) {
  const parts = [];
  if (p.bytesPerSecond > 0) parts.push(`${bytes(p.bytesPerSecond)}/s`);
  const left = duration(p.secondsLeft);
  if (left && !p.done) parts.push(left);
  return parts.join(' · ');
}

/** A sentence for a user, from an error of the node. */
function explain(e) {
  switch (e?.code) {
    case 'BAD_LINK':
      return `This link is malformed (${e.message.replace(/^bad link: /, '')}). Check that it was copied whole.`;
    case 'NOT_FOUND':
      return 'File not found: no relay or peer that can be reached has it. It may have been removed, or its holders are offline.';
    case 'NOT_ENOUGH_SHARDS':
      return `Not enough pieces of this file can be reached: stripe ${e.stripe} has ${e.found} of the ${e.needed} shards needed.`;
    case 'WRONG_KEY':
      return "Wrong key: this link's key does not open this file. Check that the link was copied whole.";
    case 'QUOTA_EXCEEDED':
      return 'The browser storage for this site is full. Remove files under “My files”, or turn off keeping copies here.';
    case 'NO_RELAYS':
      return `Cannot reach a relay: ${e.message}`;
    case 'FILE_UNREADABLE':
      return 'The file can no longer be read: it was moved or changed. Choose it again.';
    case 'STOPPED':
      return 'Cancelled.';
    case 'CORRUPT':
      return `The data failed verification: ${e.message}`;
    default:
      return e?.message ?? String(e);
  }
}

function say(text) {
  status.textContent = text;
}

function fail(e) {
  say(`error: ${explain(e)}`);
}

// ---------- uploads ----------

function uploadRow(name, size) {
  const li = document.createElement('li');
  li.className = 'transfer';
  const id = `up-${Math.random().toString(36).slice(2)}`;
  li.innerHTML = `
    <p class="file-line"><span class="name"></span> <span class="size"></span></p>
    <div class="bar-row"><label for="${id}-enc">Encoded</label><progress id="${id}-enc" max="1" value="0"></progress></div>
    <div class="bar-row"><label for="${id}-net">Stored</label><progress id="${id}-net" max="1" value="0"></progress></div>
    <p class="meta"></p>
    <p class="row-status"></p>
    <div class="share" hidden>
      <a class="share-link" data-testid="share-link" rel="noopener"></a>
      <button type="button" class="copy">Copy link</button>
    </div>
    <button type="button" class="cancel">Cancel</button>`;
  li.querySelector('.name').textContent = name;
  li.querySelector('.size').textContent = bytes(size);
  $('uploads').prepend(li);
  return {
    li,
    enc: li.querySelector(`#${id}-enc`),
    net: li.querySelector(`#${id}-net`),
    meta: li.querySelector('.meta'),
    rowStatus: li.querySelector('.row-status'),
    cancel: li.querySelector('.cancel'),
  };
}

function shareDone(row, result) {
  row.enc.value = 1;
  row.net.value = 1;
  row.cancel.hidden = true;
  const share = row.li.querySelector('.share');
  const a = share.querySelector('.share-link');
  a.href = result.url;
  a.textContent = result.url;
  share.hidden = false;
  share.querySelector('.copy').addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(result.url);
      say('Link copied.');
    } catch {
      const range = document.createRange();
      range.selectNodeContents(a);
      getSelection().removeAllRanges();
      getSelection().addRange(range);
      say('Select-all done: copy the link with your keyboard.');
    }
  });
  row.rowStatus.textContent = 'Uploaded.';
}

function onUploadProgress(row, k, m, local) {
  return (p) => {
    const total = p.total || 1;
    row.enc.value = p.bytes / total;
    // Each byte goes out as (k + m) / k bytes of shards, once.
    const wire = local ? p.bytes / total : p.wireBytes / ((total * (k + m)) / k);
    row.net.value = Math.min(wire, 1);
    row.meta.textContent = speed(p);
  };
}

async function upload(file, resumeId) {
  const k = Number($('opt-k').value) || 4;
  const m = Number($('opt-m').value) || 2;
  const local = $('opt-local').checked;
  const row = uploadRow(file.name, file.size);
  const controller = new AbortController();
  row.cancel.addEventListener('click', () => controller.abort());
  say(`Uploading ${file.name}…`);
  try {
    const onProgress = onUploadProgress(row, k, m, local);
    const result = resumeId
      ? await node.resume(resumeId, { onProgress, signal: controller.signal })
      : await node.put(file, { k, m, local, onProgress, signal: controller.signal });
    shareDone(row, result);
    say(`${result.name} uploaded: done`);
    refresh();
  } catch (e) {
    row.rowStatus.textContent = explain(e);
    row.cancel.hidden = true;
    fail(e);
  }
}

function uploadAll(files) {
  for (const file of files) upload(file);
}

// ---------- downloads ----------

let opened;

function linkFromHash() {
  const hash = decodeURIComponent(location.hash.slice(1)).trim();
  return hash === '' ? null : hash;
}

/** Opens a link and shows its file; `again` (after a save) keeps the status and progress. */
async function openLink(link, again = false) {
  const panel = $('download-panel');
  panel.hidden = false;
  $('download-button').disabled = true;
  opened?.result.stream.cancel().catch(() => {});
  opened = null;
  if (!again) {
    $('download-name').textContent = 'Looking for the file…';
    $('download-size').textContent = '';
    $('download-progress').value = 0;
    $('download-meta').textContent = '';
    say('Opening the link…');
  }
  try {
    const progress = { current: null };
    const result = await node.get(link, { onProgress: (p) => progress.current?.(p) });
    opened = { link, result, progress };
    $('download-name').textContent = result.name || 'unnamed file';
    $('download-size').textContent = bytes(result.size);
    $('download-button').disabled = false;
    if (!again) say(`Ready: ${result.name} (${bytes(result.size)}).`);
  } catch (e) {
    $('download-name').textContent = 'This link cannot be opened.';
    fail(e);
  }
}

/** Posts `message` to the service worker with a reply port; whether it answers within `ms`. */
function answers(worker, message, transfer, ms) {
  const channel = new MessageChannel();
  const answered = new Promise((resolve) => {
    channel.port1.onmessage = () => resolve(true);
    setTimeout(() => resolve(false), ms);
  });
  worker.postMessage({ ...message, reply: channel.port2 }, [channel.port2, ...transfer]);
  return answered;
}

/** The service worker that saves streams, if one answers. */
async function saver() {
  if (!navigator.serviceWorker) return null;
  const registration = await Promise.race([navigator.serviceWorker.ready, new Promise((r) => setTimeout(r, 3000))]);
  const worker = navigator.serviceWorker.controller ?? registration?.active;
  if (!worker) return null;
  return (await answers(worker, { type: 'shardweb-ping' }, [], 3000)) ? worker : null;
}

/**
 * A port from which the service worker pulls `stream`'s chunks one at a time, each moved to
 * it rather than copied (a transferred stream would copy every chunk on both threads).
 * The worker asks with 'pull' or 'cancel'; it gets `{ value }`, `{ done }` or `{ error }`.
 */
function chunksPort(stream) {
  const { port1, port2 } = new MessageChannel();
  const reader = stream.getReader();
  savingPorts.add(port1);
  port1.onmessage = async ({ data }) => {
    if (data === 'cancel') {
      savingPorts.delete(port1);
      port1.close();
      const reason = new ShardwebError('STOPPED', 'the download was cancelled in the browser');
      await reader.cancel(reason).catch(() => {});
      return;
    }
    try {
      const { done, value } = await reader.read();
      if (done) {
        savingPorts.delete(port1);
        port1.postMessage({ done: true });
        port1.close();
        return;
      }
      // A chunk that is a view of a larger buffer (or of a shared one) is copied, so that only
      // its own bytes move.
      const own = value.buffer instanceof ArrayBuffer && value.byteOffset === 0 && value.byteLength === value.buffer.byteLength;
      const chunk = own ? value : value.slice();
      port1.postMessage({ value: chunk }, [chunk.buffer]);
    } catch (e) {
      savingPorts.delete(port1);
      port1.postMessage({ error: e?.message ?? String(e) });
      port1.close();
    }
  };
  return port2;
}

/** The ports of saves under way: closing the page fails them, so no save waits forever. */
const savingPorts = new Set();
addEventListener('pagehide', () => {
  for (const port of savingPorts) port.postMessage({ error: 'the page was closed' });
  savingPorts.clear();
});

/**
 * Saves a stream to disk through the service worker, so that it never sits in memory. The
 * download frame opens only once the worker holds the stream: its request could otherwise
 * reach the worker before the stream does.
 */
async function saveStreamed(worker, result, stream) {
  const id = `${Date.now()}-${Math.random().toString(36).slice(2)}`;
  const chunks = chunksPort(stream);
  const message = { type: 'shardweb-download', id, name: result.name, size: result.size, mime: result.type, chunks };
  if (!(await answers(worker, message, [chunks], 10_000))) throw new Error('The browser did not take the download: reload the page and try again.');
  const frame = document.createElement('iframe');
  frame.hidden = true;
  frame.title = 'download';
  frame.src = `_shardweb/download/${id}`;
  document.body.append(frame);
  setTimeout(() => frame.remove(), 60_000);
}

/** Without a service worker: collect the file (it then sits in memory) and save it. */
async function saveCollected(result, stream) {
  const blob = await new Response(stream).blob();
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = result.name || 'download';
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
}

async function download() {
  if (!opened) return;
  const { link, result, progress } = opened;
  opened = null;
  $('download-button').disabled = true;
  say(`Downloading ${result.name}…`);
  const finished = new Promise((resolve) => {
    progress.current = (p) => {
      $('download-progress').value = p.total ? p.bytes / p.total : 1;
      $('download-meta').textContent = speed(p);
      if (p.done) resolve();
    };
  });
  try {
    // The pipe through a transform stream reports the download's errors here, whoever reads.
    const { readable, writable } = new TransformStream();
    const stop = new AbortController();
    const piped = result.stream.pipeTo(writable, { signal: stop.signal });
    try {
      const worker = await saver();
      if (worker) await saveStreamed(worker, result, readable);
      else await saveCollected(result, readable);
    } catch (e) {
      // Nothing will read the file: stop fetching it.
      stop.abort(e);
      piped.catch(() => {});
      throw e;
    }
    await piped;
    await finished;
    $('download-progress').value = 1;
    say(`${result.name} saved: done`);
    refresh();
  } catch (e) {
    if (e?.code === 'STOPPED') say(`${result.name}: download cancelled.`);
    else fail(e);
  } finally {
    // The same file can be saved again.
    if (linkFromHash() === link) openLink(link, true);
  }
}

// ---------- my files and the node panel ----------

async function refreshFiles() {
  const files = await node.files();
  const list = $('files');
  list.replaceChildren();
  $('files-empty').hidden = files.length > 0;
  files.sort((a, b) => b.added - a.added);
  for (const f of files) {
    const li = document.createElement('li');
    li.innerHTML = `<span class="name"></span> <span class="size"></span> <span class="origin"></span>
      <span class="actions"><a class="open">Open</a> <button type="button" class="copy">Copy link</button>
      <button type="button" class="remove">Remove</button></span>`;
    li.querySelector('.name').textContent = f.name || 'unnamed file';
    li.querySelector('.size').textContent = bytes(f.size);
    li.querySelector('.origin').textContent = f.origin;
    const url = `${node.pageUrl}#${f.link.replace(/^shardweb:/, '')}`;
    li.querySelector('.open').href = url;
    li.querySelector('.copy').setAttribute('aria-label', `Copy the link to ${f.name}`);
    li.querySelector('.remove').setAttribute('aria-label', `Remove ${f.name} from this browser`);
    li.querySelector('.copy').addEventListener('click', () => navigator.clipboard.writeText(url).then(() => say('Link copied.')));
    const remove = li.querySelector('.remove');
    remove.addEventListener('click', async () => {
      remove.disabled = true;
      try {
        await node.remove(f.manifestId);
      } catch (e) {
        remove.disabled = false;
        // Removed meanwhile (in another tab, say): it is gone all the same.
        if (e.code !== 'NOT_FOUND') return fail(e);
      }
      say(`${f.name} removed from this browser.`);
      refresh();
    });
    list.append(li);
  }
}

async function refreshNode() {
  const s = await node.stats();
  $('node-peer').textContent = s.peerId;
  const relays = $('node-relays');
  relays.replaceChildren();
  for (const r of s.relays) {
    const li = document.createElement('li');
    li.textContent = `${r.url}: ${r.connected ? 'connected' : 'reconnecting'}${r.reachableAt ? ', reachable through it' : ''}`;
    relays.append(li);
  }
  $('node-peers').textContent = String(s.peers);
  const quota = s.store.quota ? ` of ${bytes(s.store.quota)} allowed` : '';
  $('node-store').textContent = `${s.store.shards} shards, ${bytes(s.store.bytes)}${quota}${s.store.persisted ? ' (persistent)' : ''}`;
  const up = s.relays.filter((r) => r.connected).length;
  $('connection').textContent = `${up} of ${s.relays.length} relays connected · ${s.peers} peers`;
}

function refresh() {
  refreshFiles().catch(() => {});
  refreshNode().catch(() => {});
}

// ---------- start ----------

function wire() {
  const input = $('file-input');
  input.addEventListener('change', () => {
    uploadAll([...input.files]);
    input.value = '';
  });
  const zone = $('dropzone');
  zone.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' || e.key === ' ') {
      e.preventDefault();
      input.click();
    }
  });
  zone.addEventListener('dragover', (e) => {
    e.preventDefault();
    zone.classList.add('over');
  });
  zone.addEventListener('dragleave', () => zone.classList.remove('over'));
  zone.addEventListener('drop', (e) => {
    e.preventDefault();
    zone.classList.remove('over');
    uploadAll([...e.dataTransfer.files]);
  });
  $('download-button').addEventListener('click', download);
  $('open-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const value = $('link-input').value.trim();
    const fragment = value.includes('#') ? value.slice(value.indexOf('#') + 1) : value.replace(/^shardweb:/, '');
    if (location.hash.slice(1) === fragment) openLink(value);
    else location.hash = fragment;
  });
  window.addEventListener('hashchange', () => {
    const link = linkFromHash();
    if (link) openLink(link);
  });
}

/**
 * A row of the interrupted list: its name and size, a button that continues it (when it can)
 * and one that forgets it, freeing the room what it kept here takes.
 */
function interruptedRow(t, what, onContinue) {
  const list = $('interrupted');
  const li = document.createElement('li');
  li.append(`${t.name} (${bytes(t.size)}) `);
  if (onContinue) {
    const open = document.createElement('button');
    open.type = 'button';
    open.textContent = 'Continue';
    open.setAttribute('aria-label', `Continue ${what} ${t.name}`);
    open.addEventListener('click', () => {
      li.remove();
      list.hidden = list.children.length === 0;
      onContinue();
    });
    li.append(open, ' ');
  }
  const forget = document.createElement('button');
  forget.type = 'button';
  forget.textContent = 'Forget';
  forget.setAttribute('aria-label', `Forget the ${what === 'uploading' ? 'upload' : 'download'} of ${t.name}`);
  forget.addEventListener('click', async () => {
    forget.disabled = true;
    try {
      await node.cancelTransfer(t.id);
    } catch (e) {
      forget.disabled = false;
      // Finished or forgotten meanwhile (in another tab, say): there is nothing left to forget.
      if (e.code !== 'NO_SUCH_TRANSFER') return fail(e);
    }
    li.remove();
    list.hidden = list.children.length === 0;
    refresh();
  });
  li.append(forget);
  list.append(li);
  list.hidden = false;
}

/**
 * Uploads a reload interrupted go on by themselves, unless this browser kept no copy of the
 * file (then it can only be forgotten: another tab may also be running it); downloads are
 * offered again, but the one the address already opens.
 */
async function resumeUnfinished() {
  const opening = linkFromHash();
  for (const t of await node.transfers()) {
    if (t.kind === 'upload' && t.resumable) {
      upload({ name: t.name, size: t.size }, t.id);
    } else if (t.kind === 'upload') {
      interruptedRow(t, 'uploading', null);
    } else if (t.kind === 'download' && t.link && t.link.replace(/^shardweb:/, '') !== opening) {
      interruptedRow(t, 'downloading', () => {
        location.hash = t.link.replace(/^shardweb:/, '');
      });
    }
  }
}

async function main() {
  wire();
  navigator.serviceWorker?.register('sw.js').catch(() => {});
  try {
    node = await Node.start();
  } catch (e) {
    $('connection').textContent = 'Offline';
    fail(e);
    return;
  }
  node.on(() => refreshNode().catch(() => {}));
  refresh();
  setInterval(() => refreshNode().catch(() => {}), 5000);
  const link = linkFromHash();
  if (link) openLink(link);
  else say('Ready.');
  resumeUnfinished().catch(fail);
}

main();
