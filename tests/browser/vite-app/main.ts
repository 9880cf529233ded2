// An app as a user would write it: the package from npm, its types, a put and a get.
import { Node, ShardwebError, type Progress } from 'shardweb';

function randomBytes(n: number): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) {
    crypto.getRandomValues(bytes.subarray(i, Math.min(i + 65536, n)));
  }
  return bytes;
}

async function run(): Promise<string> {
  const node = await Node.start({ relays: [location.origin], storeName: 'vite-app' });
  const bytes = randomBytes(3_000_000);
  const file = new File([bytes], 'vite.bin', { type: 'application/octet-stream' });
  let last: Progress | undefined;
  const { url } = await node.put(file, { k: 2, m: 1, onProgress: (p) => (last = p) });
  const got = await node.get(url);
  const back = new Uint8Array(await new Response(got.stream).arrayBuffer());
  const same = back.length === bytes.length && back.every((b, i) => b === bytes[i]);
  let code = '';
  try {
    await node.get('not a link');
  } catch (e) {
    code = e instanceof ShardwebError ? e.code : 'not a ShardwebError';
  }
  await node.stop();
  return same && last?.done === true ? `ok ${got.name} ${got.size} ${code}` : 'mismatch';
}

const out = document.getElementById('result');
run().then(
  (text) => {
    if (out) out.textContent = text;
  },
  (e: unknown) => {
    if (out) out.textContent = `error ${e instanceof Error ? e.message : String(e)}`;
  },
);
