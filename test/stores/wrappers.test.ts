import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ObjectInfo, ObjectStore } from '../../shared/ports/object-store.js';
import { createFolderStore } from '../../shared/local/folder-store.js';
import { withFaults, withLogging, withRetry, withThrottle, type RetryOptions } from '../../shared/core/store-wrappers.js';
import { createMemoryLogger } from '../../shared/core/logger.js';
import { AccessDeniedError, NotFoundError, TransientError } from '../../shared/core/errors.js';
import { describeObjectStoreContract } from './contract.js';

const dirs: string[] = [];
async function folder(): Promise<ObjectStore> {
  const d = await mkdtemp(join(tmpdir(), 'tender-wrappers-'));
  dirs.push(d);
  return createFolderStore(d, { fsync: false });
}
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

const text = (s: string) => new TextEncoder().encode(s);
const same = (a: Uint8Array, b: Uint8Array) => Buffer.compare(Buffer.from(a), Buffer.from(b)) === 0;

/** Retry options that never wait, recording the delays they would have slept. */
function instantRetry(attempts: number, extra: Partial<RetryOptions> = {}) {
  const slept: number[] = [];
  const opts: RetryOptions = { attempts, baseMs: 100, maxMs: 1000, random: () => 1, sleep: async (ms) => void slept.push(ms), ...extra };
  return { opts, slept };
}

async function keys(it: AsyncIterable<ObjectInfo>): Promise<string[]> {
  const out: string[] = [];
  for await (const i of it) out.push(i.key);
  return out.sort();
}

// The wrappers stacked on a folder store still keep every promise of the port.
describeObjectStoreContract('folder store inside withLogging(withRetry(withThrottle(...)))', async () =>
  withLogging(withRetry(withThrottle(await folder(), { maxConcurrent: 3 }), instantRetry(3).opts), createMemoryLogger()),
  { readers: true },
);

