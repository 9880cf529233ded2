/**
 * The node's Web Worker: it loads the wasm node and runs every codec and network step, so the
 * page's thread never does. The facade in `index.ts` starts it and talks to it by messages.
 */

import init, { WasmNode } from '../pkg/shardweb_wasm.js';
import { toWire } from './errors.js';
import type { Call, Reply } from './protocol.js';

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
      return [result, [result.stream]];
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
