// The codec threads: started before their keys are known, configured by the pool that takes
// them, and never left running when that pool cannot be made.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { CodecPool, CodecThreads } from '../../worker/codec-pool.js';

const keys = () => ({ encryptionKey: randomBytes(32), idKey: randomBytes(32) });

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

test('a pool that cannot get its memory leaves the threads it was given to be ended', async () => {
  const started = new CodecThreads(1);
  // 1 GiB blocks: six slots need more shared memory than one WebAssembly memory can hold (4 GiB).
  assert.throws(() => new CodecPool({ ...keys(), blockSize: 1024 * 1024 * 1024, started }), RangeError);
  const exited = new Promise<number>((resolve) => started.workers[0]!.once('exit', resolve));
  await started.terminate();
  assert.equal(typeof (await exited), 'number', 'the thread was ended');
});
