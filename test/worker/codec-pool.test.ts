// The codec threads: started before their keys are known, configured by the pool that takes
// them, and never left running when that pool cannot be made.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import { CodecPool, CodecThreads } from '../../worker/codec-pool.js';
import { IdFilter } from '../../worker/id-filter.js';

const keys = () => ({ encryptionKey: randomBytes(32), idKey: randomBytes(32), blockId: 'blake3' as const });

test('threads started ahead of their keys hash, seal and decode once a pool configures them', async () => {
  const started = new CodecThreads(2);
  const pool = new CodecPool({ ...keys(), blockSize: 64 * 1024, level: 2, started });
  try {
    assert.equal(pool.size, 2);
    const slot = await pool.acquire();
    const block = Buffer.alloc(64 * 1024, 'some text that compresses ');
    block.copy(slot.input);
    const h = await pool.hash(slot, block.length);
    assert.equal(h.zero, false);
    if (h.zero) return;
    const sealed = await pool.encode(slot, block.length, h.id);
    assert.equal(sealed.codec, 'zstd');
    assert.ok(sealed.len < block.length / 4);
    // Decode what was sealed: into the input, back out of the output.
    slot.output.copy(slot.input, 0, 0, sealed.len);
    assert.equal(await pool.decode(slot, sealed.len, h.id, block.length, true), block.length);
    assert.ok(slot.output.subarray(0, block.length).equals(block));
    pool.release(slot);
    assert.throws(() => new CodecPool({ ...keys(), blockSize: 64 * 1024, started }), /already belong to a pool/);
  } finally {
    await pool.close();
  }
});

test('a block the filter says is surely new comes back hashed and sealed in one answer; a known one only hashed', async () => {
  // Prepare: two different blocks, the first already known to the filter.
  const pool = new CodecPool({ ...keys(), blockSize: 64 * 1024, level: 2, threads: 1 });
  try {
    const known = Buffer.alloc(64 * 1024, 'a block the repository holds ');
    const fresh = Buffer.alloc(64 * 1024, 'a block never stored before ');
    const slot = await pool.acquire();
    known.copy(slot.input);
    const first = await pool.hash(slot, known.length);
    if (first.zero) throw new Error('not a zero block');
    const filter = new IdFilter(10);
    filter.add(first.id);
    pool.useFilter(filter);
    // Act
    const again = await pool.hash(slot, known.length, true);
    fresh.copy(slot.input);
    const h = await pool.hash(slot, fresh.length, true);
    // Assess
    assert.ok(!again.zero && again.sealed === undefined, 'a maybe-known block is left to the caller');
    assert.ok(!h.zero && h.sealed, 'a surely new block is sealed at once');
    if (h.zero || !h.sealed) return;
    assert.equal(pool.compressed, 1);
    slot.output.copy(slot.input, 0, 0, h.sealed.len);
    assert.equal(await pool.decode(slot, h.sealed.len, h.id, fresh.length, true), fresh.length, 'it decodes, and matches its ID');
    assert.ok(slot.output.subarray(0, fresh.length).equals(fresh));
    // The same new block read again before the main thread has noted it (a run of identical
    // blocks in flight) is not compressed a second time: it is left to the main thread.
    fresh.copy(slot.input);
    const repeat = await pool.hash(slot, fresh.length, true);
    assert.ok(!repeat.zero && repeat.sealed === undefined, 'a block this thread just sealed is not sealed again');
    assert.equal(pool.compressed, 1);
    pool.release(slot);
  } finally {
    await pool.close();
  }
});

test('a pool that cannot get its memory leaves the threads it was given to be ended', async () => {
  const started = new CodecThreads(1);
  // 1 GiB blocks: six slots need more shared memory than one WebAssembly memory can hold (4 GiB).
  assert.throws(() => new CodecPool({ ...keys(), blockSize: 1024 * 1024 * 1024, started }), RangeError);
  const exited = new Promise<number>((resolve) => started.workers[0]!.once('exit', resolve));
  await started.terminate();
  assert.equal(typeof (await exited), 'number', 'the thread was ended');
});

test('block IDs are the function the repository names: keyed BLAKE3 (official test vector) in format 2, HMAC-SHA-256 in format 1', async () => {
  // Prepare: BLAKE3's official keyed-hash input of 102,400 bytes (byte i is i % 251) and its key.
  const idKey = Buffer.from('whats the Elvish word for friend');
  const input = Buffer.from(Array.from({ length: 102400 }, (_, i) => i % 251));
  for (const [blockId, expected] of [
    ['blake3', '1c35d1a5811083fd7119f5d5d1ba027b4d01c0c6c49fb6ff2cf75393ea5db4a7'],
    ['hmac-sha256', createHmac('sha256', idKey).update(input).digest('hex')],
  ] as const) {
    const pool = new CodecPool({ encryptionKey: randomBytes(32), idKey, blockId, blockSize: 128 * 1024, threads: 1 });
    try {
      const slot = await pool.acquire();
      input.copy(slot.input);
      // Act
      const h = await pool.hash(slot, input.length);
      if (h.zero) throw new Error('not a zero block');
      const sealed = await pool.encode(slot, input.length, h.id);
      slot.output.copy(slot.input, 0, 0, sealed.len);
      // Assess: the ID, and the content check that restore and verify --read-data make with it.
      assert.equal(h.hex, expected, blockId);
      assert.equal(await pool.decode(slot, sealed.len, h.id, input.length, true), input.length);
      // A blob sealed under an ID its content does not have authenticates, and the check catches it.
      const other = Buffer.from(h.id);
      other[0]! ^= 1;
      input.copy(slot.input);
      const misnamed = await pool.encode(slot, input.length, other);
      slot.output.copy(slot.input, 0, 0, misnamed.len);
      await assert.rejects(pool.decode(slot, misnamed.len, other, input.length, true), /content does not match its block ID/);
      pool.release(slot);
    } finally {
      await pool.close();
    }
  }
});
