/** The public types of the `shardweb` package. */

/** How {@link Node.start} starts a node. */
export interface StartOptions {
  /**
   * Relays to bootstrap from: their HTTP URLs (the node reads each one's `/api/info`).
   * Default: this page's origin, for a page a relay serves.
   */
  relays?: string[];
  /** The page that opens share links (`<pageUrl>#<id>.<key>`). Default: the first relay's URL. */
  pageUrl?: string;
  /** The IndexedDB database this node keeps its files in. Default `"shardweb"`. */
  storeName?: string;
  /** A cap, in bytes, on the shards this node keeps, below the browser's own quota. */
  maxStoreBytes?: number;
  /**
   * Whether downloads fetch shards from relays over HTTP (`/api/shards/<id>`) and uploads put
   * them by signed requests (`POST /api/shards`), where relays take them so: faster, and
   * checked all the same. Default `true`; `false` keeps every transfer on libp2p (over plain
   * `http://`, an observer on the path sees which shard ids move, though never the file).
   */
  shardsOverHttp?: boolean;
  /** The browser console's log level. Default `"warn"`. */
  logLevel?: 'error' | 'warn' | 'info' | 'debug' | 'trace';
  /** Where the worker script is, when a bundler cannot find it. Default: next to this module. */
  workerUrl?: string | URL;
}

/** Progress of one transfer, reported about ten times a second and once at the end. */
export interface Progress {
  /** The transfer's id (uploads can be resumed by it). */
  transferId: string;
  /** Which way the bytes go. */
  phase: 'upload' | 'download';
  /** Plaintext bytes encoded (upload) or delivered (download). */
  bytes: number;
  /** Plaintext bytes in all. */
  total: number | null;
  /** Shard bytes acknowledged by holders (upload) or received (download). */
  wireBytes: number;
  /** Plaintext bytes per second, averaged over the last seconds. */
  bytesPerSecond: number;
  /** Seconds left at that speed, when known. */
  secondsLeft: number | null;
  /** Whether this is the final report. */
  done: boolean;
}

/** How {@link Node.put} uploads. */
export interface PutOptions {
  /** Data shards per stripe: any k of the k + m bring a stripe back. Default 4. */
  k?: number;
  /** Parity shards per stripe: how many may be lost. Default 2. */
  m?: number;
  /** Plaintext bytes per segment. Default 4 MiB. */
  segmentSize?: number;
  /** The name recorded in the file's manifest. Default: the `File`'s name. */
  name?: string;
  /** The MIME type recorded. Default: the `Blob`'s type. */
  type?: string;
  /** Keep the file in this browser only and serve it from here through relay circuits. */
  local?: boolean;
  /** Keep the shards in this browser too (default true), to serve and to resume from. */
  keep?: boolean;
  /**
   * Keep a copy of the file with the upload's record, so that a reload can resume it (default
   * true). `false` spares the room that copy takes (the file's size, until the upload ends)
   * and the browser's time to write it; a reload then leaves a record that can only be
   * cancelled. For data the app can produce again.
   */
  resumable?: boolean;
  /** Called with progress. */
  onProgress?: (progress: Progress) => void;
  /** Cancels the upload: it rejects with code `STOPPED` and leaves nothing in this browser. */
  signal?: AbortSignal;
}

/** A finished upload. */
export interface PutResult {
  /** The native link, `shardweb:<manifest-id>.<key>`. */
  link: string;
  /** The page link to share, `<pageUrl>#<manifest-id>.<key>`. */
  url: string;
  /** The manifest id (public). */
  manifestId: string;
  /** The file's name. */
  name: string;
  /** Its size in bytes. */
  size: number;
}

/** How {@link Node.get} downloads. */
export interface GetOptions {
  /** Keep the fetched shards in this browser (default true), to serve them on and resume. */
  keep?: boolean;
  /** Called with progress. */
  onProgress?: (progress: Progress) => void;
}

/** An opened file: what it is, and its bytes as they arrive. */
export interface GetResult {
  /** The manifest id. */
  manifestId: string;
  /** The file's name, as uploaded. */
  name: string;
  /** Its MIME type, possibly empty. */
  type: string;
  /** Its size in bytes. */
  size: number;
  /** The plaintext, verified, in order. Reading it drives the download. */
  stream: ReadableStream<Uint8Array>;
}

/** An unfinished transfer, as kept across reloads. */
export interface Transfer {
  /** The id to resume or cancel it by. */
  id: string;
  /** Which way, and whether it runs now (`"upload:running"`). */
  kind: 'upload' | 'download' | 'upload:running' | 'download:running';
  /** The file's name. */
  name: string;
  /** Its MIME type. */
  type: string;
  /** Its size. */
  size: number;
  /** For a download, the link it opened. */
  link?: string;
  /**
   * Whether `resume` (an upload) or `get` (a download) can continue it. An upload whose file
   * was not kept with it (`resumable: false`, no room for the copy, or a reload before the
   * copy landed) cannot: `resume` rejects with `FILE_UNREADABLE`; cancel it instead.
   */
  resumable: boolean;
}

/** A file this browser keeps. */
export interface StoredFile {
  /** The manifest id. */
  manifestId: string;
  /** The native link (with its key; it never leaves this browser but through the user). */
  link: string;
  /** The file's name. */
  name: string;
  /** Its MIME type. */
  type: string;
  /** Its size. */
  size: number;
  /** How it came here. */
  origin: 'uploaded' | 'downloaded';
  /** When, in milliseconds since the epoch. */
  added: number;
}

/** A connected peer. */
export interface PeerInfo {
  /** Its libp2p peer id. */
  peerId: string;
  /** The address of the connection. */
  address: string;
  /** Whether it is a relay. */
  relay: boolean;
  /** For a relay, its URL. */
  url?: string;
}

/** A relay the node knows. */
export interface RelayInfo {
  url: string;
  peerId: string;
  /** The address dialled. */
  address: string;
  connected: boolean;
  /** The circuit address others reach this browser at, once the relay granted a slot. */
  reachableAt: string | null;
}

/** What the node reports about itself. */
export interface Stats {
  peerId: string;
  relays: RelayInfo[];
  /** Peers connected (relays included). */
  peers: number;
  store: {
    name: string;
    shards: number;
    /** Bytes of shards kept. */
    bytes: number;
    maxBytes: number | null;
    /** What the browser reports for this site. */
    usage: number | null;
    quota: number | null;
    /** Whether the browser granted persistent storage. */
    persisted: boolean | null;
  };
  memory: {
    /** The worker's wasm linear memory. */
    wasm: number;
    /** The worker's JavaScript heap, where the browser reports it. */
    jsHeap: number | null;
  };
  traffic: { bytesIn: number; bytesOut: number; served: number };
  /** Transfers running now. */
  transfers: number;
}

/** What the node reports as it runs. */
export type NodeEvent =
  | { type: 'relay'; url: string; connected: boolean }
  | { type: 'peer'; peerId: string; connected: boolean; address?: string }
  | { type: 'reachable'; address: string }
  | { type: 'unreachable'; address: string }
  | { type: 'downloaded'; manifestId: string };
