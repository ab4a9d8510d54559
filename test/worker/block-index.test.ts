// The dedup index in memory: every block found again where it was put, first location wins,
// packs forgotten on demand, a few dozen bytes a block rather than a Map's 166, and more blocks
// than one Map can hold (2^24).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { BlockIndex } from '../../worker/block-index.js';
import { RepositoryError } from '../../shared/core/errors.js';

const key = randomBytes(32);
/** A full garbage collection, here without starting node with --expose-gc. */
const collectGarbage: () => void = (() => {
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
})();
/** Block IDs as the repository makes them: keyed hashes. */
const idOf = (i: number) => createHmac('sha256', key).update(`block ${i}`).digest();
const loc = (i: number) => ({ pack: `pack-${i % 97}`, offset: (i * 4099) % 2 ** 26, length: 1000 + (i % 5000), rawLength: 524288 });

test('every block added is found again, by hex or by bytes, with the location it was given', () => {
  const index = new BlockIndex();
  const n = 200_000;
  for (let i = 0; i < n; i++) assert.equal(index.add(i % 2 ? idOf(i) : idOf(i).toString('hex'), loc(i)), true);
  assert.equal(index.size, n);
  for (let i = 0; i < n; i++) {
    const id = idOf(i);
    assert.deepEqual(index.get(i % 3 ? id : id.toString('hex')), loc(i), `block ${i}`);
  }
  for (let i = n; i < n + 1000; i++) {
    assert.equal(index.has(idOf(i)), false);
    assert.equal(index.get(idOf(i).toString('hex')), undefined);
  }
  // Iteration names each block once, with its location.
  const seen = new Map<string, unknown>();
  for (const [hex, l] of index) seen.set(hex, l);
  assert.equal(seen.size, n);
  assert.deepEqual(seen.get(idOf(12345).toString('hex')), loc(12345));
});

test('the first location of a block wins; set replaces it', () => {
  const index = new BlockIndex();
  const id = idOf(1);
  assert.equal(index.add(id, loc(1)), true);
  assert.equal(index.add(id, loc(2)), false);
  assert.deepEqual(index.get(id), loc(1));
  index.set(id, loc(3));
  assert.deepEqual(index.get(id), loc(3));
  assert.equal(index.size, 1);
});

test('forgetting packs drops exactly their blocks, and a block stored again elsewhere comes back', () => {
  const index = new BlockIndex();
  for (let i = 0; i < 10_000; i++) index.add(idOf(i), loc(i));
  const removed = index.deletePacks(new Set(['pack-3', 'pack-50', 'pack-never-seen']));
  const expected = [...Array(10_000).keys()].filter((i) => i % 97 === 3 || i % 97 === 50);
  assert.equal(removed, expected.length);
  assert.equal(index.size, 10_000 - expected.length);
  for (const i of expected) assert.equal(index.has(idOf(i)), false);
  assert.deepEqual(index.get(idOf(4)), loc(4));
  assert.equal([...index.keys()].length, index.size);
  // Stored again in a new pack: found there.
  const again = { pack: 'pack-new', offset: 0, length: 10, rawLength: 524288 };
  assert.equal(index.add(idOf(3), again), true);
  assert.deepEqual(index.get(idOf(3)), again);
  assert.equal(index.delete(idOf(3)), true);
  assert.equal(index.delete(idOf(3)), false);
  assert.equal(index.size, 10_000 - expected.length);
  index.clear();
  assert.equal(index.size, 0);
  assert.equal(index.has(idOf(4)), false);
});

test('what is not a block ID, or a location past 32 bits, is refused rather than stored wrong', () => {
  const index = new BlockIndex();
  assert.throws(() => index.has('abc'), TypeError);
  assert.throws(() => index.add(Buffer.alloc(16), loc(1)), TypeError);
  assert.throws(() => index.add('zz'.repeat(32), loc(1)), TypeError);
  assert.throws(() => index.add(idOf(1), { ...loc(1), offset: 2 ** 32 }), (e: unknown) => e instanceof RepositoryError && /upgrade tender-worker/.test((e as Error).message));
  assert.equal(index.size, 0);
});

test('a million blocks take under 70 bytes each, outside the JavaScript heap', () => {
  const index = new BlockIndex();
  // Collected before each reading: the pack names made for every add are garbage, and how much of
  // it a collection has already taken depends on timing, not on what the index holds.
  collectGarbage();
  const before = process.memoryUsage();
  const id = Buffer.alloc(32);
  for (let i = 0; i < 1_000_000; i++) {
    // Distinct, uniformly spread IDs without a million HMACs.
    id.writeUInt32LE((Math.imul(i, 2654435761) >>> 0), 0);
    id.writeUInt32LE(i, 4);
    index.add(id, { pack: `pack-${i >> 7}`, offset: i, length: 1, rawLength: 2 });
  }
  collectGarbage();
  const after = process.memoryUsage();
  assert.equal(index.size, 1_000_000);
  const perBlock = (after.arrayBuffers - before.arrayBuffers) / 1_000_000;
  assert.ok(perBlock < 70, `${perBlock.toFixed(1)} bytes of memory a block`);
  // The heap holds only pack names (one per 128 blocks here), not one object a block.
  assert.ok((after.heapUsed - before.heapUsed) / 1_000_000 < 8, `${((after.heapUsed - before.heapUsed) / 1_000_000).toFixed(1)} heap bytes a block`);
  id.writeUInt32LE((Math.imul(777, 2654435761) >>> 0), 0);
  id.writeUInt32LE(777, 4);
  assert.deepEqual(index.get(id), { pack: `pack-${777 >> 7}`, offset: 777, length: 1, rawLength: 2 });
});

test('more blocks than one JavaScript Map holds (2^24, 8 TiB of 512 KiB blocks) are all indexed', () => {
  const index = new BlockIndex();
  const n = 2 ** 24 + 1000;
  const id = Buffer.alloc(32);
  const at = (i: number) => {
    id.writeUInt32LE(Math.imul(i, 2654435761) >>> 0, 0);
    id.writeUInt32LE(i, 4);
    return id;
  };
  for (let i = 0; i < n; i++) index.add(at(i), { pack: 'p', offset: i, length: 1, rawLength: 2 });
  assert.equal(index.size, n);
  for (const i of [0, 2 ** 24 - 1, 2 ** 24, n - 1]) assert.equal(index.get(at(i))?.offset, i);
});