describe('withRetry', () => {
  it('retries a put torn after N bytes and leaves exactly the bytes put', async () => {
    // Prepare: the first upload dies after 1000 bytes and leaves them behind, as a non-atomic backend would.
    const inner = await folder();
    const data = randomBytes(64 * 1024);
    const faulty = withFaults(inner, [{ method: 'put', call: 1, error: 'transient', afterBytes: 1000, leavePartial: true }]);
    const { opts } = instantRetry(3);
    // Act
    await withRetry(faulty, opts).put('packs/p1', data);
    // Assess
    assert.ok(same(await inner.get('packs/p1'), data), 'stored bytes are exactly the data');
    assert.equal(faulty.calls.put, 2);
    assert.equal(faulty.injected, 1);
  });

  it('stops at the attempt limit and says it gave up, with the store and key in the message', async () => {
    // Prepare
    const inner = await folder();
    const faulty = withFaults(inner, [{ method: 'put', error: 'transient', afterBytes: 10 }]);
    const { opts, slept } = instantRetry(4);
    // Act / Assess
    await assert.rejects(withRetry(faulty, opts).put('k', text('0123456789abcdef')), (err: Error) => {
      assert.equal(err.name, 'TransientError');
      assert.match(err.message, /gave up after 4 attempts/);
      assert.ok(err.message.includes(inner.location) && err.message.includes('"k"'));
      return true;
    });
    assert.equal(faulty.calls.put, 4);
    assert.equal(slept.length, 3);
    assert.equal(await inner.stat('k'), undefined, 'a torn upload leaves nothing behind by default');
  });

  it('does not retry errors retrying cannot fix', async () => {
    // Prepare
    const inner = await folder();
    for (const [error, name] of [
      ['access-denied', 'AccessDeniedError'],
      ['not-found', 'NotFoundError'],
      [new Error('a bug'), 'Error'],
    ] as const) {
      const faulty = withFaults(inner, [{ method: 'get', error }]);
      const { opts, slept } = instantRetry(5);
      // Act / Assess
      await assert.rejects(withRetry(faulty, opts).get('x'), { name });
      assert.equal(faulty.calls.get, 1, `${name} is not retried`);
      assert.deepEqual(slept, []);
    }
  });

  it('backs off with full jitter: random × min(max, base × 2^(n-1))', async () => {
    // Prepare
    const inner = await folder();
    await inner.put('k', text('v'));
    const faulty = withFaults(inner, [{ method: 'get', call: [1, 2, 3, 4, 5], error: 'transient' }]);
    const { opts, slept } = instantRetry(6, { baseMs: 100, maxMs: 1000, random: () => 0.5 });
    // Act
    const got = await withRetry(faulty, opts).get('k');
    // Assess
    assert.equal(Buffer.from(got).toString(), 'v');
    assert.deepEqual(slept, [50, 100, 200, 400, 500]);
  });

  it('answers true when a putIfAbsent succeeded but its reply was lost', async () => {
    // Prepare: the lock is written, then the caller sees a transient failure.
    const inner = await folder();
    const faulty = withFaults(inner, [{ method: 'putIfAbsent', call: 1, error: 'transient', when: 'after' }]);
    const store = withRetry(faulty, instantRetry(3).opts);
    // Act
    const mine = await store.putIfAbsent('locks/exclusive', text('owner: run-1'));
    const theirs = await store.putIfAbsent('locks/exclusive', text('owner: run-2'));
    // Assess
    assert.equal(mine, true, 'the caller that made the lock owns it');
    assert.equal(theirs, false);
    assert.equal(Buffer.from(await inner.get('locks/exclusive')).toString(), 'owner: run-1');
  });

  it('still answers false when the object found after a failed attempt is someone else\'s', async () => {
    // Prepare: our first attempt fails before reaching the store; meanwhile another writer creates the lock.
    const inner = await folder();
    const faulty = withFaults(inner, [{ method: 'putIfAbsent', call: 1, error: 'transient' }]);
    const store = withRetry(faulty, {
      ...instantRetry(3).opts,
      sleep: async () => void (await inner.putIfAbsent('locks/exclusive', text('owner: other'))),
    });
    // Act
    const mine = await store.putIfAbsent('locks/exclusive', text('owner: me'));
    // Assess
    assert.equal(mine, false);
    assert.equal(Buffer.from(await inner.get('locks/exclusive')).toString(), 'owner: other');
  });

  it('restarts a listing that failed midway without repeating objects', async () => {
    // Prepare
    const inner = await folder();
    for (let i = 0; i < 10; i++) await inner.put(`idx/${i}`, text(String(i)));
    const faulty = withFaults(inner, [{ method: 'list', call: 1, error: 'transient', afterBytes: 4 }]);
    // Act
    const listed: string[] = [];
    for await (const i of withRetry(faulty, instantRetry(3).opts).list('idx/')) listed.push(i.key);
    // Assess
    assert.equal(listed.length, 10);
    assert.deepEqual([...listed].sort(), Array.from({ length: 10 }, (_, i) => `idx/${i}`));
    assert.equal(faulty.calls.list, 2);
  });
});

describe('withFaults', () => {
  it('fails only the scripted call of the scripted method, on matching keys', async () => {
    // Prepare
    const inner = await folder();
    const faulty = withFaults(inner, [{ method: 'put', call: 2, key: 'packs/', error: 'transient' }]);
    // Act
    await faulty.put('index/1', text('i'));
    await faulty.put('packs/1', text('p'));
    const second = faulty.put('packs/2', text('p'));
    // Assess
    await assert.rejects(second, (err: Error) => err instanceof TransientError && /packs\/2/.test(err.message));
    await faulty.put('packs/3', text('p'));
    assert.deepEqual(await keys(inner.list('')), ['index/1', 'packs/1', 'packs/3']);
  });

  it('simulates a crash: the torn upload is not visible, and nothing more reaches the store', async () => {
    // Prepare
    const inner = await folder();
    await inner.put('packs/old', text('old'));
    const faulty = withFaults(inner, [{ method: 'put', call: 2, error: 'crash', afterBytes: 3 }]);
    // Act
    await faulty.put('packs/a', text('aaaa'));
    await assert.rejects(faulty.put('packs/b', text('bbbb')), { name: 'SimulatedCrashError' });
    await assert.rejects(faulty.delete('packs/old'), { name: 'SimulatedCrashError' });
    await assert.rejects(faulty.get('packs/a'), { name: 'SimulatedCrashError' });
    // Assess: "the next run" opens the same place and finds only whole objects.
    assert.ok(faulty.crashed);
    assert.deepEqual(await keys(inner.list('')), ['packs/a', 'packs/old']);
    assert.equal(Buffer.from(await inner.get('packs/a')).toString(), 'aaaa');
  });

  it('a crash is not retried', async () => {
    // Prepare
    const inner = await folder();
    const faulty = withFaults(inner, [{ method: 'put', call: 1, error: 'crash' }]);
    // Act / Assess
    await assert.rejects(withRetry(faulty, instantRetry(5).opts).put('k', text('v')), { name: 'SimulatedCrashError' });
    assert.equal(faulty.calls.put, 1);
  });

  it('loses a reply: the object is written but the caller sees the error', async () => {
    // Prepare
    const inner = await folder();
    const faulty = withFaults(inner, [{ method: 'put', error: new AccessDeniedError('boom'), when: 'after' }]);
    // Act
    await assert.rejects(faulty.put('k', text('v')), { name: 'AccessDeniedError' });
    // Assess
    assert.equal(Buffer.from(await inner.get('k')).toString(), 'v');
  });

  it('takes a function for random crash points', async () => {
    // Prepare
    const inner = await folder();
    const faulty = withFaults(inner, ({ method, n }) => (method === 'put' && n === 3 ? { method, error: 'crash' } : undefined));
    // Act
    const results = await Promise.allSettled([1, 2, 3, 4].map((i) => faulty.put(`k${i}`, text('v'))));
    // Assess
    assert.equal(results.filter((r) => r.status === 'rejected').length >= 1, true);
    assert.ok(faulty.crashed);
    assert.equal(faulty.calls.put, 3, 'calls after the crash are refused before they count');
  });
});

