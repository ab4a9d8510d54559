// The raw-image sink of restore: blocks written in any order land exactly,
// the image keeps its size and its holes, and group commit turns blocks that
// queue up behind a write into one vectored write without ever waiting for a
// block that is not coming.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { createGroupWriter, createImageSink } from '../../../worker/sources/image-file.js';
import { tempDirs } from '../../support/temp-dirs.js';

const freshDir = tempDirs('tender-image-sink-');

const BS = 64 * 1024;
/** Measuring windows of two blocks: the measured sink switches between direct and buffered writes within one image. */
const measure = { window: 2 * BS, reprobe: 6 * BS };

for (const direct of [true, false, undefined]) {
  describe(`image sink (${direct === undefined ? 'measured: direct and buffered writes mixed' : direct ? 'direct I/O where the filesystem allows it' : 'through the page cache'})`, () => {
    it('writes blocks given out of order and concurrently, with a short last block, bit for bit and sparse', async () => {
      // Prepare: 40 blocks and a last one of 1000 bytes; every fourth block stays a hole.
      const size = 40 * BS + 1000;
      const image = Buffer.alloc(size);
      const written: number[] = [];
      for (let i = 0; i <= 40; i++) {
        if (i % 4 === 1) continue;
        randomBytes(Math.min(BS, size - i * BS)).copy(image, i * BS);
        written.push(i);
      }
      const order = [...written].sort((a, b) => ((a * 7919) % 41) - ((b * 7919) % 41));
      const path = join(await freshDir(), 'disk.img');
      const sink = await createImageSink(path, size, { blockSize: BS, direct, measure });
      // Act: every block from its own copy, all in flight at once, as restore's slots would be.
      await Promise.all(order.map((i) => sink.writeBlock(i, Buffer.from(image.subarray(i * BS, Math.min(size, (i + 1) * BS))))));
      await sink.finish();
      // Assess
      const back = await readFile(path);
      assert.equal(back.length, size);
      assert.ok(back.equals(image), 'the restored image is the source byte for byte');
      assert.ok((await stat(path)).blocks * 512 < size, 'blocks never written stay holes');
      await assert.rejects(stat(`${path}.partial`), /ENOENT/);
    });
  });
}

describe('group writer', () => {
  it('sends the blocks that queued behind a write as one run, lowest first, each run without gaps', async () => {
    // Prepare: the first write is held until the test lets it go.
    const runs: number[][] = [];
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const writer = createGroupWriter(async (run) => {
      runs.push(run.map((b) => b.index));
      if (runs.length === 1) await held;
    }, 4);
    const data = Buffer.alloc(1);
    // Act
    const first = writer.write(10, data);
    const queued = [7, 3, 5, 4, 6, 20, 21].map((i) => writer.write(i, data));
    release();
    await Promise.all([first, ...queued]);
    // Assess: 3..6 is one run (capped at 4), then 7, then 20..21.
    assert.deepEqual(runs, [[10], [3, 4, 5, 6], [7], [20, 21]]);
  });

  it('writes a lone block at once: a caller that waits for each write never stalls', async () => {
    const runs: number[][] = [];
    const writer = createGroupWriter(async (run) => void runs.push(run.map((b) => b.index)), 32);
    for (let i = 0; i < 3; i++) await writer.write(i, Buffer.alloc(1));
    assert.deepEqual(runs, [[0], [1], [2]]);
  });

  it('fails exactly the blocks of a failed write, and keeps writing the rest', async () => {
    const writer = createGroupWriter(async (run) => {
      if (run.some((b) => b.index === 2)) throw new Error('EIO: i/o error, write');
    }, 1);
    const results = await Promise.allSettled([0, 1, 2, 3].map((i) => writer.write(i, Buffer.alloc(1))));
    assert.deepEqual(
      results.map((r) => r.status),
      ['fulfilled', 'fulfilled', 'rejected', 'fulfilled'],
    );
    assert.match(String((results[2] as PromiseRejectedResult).reason), /EIO/);
    await writer.idle();
  });
});
