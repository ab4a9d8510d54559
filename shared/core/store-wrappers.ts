// Behaviour added around any ObjectStore (restic's backend wrappers, kopia's
// FaultyStorage): retry, fault injection, a concurrency cap, logging. Each one
// takes a store and returns a store, so they stack:
//   withLogging(withRetry(withThrottle(createS3Store(...), { maxConcurrent: 8 }), {...}), log)
// Only one layer should retry: the stores from worker/store-from-url.ts already
// come wrapped in withRetry with the SDK's own retries turned off.
import type { GetRange, ObjectInfo, ObjectReader, ObjectStore } from '../ports/object-store.js';
import type { Logger } from './logger.js';
import { AccessDeniedError, NotFoundError, TransientError, toError } from './errors.js';

export type StoreMethod = 'put' | 'putIfAbsent' | 'get' | 'stat' | 'list' | 'delete';

// ---------------------------------------------------------------------------
// Readers

/**
 * A wrapper's openReader, there only where the inner store has one (a caller falls back to
 * ranged gets otherwise): `aroundOpen` wraps the opening, `aroundRead` each of its reads.
 */
function wrapReaders(
  store: ObjectStore,
  aroundOpen: (key: string, open: () => Promise<ObjectReader>) => Promise<ObjectReader>,
  aroundRead: (key: string, offset: number, read: () => Promise<number>) => Promise<number>,
): Pick<ObjectStore, 'openReader'> {
  if (!store.openReader) return {};
  const openInner = store.openReader.bind(store);
  return {
    openReader: async (key) => {
      const reader = await aroundOpen(key, () => openInner(key));
      return { read: (offset, target) => aroundRead(key, offset, () => reader.read(offset, target)), close: () => reader.close() };
    },
  };
}

// ---------------------------------------------------------------------------
// Retry

export interface RetryOptions {
  /** Attempts in all, the first included (≥ 1). */
  attempts: number;
  /** Backoff cap before jitter for the first retry; doubles each retry. */
  baseMs: number;
  /** Upper bound of the backoff cap. */
  maxMs: number;
  /** Uniform [0, 1) source for the jitter (tests make it deterministic). */
  random?: () => number;
  sleep?: (ms: number) => Promise<void>;
  /** Told about every retry about to happen (for logs and metrics). */
  onRetry?: (info: { method: StoreMethod; key: string; attempt: number; delayMs: number; error: Error }) => void;
}

/**
 * Retries calls that failed with TransientError, with "full jitter" backoff:
 * retry n waits random() × min(maxMs, baseMs × 2^(n-1)). Anything else (not
 * found, access denied, a bug) fails at once: retrying cannot help it.
 *
 * putIfAbsent: a create whose reply was lost makes the retry find the object
 * and answer false although this caller made it. When an earlier attempt failed
 * and the object now holds exactly our bytes, the retry answers true. Callers
 * that put unique content (locks name their owner) are therefore told the truth.
 *
 * list: a listing that fails midway starts over and skips keys already yielded.
 */
