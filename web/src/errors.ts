/**
 * Errors the node rejects with. Every one is a `ShardwebError` with a stable `code`; the
 * common cases have their own subclass, so `err instanceof WrongKeyError` works.
 */

/** The stable codes of {@link ShardwebError}. */
export type ErrorCode =
  | 'BAD_LINK'
  | 'INVALID_OPTIONS'
  | 'NO_RELAYS'
  | 'NOT_FOUND'
  | 'WRONG_KEY'
  | 'NOT_ENOUGH_SHARDS'
  | 'CORRUPT'
  | 'UPLOAD_FAILED'
  | 'QUOTA_EXCEEDED'
  | 'STORAGE'
  | 'CRYPTO'
  | 'UNSUPPORTED'
  | 'STOPPED'
  | 'FILE_UNREADABLE'
  | 'NO_SUCH_TRANSFER'
  | 'BUSY'
  | 'WORKER';

/** Any error from the node. */
export class ShardwebError extends Error {
  /** What went wrong, stable across versions. */
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string) {
    super(message);
    this.name = 'ShardwebError';
    this.code = code;
  }
}

/** The link is malformed. */
export class BadLinkError extends ShardwebError {
  constructor(message: string) {
    super('BAD_LINK', message);
    this.name = 'BadLinkError';
  }
}

/** No relay or peer reachable has the file (or, to `remove` it, this browser keeps no such file). */
export class NotFoundError extends ShardwebError {
  constructor(message: string) {
    super('NOT_FOUND', message);
    this.name = 'NotFoundError';
  }
}

/** The link's key is not the file's key. */
export class WrongKeyError extends ShardwebError {
  constructor(message: string) {
    super('WRONG_KEY', message);
    this.name = 'WrongKeyError';
  }
}

/** Fewer than k good shards of a stripe could be found. */
export class NotEnoughShardsError extends ShardwebError {
  /** The stripe that cannot be rebuilt. */
  readonly stripe: number;
  /** Good shards found for it. */
  readonly found: number;
  /** Shards needed (k). */
  readonly needed: number;

  constructor(message: string, stripe: number, found: number, needed: number) {
    super('NOT_ENOUGH_SHARDS', message);
    this.name = 'NotEnoughShardsError';
    this.stripe = stripe;
    this.found = found;
    this.needed = needed;
  }
}

/** The browser's storage for this site (or the node's own limit) is full. */
export class QuotaExceededError extends ShardwebError {
  constructor(message: string) {
    super('QUOTA_EXCEEDED', message);
    this.name = 'QuotaExceededError';
  }
}

/** No relay could be reached. */
export class NoRelaysError extends ShardwebError {
  constructor(message: string) {
    super('NO_RELAYS', message);
    this.name = 'NoRelaysError';
  }
}

/** The transfer is running, in this tab or another: it cannot be resumed or cancelled now. */
export class BusyError extends ShardwebError {
  constructor(message: string) {
    super('BUSY', message);
    this.name = 'BusyError';
  }
}

/** An error as it crosses from the worker. */
export interface WireError {
  message: string;
  code?: string;
  stripe?: number;
  found?: number;
  needed?: number;
}

const CODES: ReadonlySet<string> = new Set<ErrorCode>([
  'BAD_LINK', 'INVALID_OPTIONS', 'NO_RELAYS', 'NOT_FOUND', 'WRONG_KEY', 'NOT_ENOUGH_SHARDS',
  'CORRUPT', 'UPLOAD_FAILED', 'QUOTA_EXCEEDED', 'STORAGE', 'CRYPTO', 'UNSUPPORTED', 'STOPPED',
  'FILE_UNREADABLE', 'NO_SUCH_TRANSFER', 'BUSY', 'WORKER',
]);

function isCode(code: string | undefined): code is ErrorCode {
  return code !== undefined && CODES.has(code);
}

/** Rebuilds the right error class from what the worker sent. */
export function fromWire(e: WireError): ShardwebError {
  const code = isCode(e.code) ? e.code : 'WORKER';
  switch (code) {
    case 'BAD_LINK':
      return new BadLinkError(e.message);
    case 'NOT_FOUND':
      return new NotFoundError(e.message);
    case 'WRONG_KEY':
      return new WrongKeyError(e.message);
    case 'NOT_ENOUGH_SHARDS':
      return new NotEnoughShardsError(e.message, e.stripe ?? 0, e.found ?? 0, e.needed ?? 0);
    case 'QUOTA_EXCEEDED':
      return new QuotaExceededError(e.message);
    case 'NO_RELAYS':
      return new NoRelaysError(e.message);
    case 'BUSY':
      return new BusyError(e.message);
    default:
      return new ShardwebError(code, e.message);
  }
}

/** What the worker sends for any thrown value. */
export function toWire(e: unknown): WireError {
  if (e !== null && typeof e === 'object') {
    const o = e as Record<string, unknown>;
    const num = (k: string): number | undefined => (typeof o[k] === 'number' ? (o[k] as number) : undefined);
    return {
      message: typeof o.message === 'string' ? o.message : String(e),
      code: typeof o.code === 'string' ? o.code : undefined,
      stripe: num('stripe'),
      found: num('found'),
      needed: num('needed'),
    };
  }
  return { message: String(e) };
}
