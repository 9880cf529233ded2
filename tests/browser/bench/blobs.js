// What the benchmark and profile pages share: files of random bytes, and reading a stream to
// its end.

/** A Blob of `bytes` random bytes, made in 1 MiB parts. */
export function randomBlob(bytes) {
  const chunk = 1 << 20;
  const parts = [];
  for (let i = 0; i < bytes; i += chunk) {
    const part = new Uint8Array(Math.min(chunk, bytes - i));
    for (let j = 0; j < part.length; j += 65536) crypto.getRandomValues(part.subarray(j, j + 65536));
    parts.push(part);
  }
  return new Blob(parts);
}

/** Reads `stream` to its end; resolves to the number of bytes read. */
export async function drain(stream) {
  let n = 0;
  const reader = stream.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return n;
    n += value.byteLength;
  }
}