describe('withThrottle', () => {
  it('never has more than maxConcurrent calls in flight, and runs them all', async () => {
    // Prepare
    let inFlight = 0;
    let peak = 0;
    const releases: Array<() => void> = [];
    const slow: ObjectStore = {
      location: 'mem:slow',
      put: async () => {
        inFlight++;
        peak = Math.max(peak, inFlight);
        await new Promise<void>((r) => releases.push(r));
        inFlight--;
      },
      putIfAbsent: async () => true,
      get: async () => new Uint8Array(0),
      stat: async () => undefined,
      list: async function* () {},
      delete: async () => {},
    };
    const store = withThrottle(slow, { maxConcurrent: 2 });
    // Act
    const all = Promise.all(Array.from({ length: 7 }, (_, i) => store.put(`k${i}`, text('v'))));
    let finished = 0;
    while (finished < 7) {
      await new Promise((r) => setImmediate(r));
      const r = releases.shift();
      if (r) {
        r();
        finished++;
      }
    }
    await all;
    // Assess
    assert.equal(peak, 2);
  });

  it('lets code read objects while iterating a listing, even with one slot', async () => {
    // Prepare
    const inner = await folder();
    for (let i = 0; i < 3; i++) await inner.put(`idx/${i}`, text(String(i)));
    const store = withThrottle(inner, { maxConcurrent: 1 });
    // Act
    const read: string[] = [];
    for await (const i of store.list('idx/')) read.push(Buffer.from(await store.get(i.key)).toString());
    // Assess
    assert.deepEqual(read.sort(), ['0', '1', '2']);
  });
});

describe('withLogging', () => {
  it('logs each call with key and size, failures as warnings, missing keys quietly, never contents', async () => {
    // Prepare
    const inner = await folder();
    const logger = createMemoryLogger();
    const store = withLogging(withFaults(inner, [{ method: 'delete', error: 'transient' }]), logger);
    // Act
    await store.put('packs/p', text('SECRET-CONTENT'));
    await assert.rejects(store.get('packs/missing'), NotFoundError);
    await assert.rejects(store.delete('packs/p'), TransientError);
    await keys(store.list('packs/'));
    // Assess
    const put = logger.lines.find((l) => l.msg === 'store put');
    assert.ok(put);
    assert.equal(put.objectKey, 'packs/p');
    assert.equal(put.bytes, 14);
    assert.equal(put.store, inner.location);
    assert.equal(logger.lines.find((l) => l.msg === 'store get not found')?.level, 'debug');
    assert.equal(logger.lines.find((l) => l.msg === 'store delete failed')?.level, 'warn');
    assert.equal(logger.lines.find((l) => l.msg === 'store list')?.count, 1);
    assert.ok(!JSON.stringify(logger.lines).includes('SECRET-CONTENT'));
  });
});

