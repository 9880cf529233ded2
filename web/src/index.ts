/**
 * shardweb: a decentralized, end-to-end encrypted file store in which the browser is a full
 * node.
 *
 * ```ts
 * import { Node } from 'shardweb';
 * const node = await Node.start({ relays: ['http://127.0.0.1:8080'] });
 * const { url } = await node.put(file, { k: 4, m: 2, onProgress });
 * const { name, type, size, stream } = await node.get(url, { onProgress });
 * ```
 *
 * The node runs in a dedicated Web Worker that this module starts; every method here is a
 * message to it.
 */

import { ShardwebError, fromWire } from './errors.js';
import type { Call, Op, RawProgress, Reply, StreamAsk, StreamReply } from './protocol.js';
import type {
  GetOptions,
  GetResult,
  NodeEvent,
  PeerInfo,
  Progress,
  PutOptions,
  PutResult,
  StartOptions,
  Stats,
  StoredFile,
  Transfer,
} from './types.js';

export {
  BadLinkError,
  BusyError,
  NoRelaysError,
  NotEnoughShardsError,
  NotFoundError,
  QuotaExceededError,
  ShardwebError,
  WrongKeyError,
} from './errors.js';
export type { ErrorCode } from './errors.js';
export type * from './types.js';

interface Pending {
  resolve: (value: unknown) => void;
  reject: (error: ShardwebError) => void;
}

/** A progress callback; a download's outlives its call, until the last byte is delivered. */
interface Watcher {
  onProgress: (progress: Progress) => void;
  rate: Rate;
}

/** A smoothed transfer rate, for progress reports. */
class Rate {
  private started = 0;
  private lastTime = 0;
  private lastBytes = 0;
  private perSecond = 0;

  update(raw: RawProgress): Progress {
    const now = performance.now();
    if (this.started === 0) {
      this.started = now;
      this.lastTime = now;
      this.lastBytes = raw.bytes;
    } else if (now - this.lastTime >= 250 || raw.done) {
      const sample = ((raw.bytes - this.lastBytes) * 1000) / Math.max(now - this.lastTime, 1);
      this.perSecond = this.perSecond === 0 ? sample : this.perSecond * 0.7 + sample * 0.3;
      this.lastTime = now;
      this.lastBytes = raw.bytes;
    }
    const left = raw.total === null ? null : Math.max(raw.total - raw.bytes, 0);
    const secondsLeft = left === null || this.perSecond <= 0 ? null : left / this.perSecond;
    return { ...raw, bytesPerSecond: this.perSecond, secondsLeft: raw.done ? 0 : secondsLeft };
  }
}

type Listener = (event: NodeEvent) => void;

/** A running shardweb node. */
export class Node {
  readonly #worker: Worker;
  readonly #pending = new Map<number, Pending>();
  readonly #watchers = new Map<number, Watcher>();
  /** The downloads being read: each fails with the node. */
  readonly #streams = new Set<(reply: StreamReply) => void>();
  readonly #listeners = new Set<Listener>();
  #next = 1;
  /** Why the node can take no more calls: stopped, or its worker failed. */
  #ended: ShardwebError | undefined;
  #persisted: boolean | null = null;
  #peerId = '';
  /** The page that opens share links. */
  readonly pageUrl: string;

  private constructor(worker: Worker, pageUrl: string) {
    this.#worker = worker;
    this.pageUrl = pageUrl;
    worker.onmessage = (event: MessageEvent<Reply>) => this.#receive(event.data);
    worker.onerror = (event: ErrorEvent) => this.#fail(`the worker failed: ${event.message}`);
  }

  /** This node's libp2p peer id. */
  get peerId(): string {
    return this.#peerId;
  }