export function withRetry(store: ObjectStore, opts: RetryOptions): ObjectStore {
  if (!Number.isInteger(opts.attempts) || opts.attempts < 1) {
    throw new RangeError(`withRetry: attempts must be a whole number ≥ 1 (got ${opts.attempts})`);
  }
  if (!(opts.baseMs >= 0) || !(opts.maxMs >= 0)) {
    throw new RangeError(`withRetry: baseMs and maxMs must be ≥ 0 (got ${opts.baseMs}, ${opts.maxMs})`);
  }
  const random = opts.random ?? Math.random;
  const sleep = opts.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const delayFor = (retry: number) => random() * Math.min(opts.maxMs, opts.baseMs * 2 ** (retry - 1));

  /** Waits before the next attempt, or rethrows when this error or this count ends the retries. */
  async function afterFailure(method: StoreMethod, key: string, attempt: number, thrown: unknown): Promise<void> {
    const error = toError(thrown);
    if (error.name !== 'TransientError') throw error;
    if (attempt >= opts.attempts) {
      if (opts.attempts === 1) throw error;
      throw new TransientError(`${error.message} (gave up after ${attempt} attempts)`, { cause: error });
    }
    const delayMs = delayFor(attempt);
    opts.onRetry?.({ method, key, attempt, delayMs, error });
    await sleep(delayMs);
  }

  async function run<T>(method: StoreMethod, key: string, fn: (attempt: number) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn(attempt);
      } catch (err) {
        await afterFailure(method, key, attempt, err);
      }
    }
  }

  return {
    location: store.location,
    put: (key, data) => run('put', key, () => store.put(key, data)),
    putIfAbsent: (key, data) =>
      run('putIfAbsent', key, async (attempt) => {
        const created = await store.putIfAbsent(key, data);
        if (created || attempt === 1) return created;
        const existing = await store.get(key).catch((err) => {
          if (toError(err).name === 'NotFoundError') return undefined;
          throw err;
        });
        return existing !== undefined && sameBytes(existing, data);
      }),
    get: (key, range) => run('get', key, () => store.get(key, range)),
    // Reading into the same target again is harmless, so a read is retried too.
    ...wrapReaders(
      store,
      (key, open) => run('get', key, open),
      (key, _offset, read) => run('get', key, read),
    ),
    stat: (key) => run('stat', key, () => store.stat(key)),
    delete: (key) => run('delete', key, () => store.delete(key)),
    list: (prefix) =>
      (async function* () {
        const seen = new Set<string>();
        for (let attempt = 1; ; attempt++) {
          try {
            for await (const info of store.list(prefix)) {
              if (seen.has(info.key)) continue;
              seen.add(info.key);
              yield info;
            }
            return;
          } catch (err) {
            await afterFailure('list', prefix, attempt, err);
          }
        }
      })(),
  };
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

// ---------------------------------------------------------------------------
// Fault injection

/** Thrown by a store wrapped in withFaults after a "crash": the simulated process is dead. */
export class SimulatedCrashError extends Error {
  readonly retryable = false;
  constructor(message: string) {
    super(message);
    this.name = 'SimulatedCrashError';
  }
}

export type FaultKind = 'transient' | 'not-found' | 'access-denied' | 'crash';

export interface FaultRule {
  /** Which method fails ("*": any). */
  method: StoreMethod | '*';
  /**
   * Which call fails: the n-th (1-based) call of `method` whose key matches
   * `key`, or any of a list of such numbers. Omitted: every matching call.
   */
  call?: number | number[];
  /** Only calls on keys starting with this string (or matching this RegExp); lists match on their prefix. */
  key?: string | RegExp;
  /**
   * What the caller sees. "crash" simulates kill -9: this call and every later
   * call on the wrapper throw SimulatedCrashError, and nothing more reaches the
   * store. Open a new store on the same place to play "the next run".
   */
  error: FaultKind | Error;
  /**
   * put / putIfAbsent: the upload is torn after this many bytes. The stores
   * drop a torn upload, so by default nothing appears; see `leavePartial`.
   * list: that many objects are yielded before the failure.
   */
  afterBytes?: number;
  /** With afterBytes on a put: leave the first afterBytes bytes under the key (a non-atomic backend, the worst case for retry code). */
  leavePartial?: boolean;
  /**
   * "before" (default): the call fails without reaching the store.
   * "after": the store does the work, then the caller gets the error (a reply
   * lost on the way back: the object exists but the caller was told it failed).
   */
  when?: 'before' | 'after';
}

/** Either fixed rules, or a function deciding per call (for random crash points). */
export type FaultScript = FaultRule[] | ((call: { method: StoreMethod; key: string; n: number }) => FaultRule | undefined);

export interface FaultyStore extends ObjectStore {
  /** Calls made so far, per method (including failed ones). */
  readonly calls: Readonly<Record<StoreMethod, number>>;
  /** Faults injected so far. */
  readonly injected: number;
  /** True once a "crash" fault fired. */
  readonly crashed: boolean;
}

/**
 * Fault injection per method and call number, for tests of retry and crash
 * consistency. Call numbers count calls of one method on the wrapper, 1-based.
 */
