/**
 * The node's Web Worker: it loads the wasm node and runs every codec and network step, so the
 * page's thread never does. The facade in `index.ts` starts it and talks to it by messages.
 */

import init, { WasmNode } from '../pkg/shardweb_wasm.js';
import { toWire } from './errors.js';
import type { Call, Reply, StreamAsk, StreamReply } from './protocol.js';

interface WorkerScope {
  postMessage(message: Reply, transfer?: Transferable[]): void;
  onmessage: ((event: MessageEvent<Call>) => void) | null;
}

const scope = globalThis as unknown as WorkerScope;
let node: WasmNode | undefined;
const aborts = new Map<number, AbortController>();

function post(message: Reply, transfer: Transferable[] = []): void {
  scope.postMessage(message, transfer);
}

function running(): WasmNode {
  if (node === undefined) {
    throw Object.assign(new Error('the node is not started'), { code: 'STOPPED' });
  }
  return node;
}

/** Options for the wasm node, with the page's callbacks replaced by messages. */
function withProgress(id: number, options: unknown): Record<string, unknown> {
  const controller = new AbortController();
  aborts.set(id, controller);
  return {
    ...(options as Record<string, unknown> | undefined),
    signal: controller.signal,
    onProgress: (progress: unknown) => post({ id, progress: progress as never }),
  };
}

/**
 * A download's plaintext, handed to the page over a port of its own with each chunk's buffer
 * transferred, not copied: a transferred `ReadableStream` copies every chunk out of this thread
 * and into the page's (about 1 s of CPU per 256 MiB of 4 MiB chunks, measured in Chromium).
 */
function portOf(stream: ReadableStream<Uint8Array>): MessagePort {
  const { port1, port2 } = new MessageChannel();
  const reader = stream.getReader();
  port1.onmessage = async ({ data }: MessageEvent<StreamAsk>) => {
    if (data === 'cancel') {
      port1.close();
      await reader.cancel().catch(() => {});
      return;
    }
    let reply: StreamReply;
    let transfer: Transferable[] = [];
    try {
      const { done, value } = await reader.read();
      if (done) {
        reply = { done: true };
      } else {
        // Only a buffer that is the chunk's alone moves; a view of a larger one is copied.
        const whole = value.buffer instanceof ArrayBuffer && value.byteOffset === 0 && value.byteLength === value.buffer.byteLength;
        const chunk = whole ? value : value.slice();
        reply = { value: chunk };
        transfer = [chunk.buffer];
      }
    } catch (e) {
      reply = { error: toWire(e) };
    }
    port1.postMessage(reply, transfer);
    if (!('value' in reply)) {
      port1.close();
    }
  };
  return port2;
}

async function run(call: Call): Promise<[unknown, Transferable[]]> {
  const [a, b] = call.args;
  switch (call.op) {
    case 'start': {
      await init();
      node = (await WasmNode.start({
        ...(a as Record<string, unknown>),
        onEvent: (event: Record<string, unknown> & { type: string }) => post({ event }),
      })) as WasmNode;
      return [{ peerId: node.peerId }, []];
    }
    case 'put':
      return [await running().put(a as Blob, withProgress(call.id, b)), []];
    case 'resume':
      return [await running().resume(a as string, withProgress(call.id, b)), []];
    case 'get': {
      const result = (await running().get(a as string, withProgress(call.id, b))) as {
        stream: ReadableStream<Uint8Array>;
      };
      const port = portOf(result.stream);
      return [{ ...result, stream: port }, [port]];
    }
    case 'transfers':
      return [await running().transfers(), []];
    case 'cancelTransfer':
      return [await running().cancelTransfer(a as string), []];
    case 'files':
      return [await running().files(), []];
    case 'remove':
      return [await running().remove(a as string), []];
    case 'peers':
      return [await running().peers(), []];
    case 'stats':
      return [await running().stats(), []];
    case 'abort':
      aborts.get(a as number)?.abort();
      return [undefined, []];
    case 'stop':
      if (node !== undefined) {
        await node.stop();
        node = undefined;
      }
      return [undefined, []];
  }
}

scope.onmessage = (event: MessageEvent<Call>) => {
  const call = event.data;
  run(call).then(
    ([ok, transfer]) => post({ id: call.id, ok }, transfer),
    (error: unknown) => post({ id: call.id, error: toWire(error) }),
  ).finally(() => aborts.delete(call.id));
};