  /**
   * Starts a node in its own worker and connects it to the relays. Rejects with
   * `NoRelaysError` when relays were given and none could be reached.
   */
  static async start(options: StartOptions = {}): Promise<Node> {
    const relays = options.relays ?? (typeof location === 'undefined' ? [] : [location.origin]);
    const first = relays[0];
    const pageUrl = options.pageUrl ?? (first === undefined ? '' : `${first.replace(/\/+$/, '')}/`);
    // Written out in full so that bundlers (Vite, webpack) find the worker and bundle it.
    const worker =
      options.workerUrl === undefined
        ? new Worker(new URL('./worker.js', import.meta.url), { type: 'module', name: 'shardweb' })
        : new Worker(options.workerUrl, { type: 'module', name: 'shardweb' });
    const node = new Node(worker, pageUrl);
    try {
      const started = (await node.#call('start', [
        {
          relays,
          storeName: options.storeName,
          maxStoreBytes: options.maxStoreBytes,
          logLevel: options.logLevel,
          shardsOverHttp: options.shardsOverHttp,
        },
      ])) as { peerId: string };
      node.#peerId = started.peerId;
    } catch (e) {
      node.#worker.terminate();
      throw e;
    }
    node.#persisted = await persist();
    return node;
  }

  /** Uploads a file; resolves with its share link once every shard and the manifest are stored. */
  async put(file: Blob, options: PutOptions = {}): Promise<PutResult> {
    const { onProgress, signal, ...rest } = options;
    const result = (await this.#call('put', [file, rest], onProgress, signal)) as Omit<PutResult, 'url'>;
    return { ...result, url: this.#url(result.link) };
  }

  /**
   * Resumes an unfinished upload (see {@link Node.transfers}) after a reload. One running in
   * this tab or another is refused with `BUSY`; an id no unfinished transfer has, with
   * `NO_SUCH_TRANSFER`; a download's id, with `INVALID_OPTIONS` (`get` its link again).
   */
  async resume(
    transferId: string,
    options: { onProgress?: (p: Progress) => void; signal?: AbortSignal } = {},
  ): Promise<PutResult> {
    const result = (await this.#call('resume', [transferId, {}], options.onProgress, options.signal)) as Omit<
      PutResult,
      'url'
    >;
    return { ...result, url: this.#url(result.link) };
  }

  /**
   * Opens a share link (a page URL with `#…`, `shardweb:…`, or `<id>.<key>`). Rejects early
   * for a malformed link, an unknown file or a wrong key; the bytes then arrive through
   * `stream`, verified and in order.
   */
  async get(link: string, options: GetOptions = {}): Promise<GetResult> {
    const { onProgress, ...rest } = options;
    const id = this.#next++;
    const opened = (await this.#call('get', [link, rest], onProgress, undefined, id)) as Omit<GetResult, 'stream'> & {
      stream: MessagePort;
    };
    // The download's progress goes on after the call: to its last report, or until its stream
    // ends short.
    return { ...opened, stream: this.#streamOf(opened.stream, () => this.#watchers.delete(id)) };
  }

  /** Unfinished transfers kept across reloads. */
  async transfers(): Promise<Transfer[]> {
    return (await this.#call('transfers', [])) as Transfer[];
  }

  /**
   * Forgets an unfinished transfer and whatever it kept in this browser. A transfer that is
   * running (`kind` ends in `:running`) is refused with `BUSY`: stop it with the `signal`
   * given to the call that runs it. An id no unfinished transfer has is refused with
   * `NO_SUCH_TRANSFER`.
   */
  async cancelTransfer(transferId: string): Promise<void> {
    await this.#call('cancelTransfer', [transferId]);
  }

  /** The files this browser keeps. */
  async files(): Promise<StoredFile[]> {
    return (await this.#call('files', [])) as StoredFile[];
  }

  /**
   * Removes a file from this browser (its shards and manifest; copies elsewhere remain). A
   * file this browser does not keep is refused with `NOT_FOUND`.
   */
  async remove(manifestId: string): Promise<void> {
    await this.#call('remove', [manifestId]);
  }

  /** The peers connected now. */
  async peers(): Promise<PeerInfo[]> {
    return (await this.#call('peers', [])) as PeerInfo[];
  }

  /** What the node reports about itself. */
  async stats(): Promise<Stats> {
    const stats = (await this.#call('stats', [])) as Stats;
    stats.store.persisted = this.#persisted;
    return stats;
  }

  /** Listens to the node's events; returns a function that stops listening. */
  on(listener: (event: NodeEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * Stops the node and its worker. Calls still waiting reject with code `STOPPED`, and so does
   * every call after (with `WORKER` once the worker has failed); stopping again does nothing.
   */
  async stop(): Promise<void> {
    if (this.#ended !== undefined) {
      this.#worker.terminate();
      return;
    }
    try {
      await this.#call('stop', []);
    } finally {
      this.#worker.terminate();
      this.#fail('the node was stopped', 'STOPPED');
    }
  }

  #url(link: string): string {
    const fragment = link.replace(/^shardweb:/, '');
    return this.pageUrl === '' ? link : `${this.pageUrl}#${fragment}`;
  }

  /**
   * The plaintext the worker hands over `port`, a chunk per pull (one asked for ahead once
   * reading has started), each chunk's buffer moved rather than copied. Errors arrive typed,
   * as a call's do; when the node stops or its worker fails, the stream errors too: at once
   * while a chunk is being asked for, else at the next read.
   */
  #streamOf(port: MessagePort, cut: () => void): ReadableStream<Uint8Array> {
    let waiting: ((reply: StreamReply) => void) | undefined;
    let failed: StreamReply | undefined;
    // `cut` runs when the stream ends short (an error, a cancel): a download read to its end
    // reports its last progress itself, on another channel, maybe after the last chunk.
    const end = (whole = false): void => {
      this.#streams.delete(fail);
      port.close();
      if (!whole) {
        cut();
      }
    };
    // What the node's end sends it: the reply to the pull waiting, or why none will come.
    const settle = (reply: StreamReply): void => {
      const resolve = waiting;
      waiting = undefined;
      resolve?.(reply);
    };
    const fail = (reply: StreamReply): void => {
      failed = reply;
      port.postMessage('cancel' satisfies StreamAsk);
      end();
      settle(reply);
    };
    this.#streams.add(fail);
    port.onmessage = ({ data }: MessageEvent<StreamReply>) => settle(data);
    const ask = (): Promise<StreamReply> =>
      failed
        ? Promise.resolve(failed)
        : new Promise<StreamReply>((resolve) => {
            waiting = resolve;
            port.postMessage('pull' satisfies StreamAsk);
          });
    // Nothing is asked before the first read, so a stream cancelled unread starts no download
    // (no shard fetched, nothing recorded). From the first read on, the next chunk is asked
    // for once the reader of the one before has run (as a stream with a high-water mark of
    // one would ask it), and an end or an error that comes ahead ends the stream at once.
    let ahead: Promise<StreamReply> | undefined;
    let cancelled = false;
    let over = false;
    // Ends the stream with a reply that carries no chunk: its end, or why it failed.
    const close = (reply: StreamReply, controller: ReadableStreamDefaultController<Uint8Array>): void => {
      if (over || cancelled || 'value' in reply) {
        return;
      }
      over = true;
      end('done' in reply);
      if ('done' in reply) {
        controller.close();
      } else {
        controller.error(fromWire(reply.error));
      }
    };
    return new ReadableStream<Uint8Array>(
      {
        pull: async (controller) => {
          const reply = failed ?? (await (ahead ?? ask()));
          ahead = undefined;
          if (!('value' in reply)) {
            close(reply, controller);
            return;
          }
          controller.enqueue(reply.value);
          queueMicrotask(() => {
            if (cancelled || over || ahead !== undefined) {
              return;
            }
            const next = ask();
            ahead = next;
            void next.then((r) => close(r, controller));
          });
        },
        cancel: () => {
          cancelled = true;
          port.postMessage('cancel' satisfies StreamAsk);
          end();
          waiting = undefined;
        },
      },
      { highWaterMark: 0 },
    );
  }

  #call(
    op: Op,
    args: unknown[],
    onProgress?: (p: Progress) => void,
    signal?: AbortSignal,
    id = this.#next++,
  ): Promise<unknown> {
    return new Promise((resolve, reject) => {
      if (this.#ended !== undefined) {
        reject(this.#ended);
        return;
      }
      if (signal?.aborted) {
        reject(new ShardwebError('STOPPED', 'the transfer was cancelled before it started'));
        return;
      }
      const abort = (): void => this.#post({ id: this.#next++, op: 'abort', args: [id] });
      signal?.addEventListener('abort', abort, { once: true });
      const settled = (): void => signal?.removeEventListener('abort', abort);
      this.#pending.set(id, {
        resolve: (value) => {
          settled();
          resolve(value);
        },
        reject: (error) => {
          settled();
          reject(error);
        },
      });
      if (onProgress !== undefined) {
        this.#watchers.set(id, { onProgress, rate: new Rate() });
      }
      this.#post({ id, op, args });
    });
  }

  #post(call: Call): void {
    this.#worker.postMessage(call);
  }

  #receive(reply: Reply): void {
    if ('event' in reply) {
      for (const listener of this.#listeners) {
        listener(reply.event as unknown as NodeEvent);
      }
      return;
    }
    if ('progress' in reply) {
      const watcher = this.#watchers.get(reply.id);
      if (reply.progress.done) {
        this.#watchers.delete(reply.id);
      }
      watcher?.onProgress(watcher.rate.update(reply.progress));
      return;
    }
    const pending = this.#pending.get(reply.id);
    if (pending === undefined) {
      return;
    }
    this.#pending.delete(reply.id);
    if ('error' in reply) {
      this.#watchers.delete(reply.id);
      pending.reject(fromWire(reply.error));
    } else {
      pending.resolve(reply.ok);
    }
  }

  #fail(message: string, code: 'WORKER' | 'STOPPED' = 'WORKER'): void {
    this.#ended ??= new ShardwebError(code, message);
    for (const pending of this.#pending.values()) {
      pending.reject(new ShardwebError(code, message));
    }
    this.#pending.clear();
    this.#watchers.clear();
    for (const fail of [...this.#streams]) {
      fail({ error: { message, code } });
    }
  }
}

/** Asks the browser to keep this site's storage under pressure; whether it agreed. */
async function persist(): Promise<boolean | null> {
  try {
    if (typeof navigator !== 'undefined' && navigator.storage?.persist) {
      return await navigator.storage.persist();
    }
  } catch {
    // Not granted, or not in this context: the store still works, and may be evicted.
  }
  return null;
}