export function withFaults(store: ObjectStore, script: FaultScript): FaultyStore {
  const calls: Record<StoreMethod, number> = { put: 0, putIfAbsent: 0, get: 0, stat: 0, list: 0, delete: 0 };
  // Per-rule counters, so a rule with a key filter counts only the calls it matches.
  const ruleCalls = new Map<FaultRule, number>();
  let injected = 0;
  let crashed = false;

  const matches = (rule: FaultRule, key: string) =>
    rule.key === undefined ? true : typeof rule.key === 'string' ? key.startsWith(rule.key) : rule.key.test(key);

  /** The fault for this call, if any. Must be called exactly once per call. */
  function pick(method: StoreMethod, key: string): FaultRule | undefined {
    if (crashed) throw new SimulatedCrashError(`${store.location}: ${method} "${key}" after a simulated crash (the process is dead)`);
    const n = ++calls[method];
    if (typeof script === 'function') return script({ method, key, n }) ?? undefined;
    let hit: FaultRule | undefined;
    for (const rule of script) {
      if (rule.method !== '*' && rule.method !== method) continue;
      if (!matches(rule, key)) continue;
      const count = (ruleCalls.get(rule) ?? 0) + 1;
      ruleCalls.set(rule, count);
      const wanted = rule.call === undefined || (Array.isArray(rule.call) ? rule.call.includes(count) : rule.call === count);
      if (wanted && !hit) hit = rule;
    }
    return hit;
  }

  function errorFor(rule: FaultRule, method: StoreMethod, key: string): Error {
    injected++;
    const what = `${store.location} ${method} "${key}"`;
    if (rule.error instanceof Error) return rule.error;
    switch (rule.error) {
      case 'transient':
        return new TransientError(`${what}: injected transient failure${rule.afterBytes !== undefined ? ` after ${rule.afterBytes} bytes` : ''}`);
      case 'not-found':
        return new NotFoundError(`${what}: injected not-found`);
      case 'access-denied':
        return new AccessDeniedError(`${what}: injected access denied`);
      case 'crash':
        crashed = true;
        return new SimulatedCrashError(`${what}: simulated crash${rule.afterBytes !== undefined ? ` after ${rule.afterBytes} bytes` : ''}`);
    }
  }

  async function call<T>(method: StoreMethod, key: string, work: () => Promise<T>, torn?: (rule: FaultRule) => Promise<void>): Promise<T> {
    const rule = pick(method, key);
    if (!rule) return work();
    if (rule.when === 'after') {
      await work();
      throw errorFor(rule, method, key);
    }
    if (rule.afterBytes !== undefined && torn) await torn(rule);
    throw errorFor(rule, method, key);
  }

  const tornPut = (key: string, data: Uint8Array) => async (rule: FaultRule) => {
    if (rule.leavePartial) await store.put(key, data.subarray(0, Math.min(rule.afterBytes ?? 0, data.byteLength)));
  };

  return {
    location: store.location,
    get calls() {
      return { ...calls };
    },
    get injected() {
      return injected;
    },
    get crashed() {
      return crashed;
    },
    put: (key, data) => call('put', key, () => store.put(key, data), tornPut(key, data)),
    putIfAbsent: (key, data) =>
      call(
        'putIfAbsent',
        key,
        () => store.putIfAbsent(key, data),
        async (rule) => {
          if (rule.leavePartial) await store.putIfAbsent(key, data.subarray(0, Math.min(rule.afterBytes ?? 0, data.byteLength)));
        },
      ),
    get: (key, range) => call('get', key, () => store.get(key, range)),
    // Opening a reader is a get: rules and counts for get cover it. Its reads are not counted,
    // but after a crash they fail too: nothing more reaches the store.
    ...wrapReaders(
      store,
      (key, open) => call('get', key, open),
      async (key, _offset, read) => {
        if (crashed) throw new SimulatedCrashError(`${store.location}: read of "${key}" after a simulated crash (the process is dead)`);
        return read();
      },
    ),
    stat: (key) => call('stat', key, () => store.stat(key)),
    delete: (key) => call('delete', key, () => store.delete(key)),
    list: (prefix) =>
      (async function* () {
        const rule = pick('list', prefix);
        if (!rule) {
          for await (const info of store.list(prefix)) {
            if (crashed) throw new SimulatedCrashError(`${store.location}: list "${prefix}" after a simulated crash`);
            yield info;
          }
          return;
        }
        if (rule.when === 'after') {
          for await (const info of store.list(prefix)) yield info;
          throw errorFor(rule, 'list', prefix);
        }
        let yielded = 0;
        if (rule.afterBytes !== undefined && rule.afterBytes > 0) {
          for await (const info of store.list(prefix)) {
            yield info;
            if (++yielded >= rule.afterBytes) break;
          }
        }
        throw errorFor(rule, 'list', prefix);
      })(),
  };
}

// ---------------------------------------------------------------------------
// Throttle

/**
 * At most `maxConcurrent` calls in flight on the inner store; the rest wait in
 * order. A listing holds a slot only while fetching each item, so code that
 * reads objects while iterating a listing cannot deadlock itself.
 */