describe('readers through the wrappers', () => {
  /** A folder store whose readers fail their first `failReads` reads with a TransientError. */
  async function flakyReads(failReads: number) {
    const inner = await folder();
    let failures = 0;
    const store: ObjectStore = {
      ...inner,
      openReader: async (key) => {
        const r = await inner.openReader!(key);
        return {
          read: async (offset, target) => {
            if (failures++ < failReads) throw new TransientError(`${inner.location} read "${key}": connection reset`);
            return r.read(offset, target);
          },
          close: () => r.close(),
        };
      },
    };
    return { inner, store };
  }

  it('a wrapper over a store without readers has none either, so callers read in ranged gets', async () => {
    // Prepare
    const bare: ObjectStore = { ...(await folder()) };
    delete bare.openReader;
    // Act / Assess
    for (const wrapped of [withRetry(bare, instantRetry(2).opts), withFaults(bare, []), withThrottle(bare, { maxConcurrent: 1 }), withLogging(bare, createMemoryLogger())]) {
      assert.equal(wrapped.openReader, undefined);
    }
  });

  it('withRetry retries a read that failed for a transient reason, into the same buffer', async () => {
    // Prepare
    const { inner, store } = await flakyReads(2);
    const data = randomBytes(5000);
    await inner.put('packs/p', data);
    const { opts, slept } = instantRetry(3);
    const reader = await withRetry(store, opts).openReader!('packs/p');
    // Act
    const target = new Uint8Array(1000);
    const got = await reader.read(100, target);
    await reader.close();
    // Assess
    assert.equal(got, 1000);
    assert.ok(same(target, data.subarray(100, 1100)));
    assert.equal(slept.length, 2, 'two retries');
  });

  it('withFaults counts and fails the open of a reader as a get', async () => {
    // Prepare
    const inner = await folder();
    await inner.put('packs/p', text('pack'));
    const faulty = withFaults(inner, [{ method: 'get', call: 2, key: 'packs/', error: 'not-found' }]);
    // Act
    const first = await faulty.openReader!('packs/p');
    await first.close();
    const second = faulty.openReader!('packs/p');
    // Assess
    await assert.rejects(second, NotFoundError);
    assert.equal(faulty.calls.get, 2);
  });

  it('withFaults: after a simulated crash, a reader opened before it reads nothing more', async () => {
    // Prepare
    const inner = await folder();
    await inner.put('packs/p', text('pack'));
    const faulty = withFaults(inner, [{ method: 'put', error: 'crash' }]);
    const reader = await faulty.openReader!('packs/p');
    assert.equal(await reader.read(0, new Uint8Array(4)), 4);
    // Act
    await assert.rejects(faulty.put('packs/q', text('q')), { name: 'SimulatedCrashError' });
    // Assess
    await assert.rejects(reader.read(0, new Uint8Array(4)), { name: 'SimulatedCrashError' });
    await reader.close();
  });

  it('withThrottle holds a slot per open and per read, never for a reader\'s life', async () => {
    // Prepare
    const inner = await folder();
    await inner.put('packs/p', text('pack'));
    const store = withThrottle(inner, { maxConcurrent: 1 });
    // Act: with the only slot's reader open, other calls still run.
    const reader = await store.openReader!('packs/p');
    const other = await store.get('packs/p');
    const target = new Uint8Array(4);
    const got = await reader.read(0, target);
    await reader.close();
    // Assess
    assert.equal(Buffer.from(other).toString(), 'pack');
    assert.equal(got, 4);
    assert.equal(Buffer.from(target).toString(), 'pack');
  });

  it('withLogging logs the open, not every read, and a failed read as a warning', async () => {
    // Prepare
    const { inner, store } = await flakyReads(1);
    await inner.put('packs/p', text('pack'));
    const logger = createMemoryLogger();
    const reader = await withLogging(store, logger).openReader!('packs/p');
    // Act
    await assert.rejects(reader.read(0, new Uint8Array(4)), TransientError);
    assert.equal(await reader.read(0, new Uint8Array(4)), 4);
    await reader.close();
    // Assess
    const lines = logger.lines.map((l) => `${l.level} ${l.msg}`);
    assert.deepEqual(lines, ['debug store get', 'warn store read failed'], lines.join('\n'));
  });
});
