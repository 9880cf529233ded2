/** Messages between the page's facade and the node's worker. */

import type { WireError } from './errors.js';

/** The operations the worker runs. */
export type Op =
  | 'start'
  | 'put'
  | 'resume'
  | 'get'
  | 'transfers'
  | 'cancelTransfer'
  | 'files'
  | 'remove'
  | 'peers'
  | 'stats'
  | 'stop'
  | 'abort';

/** Page to worker: run `op` with `args`; `id` names the reply. */
export interface Call {
  id: number;
  op: Op;
  args: unknown[];
}

/** Worker to page. */
export type Reply =
  | { id: number; ok: unknown }
  | { id: number; error: WireError }
  | { id: number; progress: RawProgress }
  | { event: Record<string, unknown> & { type: string } };

/** Progress as the wasm node reports it. */
export interface RawProgress {
  transferId: string;
  phase: 'upload' | 'download';
  bytes: number;
  total: number | null;
  wireBytes: number;
  done: boolean;
}

/**
 * Page to worker on a download's own port: the next chunk, or an end to it. The page asks
 * for one chunk at a time.
 */
export type StreamAsk = 'pull' | 'cancel';

/** Worker to page on a download's port: a chunk (its buffer transferred), the end, or why not. */
export type StreamReply = { value: Uint8Array } | { done: true } | { error: WireError };
