// Request discipline shared by the cloud block sources and sinks: one retry
// layer with full jitter, a timeout around every request, bounded concurrency.
// Peers learned each of these the hard way: retries with no delay fail in
// microseconds, SDK transfers with no timeout hang for ever, and unbounded
// fan-out trips per-account quotas that every worker shares.

import { TransientError, toError } from '../../shared/core/errors.js';

export interface RetryOptions {
  /** Total tries, the first included (≥ 1). */
  attempts: number;
  /** Cap of the first backoff window; window n is min(maxMs, baseMs · 2^n). */
  baseMs: number;
  maxMs: number;
  /** Whether this error may go away on its own (throttling, 5xx, timeout). */
  isRetryable: (err: Error, attempt: number) => boolean;
  sleep?: (ms: number) => Promise<void>;
  /** Uniform in [0, 1). */
  random?: () => number;
  /** Called before each wait, e.g. to log the retry. */
  onRetry?: (err: Error, attempt: number, delayMs: number) => void;
}

export const defaultSleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Full-jitter delay for retry number `retry` (0 = first retry). */
export function fullJitterDelay(retry: number, baseMs: number, maxMs: number, random: () => number = Math.random): number {
  // 2^retry overflows to Infinity for large retry counts; min() keeps it at maxMs.
  const window = Math.min(maxMs, baseMs * 2 ** retry);
  return Math.floor(random() * window);
}

/**
 * Runs `fn` until it succeeds, it throws something not retryable, or the
 * attempts are spent; then rethrows the last error unchanged. `fn` gets the
 * attempt number (1-based).
 */
export async function withRetries<T>(fn: (attempt: number) => Promise<T>, opts: RetryOptions): Promise<T> {
  const attempts = Math.max(1, Math.floor(opts.attempts));
  const sleep = opts.sleep ?? defaultSleep;
  const random = opts.random ?? Math.random;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (thrown) {
      const err = toError(thrown);
      if (attempt >= attempts || !opts.isRetryable(err, attempt)) throw err;
      const delay = fullJitterDelay(attempt - 1, opts.baseMs, opts.maxMs, random);
      opts.onRetry?.(err, attempt, delay);
      await sleep(delay);
    }
  }
}

/** Thrown when a request outlived its timeout. Retryable: the next try may be fast. */
export class RequestTimeoutError extends TransientError {}

/**
 * Runs `fn` with an AbortSignal that fires after `ms`, and stops waiting at
 * that moment even if `fn` ignores the signal (an SDK body stream that
 * stalls after the headers does exactly that).
 */
export async function withTimeout<T>(ms: number, what: string, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const controller = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const err = new RequestTimeoutError(
        `${what} got no complete answer within ${ms} ms; it is retried, and if this keeps happening check the network path (private endpoint, proxy) or raise requestTimeoutMs`,
      );
      controller.abort(err);
      reject(err);
    }, ms);
  });
  try {
    return await Promise.race([fn(controller.signal), timedOut]);
  } finally {
    clearTimeout(timer);
  }
}

/** At most `concurrency` calls of `run` are in progress; the rest wait their turn in order. */
export function createLimiter(concurrency: number) {
  const limit = Math.max(1, Math.floor(concurrency));
  let active = 0;
  const waiting: Array<() => void> = [];
  return {
    async run<T>(fn: () => Promise<T>): Promise<T> {
      if (active >= limit) await new Promise<void>((resolve) => waiting.push(resolve));
      else active++;
      try {
        return await fn();
      } finally {
        // Hand the slot straight to the next waiter so `active` never dips and re-races.
        const next = waiting.shift();
        if (next) next();
        else active--;
      }
    },
  };
}

/**
 * Write-behind for sinks: `submit` starts a write in the background and only
 * waits when `concurrency` writes are already in flight (backpressure). The
 * first failure is reported by the next `submit` or by `drain`.
 */
export function createWriteBehind(concurrency: number) {
  const limit = Math.max(1, Math.floor(concurrency));
  const inflight = new Set<Promise<void>>();
  let failure: Error | undefined;
  return {
    get failure() {
      return failure;
    },
    async submit(task: () => Promise<void>): Promise<void> {
      if (failure) throw failure;
      while (inflight.size >= limit) await Promise.race(inflight);
      if (failure) throw failure;
      const p: Promise<void> = task()
        .catch((e) => {
          failure ??= toError(e);
        })
        .finally(() => inflight.delete(p));
      inflight.add(p);
    },
    /** Waits for every write in flight; throws the first failure, if any. */
    async drain(): Promise<void> {
      while (inflight.size > 0) await Promise.all([...inflight]);
      if (failure) throw failure;
    },
    /** Waits for every write in flight and ignores failures (abort path). */
    async settle(): Promise<void> {
      while (inflight.size > 0) await Promise.all([...inflight]);
    },
  };
}

/** Reads a streaming SDK body to bytes, and destroys the stream if the request is aborted. */
export async function readBody(body: unknown, signal: AbortSignal): Promise<Uint8Array> {
  if (body === undefined || body === null) return new Uint8Array(0);
  if (body instanceof Uint8Array) return body;
  const stream = body as { destroy?: (e?: Error) => void; transformToByteArray?: () => Promise<Uint8Array> };
  const onAbort = () => stream.destroy?.(toError(signal.reason));
  signal.addEventListener('abort', onAbort, { once: true });
  try {
    if (typeof stream.transformToByteArray === 'function') return await stream.transformToByteArray();
    if (typeof (body as AsyncIterable<Uint8Array>)[Symbol.asyncIterator] === 'function') {
      const chunks: Uint8Array[] = [];
      for await (const chunk of body as AsyncIterable<Uint8Array | string>) {
        chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
      }
      return Buffer.concat(chunks);
    }
    if (body instanceof Blob) return new Uint8Array(await body.arrayBuffer());
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
  throw new TypeError(`unexpected response body type ${Object.prototype.toString.call(body)}`);
}

let zeros = new Uint8Array(0);

export function isAllZero(data: Uint8Array): boolean {
  // Buffer.equals is a memcmp: far faster than a JS loop over a 512 KiB block.
  if (zeros.byteLength < data.byteLength) zeros = new Uint8Array(data.byteLength);
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength).equals(zeros.subarray(0, data.byteLength));
}

/** Ascending, without duplicates (returns the input when it already is). */
export function sortUnique(values: number[]): number[] {
  let sorted = true;
  for (let i = 1; i < values.length; i++) {
    if (values[i] <= values[i - 1]) {
      sorted = false;
      break;
    }
  }
  if (sorted) return values;
  const out = [...new Set(values)];
  out.sort((a, b) => a - b);
  return out;
}
