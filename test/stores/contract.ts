// The one test suite every ObjectStore passes (restic backend/test, kopia
// VerifyStorage): what shared/ports/object-store.ts promises, checked the way a
// repository uses it. Each test gets a fresh, empty store from makeStore.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import type { ObjectInfo, ObjectStore } from '../../shared/ports/object-store.js';

export interface ContractOptions {
  /**
   * Known shortcomings of a local TEST SERVER standing in for a real backend
   * (never of a production backend), each with its reason: the test that would
   * fail only because of the server is skipped, and says why.
   */
  serverLimits?: {
    /** The server does not evaluate conditional creates atomically. */
    conditionalCreateRace?: string;
    /** The server rewrites objects in place, so a reader can catch one half-written. */
    readWhileReplacing?: string;
  };
  /** The store has openReader (a local folder): its reads are held to the port's promises too. */
  readers?: boolean;
  /** Size of the "large object" test (default 20 MiB: above the 16 MiB multipart threshold). */
  largeBytes?: number;
}

export type MakeStore = () => ObjectStore | Promise<ObjectStore>;

const MiB = 1024 * 1024;

function digest(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

/** Compares bytes without dumping megabytes into a failure message. */
function assertBytes(actual: Uint8Array, expected: Uint8Array, what: string) {
  assert.ok(actual instanceof Uint8Array, `${what}: expected a Uint8Array`);
  assert.equal(actual.byteLength, expected.byteLength, `${what}: length`);
  assert.equal(digest(actual), digest(expected), `${what}: content`);
}

async function collect(it: AsyncIterable<ObjectInfo>): Promise<ObjectInfo[]> {
  const out: ObjectInfo[] = [];
  for await (const x of it) out.push(x);
  return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
}

const keysOf = (infos: ObjectInfo[]) => infos.map((i) => i.key);
const text = (s: string) => new TextEncoder().encode(s);

export function describeObjectStoreContract(name: string, makeStore: MakeStore, opts: ContractOptions = {}) {
  describe(`ObjectStore contract: ${name}`, () => {
    it('gives back exactly the bytes put, for empty, small and binary objects', async () => {
      // Prepare
      const store = await makeStore();
      const cases: Array<[string, Uint8Array]> = [
        ['empty', new Uint8Array(0)],
        ['one-byte', new Uint8Array([0])],
        ['binary', randomBytes(100_003)],
        ['nested/deeper/obj', text('hello')],
      ];
      // Act
      for (const [k, v] of cases) await store.put(k, v);
      // Assess
      for (const [k, v] of cases) assertBytes(await store.get(k), v, k);
    });

    it('replaces an object on put, and putting the same bytes twice leaves one object', async () => {
      // Prepare
      const store = await makeStore();
      await store.put('data/x', text('first version, longer than the second'));
      // Act
      await store.put('data/x', text('second'));
      await store.put('data/x', text('second'));
      // Assess
      assertBytes(await store.get('data/x'), text('second'), 'data/x');
      const listed = await collect(store.list('data/'));
      assert.deepEqual(keysOf(listed), ['data/x']);
      assert.equal(listed[0]!.size, 6);
    });

    it('throws NotFoundError naming the key and the store for a missing key, ranged or not', async () => {
      // Prepare
      const store = await makeStore();
      await store.put('present', text('x'));
      // Act / Assess
      for (const range of [undefined, { offset: 0, length: 10 }, { offset: 5, length: 0 }]) {
        await assert.rejects(store.get('missing/key-1', range), (err: Error) => {
          assert.equal(err.name, 'NotFoundError');
          assert.match(err.message, /missing\/key-1/);
          assert.ok(err.message.includes(store.location), `message names the store: ${err.message}`);
          return true;
        });
      }
    });

    it('reads ranges: inside, up to the end, across the end, at and past the end', async () => {
      // Prepare
      const store = await makeStore();
      const data = randomBytes(10_000);
      await store.put('r', data);
      // Act / Assess
      assertBytes(await store.get('r', { offset: 0, length: 1 }), data.subarray(0, 1), 'first byte');
      assertBytes(await store.get('r', { offset: 1234, length: 4321 }), data.subarray(1234, 5555), 'middle');
      assertBytes(await store.get('r', { offset: 9000, length: 1000 }), data.subarray(9000), 'exactly to the end');
      assertBytes(await store.get('r', { offset: 9990, length: 1000 }), data.subarray(9990), 'across the end');
      assertBytes(await store.get('r', { offset: 10_000, length: 10 }), new Uint8Array(0), 'starting at the end');
      assertBytes(await store.get('r', { offset: 20_000, length: 10 }), new Uint8Array(0), 'starting past the end');
      assertBytes(await store.get('r', { offset: 10, length: 0 }), new Uint8Array(0), 'empty range');
    });

    it('stats an object with its size and time, and a missing key as undefined', async () => {
      // Prepare
      const store = await makeStore();
      await store.put('s/obj', randomBytes(4097));
      // Act
      const info = await store.stat('s/obj');
      const missing = await store.stat('s/none');
      const folderLike = await store.stat('s');
      // Assess
      assert.ok(info);
      assert.equal(info.key, 's/obj');
      assert.equal(info.size, 4097);
      assert.ok(info.modified instanceof Date && !Number.isNaN(info.modified.getTime()), 'modified is a real date');
      // Loose bound: a time from another year means the store reports the wrong field.
      assert.ok(Math.abs(info.modified.getTime() - Date.now()) < 24 * 3600_000, `modified ${info.modified.toISOString()} is today`);
      assert.equal(missing, undefined);
      assert.equal(folderLike, undefined, 'a key prefix alone is not an object');
    });

    it('lists by prefix: whole folders, partial names, everything, nothing', async () => {
      // Prepare
      const store = await makeStore();
      const keys = ['data/aa/1', 'data/ab/2', 'data/b', 'datax', 'index/1', 'index/2', 'top'];
      for (const k of keys) await store.put(k, text(k));
      // Act
      const all = await collect(store.list(''));
      const data = await collect(store.list('data/'));
      const dataA = await collect(store.list('data/a'));
      const dat = await collect(store.list('dat'));
      const none = await collect(store.list('nothing/'));
      // Assess
      assert.deepEqual(keysOf(all), keys);
      assert.deepEqual(keysOf(data), ['data/aa/1', 'data/ab/2', 'data/b']);
      assert.deepEqual(keysOf(dataA), ['data/aa/1', 'data/ab/2']);
      assert.deepEqual(keysOf(dat), ['data/aa/1', 'data/ab/2', 'data/b', 'datax']);
      assert.deepEqual(none, []);
      for (const i of all) assert.equal(i.size, i.key.length, `size of ${i.key}`);
    });

    it('lists every object of a prefix holding many (paging)', async () => {
      // Prepare
      const store = await makeStore();
      const keys = Array.from({ length: 25 }, (_, i) => `many/${String(i).padStart(3, '0')}`);
      await Promise.all(keys.map((k) => store.put(k, text(k))));
      // Act
      const listed = await collect(store.list('many/'));
      // Assess
      assert.deepEqual(keysOf(listed), keys);
    });

    it('deletes an object, and deleting a missing key is not an error', async () => {
      // Prepare
      const store = await makeStore();
      await store.put('d/1', text('one'));
      await store.put('d/2', text('two'));
      // Act
      await store.delete('d/1');
      await store.delete('d/1');
      await store.delete('d/never-existed');
      // Assess
      await assert.rejects(store.get('d/1'), { name: 'NotFoundError' });
      assert.equal(await store.stat('d/1'), undefined);
      assert.deepEqual(keysOf(await collect(store.list('d/'))), ['d/2']);
      assertBytes(await store.get('d/2'), text('two'), 'the other object survives');
    });

    it('putIfAbsent creates once and never touches an existing object', async () => {
      // Prepare
      const store = await makeStore();
      // Act
      const first = await store.putIfAbsent('locks/exclusive', text('owner A'));
      const second = await store.putIfAbsent('locks/exclusive', text('owner B, longer'));
      // Assess
      assert.equal(first, true);
      assert.equal(second, false);
      assertBytes(await store.get('locks/exclusive'), text('owner A'), 'the first owner stays');
    });

    it('putIfAbsent does not create over an object written by put, and works again after delete', async () => {
      // Prepare
      const store = await makeStore();
      await store.put('w/once', text('from put'));
      // Act
      const overPut = await store.putIfAbsent('w/once', text('conditional'));
      await store.delete('w/once');
      const afterDelete = await store.putIfAbsent('w/once', text('conditional'));
      // Assess
      assert.equal(overPut, false);
      assert.equal(afterDelete, true);
      assertBytes(await store.get('w/once'), text('conditional'), 'created after delete');
    });

    it(
      'putIfAbsent racing: exactly one of many concurrent creators wins, and its bytes are stored',
      { skip: opts.serverLimits?.conditionalCreateRace ?? false },
      async () => {
        // Prepare
        const store = await makeStore();
        const contenders = Array.from({ length: 8 }, (_, i) => text(`owner ${i} `.repeat(i + 1)));
        // Act
        const results = await Promise.all(contenders.map((c) => store.putIfAbsent('locks/race', c)));
        // Assess
        const winners = results.flatMap((won, i) => (won ? [i] : []));
        assert.equal(winners.length, 1, `winners: ${winners.join(', ')}`);
        assertBytes(await store.get('locks/race'), contenders[winners[0]!]!, 'the winner');
      },
    );

    it('never lets a reader see a partial object while puts replace it', { skip: opts.serverLimits?.readWhileReplacing ?? false }, async () => {
      // Prepare
      const store = await makeStore();
      const a = new Uint8Array(2 * MiB).fill(0x61);
      const b = new Uint8Array(2 * MiB).fill(0x62);
      await store.put('torn/obj', a);
      // Act
      const writes = Promise.all([store.put('torn/obj', b), store.put('torn/obj', a), store.put('torn/obj', b)]);
      const reads: Uint8Array[] = [];
      let done = false;
      writes.then(
        () => (done = true),
        () => (done = true),
      );
      while (!done || reads.length < 3) reads.push(await store.get('torn/obj'));
      await writes;
      // Assess
      for (const r of reads) {
        assert.equal(r.byteLength, 2 * MiB, 'whole object');
        assert.ok(r.every((x) => x === r[0]) && (r[0] === 0x61 || r[0] === 0x62), 'one version, not a mix');
      }
    });

    it('stores and reads a large object bit for bit, ranges across its parts included', async () => {
      // Prepare
      const store = await makeStore();
      const size = opts.largeBytes ?? 20 * MiB;
      const data = randomBytes(size);
      // Act
      await store.put('packs/large', data);
      // Assess
      assertBytes(await store.get('packs/large'), data, 'whole');
      const mid = Math.floor(size / 2) - 1000;
      assertBytes(await store.get('packs/large', { offset: mid, length: 2 * MiB }), data.subarray(mid, mid + 2 * MiB), 'range');
      assert.equal((await store.stat('packs/large'))?.size, size);
    });

    it('keeps keys with spaces and punctuation apart and intact', async () => {
      // Prepare
      const store = await makeStore();
      const keys = ['odd/a b', 'odd/a+b', 'odd/a=b,c', 'odd/ümlaut~', 'odd/100%'];
      // Act
      for (const k of keys) await store.put(k, text(k));
      // Assess
      assert.deepEqual(keysOf(await collect(store.list('odd/'))), [...keys].sort());
      for (const k of keys) assertBytes(await store.get(k), text(k), k);
    });

    const noReaders = opts.readers ? false : 'this store has no openReader: its callers read in ranged gets';
    it('opens readers that read into the caller\'s buffers: inside, across and past the end, of the object as it was opened', { skip: noReaders }, async () => {
      // Prepare
      const store = await makeStore();
      assert.equal(typeof store.openReader, 'function', 'the store has openReader');
      const data = randomBytes(10_000);
      await store.put('dir/r', data);
      const reader = await store.openReader!('dir/r');
      try {
        // Act / Assess
        const target = new Uint8Array(new SharedArrayBuffer(16_384), 4096, 4321);
        assert.equal(await reader.read(1234, target), 4321, 'a read inside the object fills the target');
        assertBytes(target, data.subarray(1234, 5555), 'middle, into shared memory at an offset');
        const tail = new Uint8Array(1000);
        assert.equal(await reader.read(9990, tail), 10, 'across the end: only what there is');
        assertBytes(tail.subarray(0, 10), data.subarray(9990), 'across the end');
        assert.equal(await reader.read(10_000, tail), 0, 'at the end');
        assert.equal(await reader.read(20_000, tail), 0, 'past the end');
        await assert.rejects(reader.read(-1, tail), RangeError);
        // A put replacing the object meanwhile does not change what an open reader reads.
        await store.put('dir/r', randomBytes(100));
        const whole = new Uint8Array(10_000);
        assert.equal(await reader.read(0, whole), 10_000);
        assertBytes(whole, data, 'the object as it was when opened');
      } finally {
        await reader.close();
      }
    });

    it('refuses to open a reader on a missing key or on a folder of other objects, naming the key and the store', { skip: noReaders }, async () => {
      // Prepare
      const store = await makeStore();
      await store.put('a/b', text('x'));
      // Act / Assess
      for (const key of ['missing/key-2', 'a']) {
        await assert.rejects(store.openReader!(key), (err: Error) => {
          assert.equal(err.name, 'NotFoundError');
          assert.ok(err.message.includes(key), `message names the key: ${err.message}`);
          assert.ok(err.message.includes(store.location), `message names the store: ${err.message}`);
          return true;
        });
      }
    });

    it('rejects an empty key and a negative range instead of guessing', async () => {
      // Prepare
      const store = await makeStore();
      await store.put('r', text('0123456789'));
      // Act / Assess
      await assert.rejects(store.put('', text('x')));
      await assert.rejects(store.get(''));
      await assert.rejects(store.get('r', { offset: -1, length: 2 }), RangeError);
      await assert.rejects(store.get('r', { offset: 0, length: -2 }), RangeError);
      assert.deepEqual(keysOf(await collect(store.list(''))), ['r']);
    });
  });
}
