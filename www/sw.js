// The page's service worker: it turns a stream of plaintext handed over by the page into a
// file download, so that multi-GB files go to disk without sitting in memory.

const downloads = new Map();

self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));

self.addEventListener('message', (event) => {
  const data = event.data;
  if (data?.type === 'shardweb-ping') {
    event.ports[0]?.postMessage({ type: 'shardweb-pong' });
  } else if (data?.type === 'shardweb-download' && data.stream instanceof ReadableStream) {
    downloads.set(data.id, data);
    // The page opens the download once told that the stream is here.
    event.ports[0]?.postMessage({ type: 'shardweb-held', id: data.id });
    // A download not claimed within a minute is dropped.
    setTimeout(() => downloads.delete(data.id), 60_000);
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
