// The page's service worker: it turns a stream of plaintext handed over by the page into a
// file download, so that multi-GB files go to disk without sitting in memory.

const downloads = new Map();
/** How long one chunk of a save may take to come from the page. */
const PULL_TIMEOUT_MS = 120_000;

self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));

/**
 * The stream of the chunks the page sends over `port` (see the page's `chunksPort`): each is
 * asked for when the download wants it, and moved here, not copied.
 */
function streamFrom(port) {
  let waiting = null;
  port.onmessage = ({ data }) => {
    const resolve = waiting;
    waiting = null;
    resolve?.(data);
  };
  return new ReadableStream({
    async pull(controller) {
      // A page that went away without a word (it crashed) leaves no pull waiting for good.
      let timer;
      const reply = await new Promise((resolve) => {
        waiting = resolve;
        timer = setTimeout(() => resolve({ error: 'the page stopped sending the file' }), PULL_TIMEOUT_MS);
        port.postMessage('pull');
      });
      clearTimeout(timer);
      if (reply?.value instanceof Uint8Array) {
        controller.enqueue(reply.value);
        return;
      }
      port.close();
      if (reply?.done) controller.close();
      else controller.error(new Error(reply?.error ?? 'the page stopped the download'));
    },
    cancel() {
      port.postMessage('cancel');
      port.close();
    },
  });
}

self.addEventListener('message', (event) => {
  const data = event.data;
  // Pages say where to answer in `reply`; older ones sent the reply port alone.
  const reply = data?.reply ?? event.ports[0];
  if (data?.type === 'shardweb-ping') {
    reply?.postMessage({ type: 'shardweb-pong' });
  } else if (data?.type === 'shardweb-download') {
    const stream = data.chunks instanceof MessagePort ? streamFrom(data.chunks) : data.stream;
    if (!(stream instanceof ReadableStream)) return;
    downloads.set(data.id, { ...data, stream });
    // The page opens the download once told that the stream is here.
    reply?.postMessage({ type: 'shardweb-held', id: data.id });
    // A download not claimed within a minute is dropped, and the page stops fetching it.
    setTimeout(() => {
      if (downloads.delete(data.id)) stream.cancel().catch(() => {});
    }, 60_000);
  }
});

function attachment(name) {
  const fallback = name.replace(/[^\x20-\x7e]|["\\]/g, '_');
  return `attachment; filename="${fallback}"; filename*=UTF-8''${encodeURIComponent(name)}`;
}

self.addEventListener('fetch', (event) => {
  const url = new URL(event.request.url);
  const match = url.pathname.match(/\/_shardweb\/download\/([\w-]+)$/);
  if (!match) return;
  const download = downloads.get(match[1]);
  downloads.delete(match[1]);
  if (!download) {
    event.respondWith(new Response('This download is no longer available.', { status: 404 }));
    return;
  }
  const headers = {
    'Content-Type': 'application/octet-stream',
    'Content-Disposition': attachment(download.name || 'download'),
    'Content-Security-Policy': "default-src 'none'",
    'X-Content-Type-Options': 'nosniff',
  };
  if (Number.isFinite(download.size)) headers['Content-Length'] = String(download.size);
  event.respondWith(new Response(download.stream, { headers }));
});
