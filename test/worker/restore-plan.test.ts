// Planning a restore's reads: every data block written once from the one blob that holds it,
// identical blocks read once, packs read in offset order — in memory that stays a few dozen
// bytes a block, so a disk of millions of distinct blocks plans on an ordinary worker.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BlockIndex } from '../../worker/block-index.js';
import { planReads } from '../../worker/restore.js';
import { CorruptObjectError } from '../../shared/core/errors.js';

/** A map of n blocks: every 10th all zeros, every 7th a copy of block 1, the rest distinct, 100 blobs a pack. */
function disk(n: number) {
  const index = new BlockIndex();
  const map = Buffer.alloc(n * 32);
  let stored = 0;
  for (let i = 0; i < n; i++) {
    if (i % 10 === 0) continue;
    if (i % 7 === 0 && i > 1) {
      map.copy(map, i * 32, 32, 64);
      continue;
    }
    const id = map.subarray(i * 32, i * 32 + 32);
    id.writeUInt32LE(Math.imul(i + 1, 2654435761) >>> 0, 0);
    id.writeUInt32LE(i + 1, 4);
    // Stored in reverse order within each pack, so the plan has to sort by offset.
    index.add(id, { pack: `pack-${Math.floor(stored / 100)}`, offset: (99 - (stored % 100)) * 1000, length: 1000, rawLength: 4096 });
    stored++;
  }
  return { index, map, stored };
}

test('each data block is written once, identical blocks come from one read, and each pack is read in offset order', () => {
  const n = 20_000;
  const { index, map, stored } = disk(n);
  const plan = planReads({ index } as any, map, n, 'maps/x');
  const written = new Uint8Array(n);
  let blobs = 0;
  for (const r of plan.ranges()) {
    assert.ok(r.length <= 4 * 1024 * 1024);
    let at = r.offset;
    for (const b of r.blobs) {
      assert.equal(b.loc.pack, r.pack);
      assert.ok(b.loc.offset >= at, 'offsets ascend within a range');
      at = b.loc.offset + b.loc.length;
      assert.ok(at <= r.offset + r.length);
      blobs++;
      for (const i of b.blocks) {
        written[i]!++;
        assert.ok(b.id.equals(map.subarray(i * 32, i * 32 + 32)), `block ${i} gets its own content`);
      }
    }
  }
  assert.equal(blobs, stored, 'every stored blob is read once');
  for (let i = 0; i < n; i++) assert.equal(written[i], i % 10 === 0 ? 0 : 1, `block ${i}`);
  assert.equal(plan.dataBlocks, n - n / 10);
});

test('a block no index holds fails the plan, naming the block map', () => {
  const { index, map } = disk(100);
  map.fill(7, 50 * 32, 51 * 32);
  assert.throws(() => planReads({ index } as any, map, 100, 'maps/rp-0'), (e: unknown) => e instanceof CorruptObjectError && /maps\/rp-0/.test((e as Error).message) && /0707070707070707/.test((e as Error).message));
});

test('a million blocks plan in under 32 bytes each (an object per block was over 400)', () => {
  const n = 1_000_000;
  const { index, map } = disk(n);
  const before = process.memoryUsage();
  const plan = planReads({ index } as any, map, n, 'maps/x');
  const after = process.memoryUsage();
  const perBlock = (after.arrayBuffers - before.arrayBuffers + Math.max(0, after.heapUsed - before.heapUsed)) / n;
  assert.ok(perBlock < 32, `${perBlock.toFixed(1)} bytes a block`);
  assert.equal(plan.dataBlocks, 900_000);
});

test('two different blocks an index places at one location are two reads, so the wrong one fails its check instead of taking the other\'s bytes', () => {
  const index = new BlockIndex();
  const map = Buffer.alloc(2 * 32);
  map.fill(1, 0, 32);
  map.fill(2, 32, 64);
  const same = { pack: 'p'.repeat(64), offset: 0, length: 100, rawLength: 4096 };
  index.add(map.subarray(0, 32), same);
  index.add(map.subarray(32, 64), same);
  const blobs = [...planReads({ index } as any, map, 2, 'maps/x').ranges()].flatMap((r) => r.blobs);
  assert.equal(blobs.length, 2);
  assert.deepEqual(blobs.map((b) => [b.id[0], b.blocks]), [[1, [0]], [2, [1]]]);
});