export function withThrottle(store: ObjectStore, opts: { maxConcurrent: number }): ObjectStore {
  if (!Number.isInteger(opts.maxConcurrent) || opts.maxConcurrent < 1) {
    throw new RangeError(`withThrottle: maxConcurrent must be a whole number ≥ 1 (got ${opts.maxConcurrent})`);
  }
  let active = 0;
  const waiting: Array<() => void> = [];
  const acquire = async () => {
    if (active < opts.maxConcurrent) {
      active++;
      return;
    }
    // The slot is handed over by release(), so `active` stays counted.
    await new Promise<void>((resolve) => waiting.push(resolve));
  };
  const release = () => {
    const next = waiting.shift();
    if (next) next();
    else active--;
  };
  const limit = async <T>(fn: () => Promise<T>): Promise<T> => {
    await acquire();
    try {
      return await fn();
    } finally {
      release();
    }
  };
  return {
    location: store.location,
    put: (key, data) => limit(() => store.put(key, data)),
    putIfAbsent: (key, data) => limit(() => store.putIfAbsent(key, data)),
    get: (key, range) => limit(() => store.get(key, range)),
    // The open and each read take a slot, never the reader's whole life: readers held open
    // cannot starve other calls.
    ...wrapReaders(
      store,
      (_key, open) => limit(open),
      (_key, _offset, read) => limit(read),
    ),
    stat: (key) => limit(() => store.stat(key)),
    delete: (key) => limit(() => store.delete(key)),
    list: (prefix) =>
      (async function* () {
        const it = store.list(prefix)[Symbol.asyncIterator]();
        try {
          for (;;) {
            const next = await limit(() => it.next());
            if (next.done) return;
            yield next.value;
          }
        } finally {
          await it.return?.();
        }
      })(),
  };
}

// ---------------------------------------------------------------------------
// Logging

/**
 * One debug line per call (method, key, bytes, duration); a warn line for
 * failures other than a missing key, which callers routinely probe for.
 * Logs keys and sizes, never object contents.
 */
export function withLogging(store: ObjectStore, logger: Logger): ObjectStore {
  const log = logger.child({ store: store.location });
  async function logged<T>(method: StoreMethod, key: string, fn: () => Promise<T>, bytes?: (r: T) => number | undefined): Promise<T> {
    const start = performance.now();
    try {
      const result = await fn();
      log.debug(`store ${method}`, { method, objectKey: key, bytes: bytes?.(result), ms: Math.round(performance.now() - start) });
      return result;
    } catch (err) {
      const e = toError(err);
      const fields = { method, objectKey: key, error: e.name, message: e.message, ms: Math.round(performance.now() - start) };
      if (e.name === 'NotFoundError') log.debug(`store ${method} not found`, fields);
      else log.warn(`store ${method} failed`, fields);
      throw err;
    }
  }
  return {
    location: store.location,
    put: (key, data) => logged('put', key, () => store.put(key, data), () => data.byteLength),
    putIfAbsent: (key, data) =>
      logged('putIfAbsent', key, async () => {
        const created = await store.putIfAbsent(key, data);
        if (!created) log.debug('store putIfAbsent found an existing object', { objectKey: key });
        return created;
      }, () => data.byteLength),
    get: (key, range?: GetRange) => logged('get', key, () => store.get(key, range), (r) => r.byteLength),
    // The open is logged; its reads (one a block) only when they fail.
    ...wrapReaders(
      store,
      (key, open) => logged('get', key, open),
      (key, offset, read) =>
        read().catch((err) => {
          const e = toError(err);
          log.warn('store read failed', { method: 'get', objectKey: key, offset, error: e.name, message: e.message });
          throw err;
        }),
    ),
    stat: (key) => logged('stat', key, () => store.stat(key)),
    delete: (key) => logged('delete', key, () => store.delete(key)),
    list: (prefix) =>
      (async function* (): AsyncGenerator<ObjectInfo> {
        const start = performance.now();
        let count = 0;
        try {
          for await (const info of store.list(prefix)) {
            count++;
            yield info;
          }
          log.debug('store list', { method: 'list', prefix, count, ms: Math.round(performance.now() - start) });
        } catch (err) {
          const e = toError(err);
          log.warn('store list failed', { method: 'list', prefix, count, error: e.name, message: e.message });
          throw err;
        }
      })(),
  };
}
