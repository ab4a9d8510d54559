// Direct I/O for big writes: bytes land exactly, from aligned and misaligned
// memory, whatever the length; a filesystem that refuses is reported so the
// caller can fall back to buffered writes.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { constants } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import { DirectIoRefusedError, WriteModeChooser, alignedBuffer, directIoAvailable, openDirect, writeDirect, type WriteMode } from '../../shared/local/direct-io.js';
import { createFolderStore } from '../../shared/local/folder-store.js';
import { tempDirs } from '../support/temp-dirs.js';

const freshDir = tempDirs('tender-direct-io-');

describe('direct I/O', { skip: directIoAvailable ? false : 'no O_DIRECT on this platform' }, () => {
  it('writes from page-aligned memory straight through, and the bytes read back exactly', async (t) => {
    // Prepare
    const path = join(await freshDir(), 'aligned.bin');
    const fh = await openDirect(path, constants.O_WRONLY | constants.O_CREAT);
    if (!fh) return t.skip(`the filesystem of ${tmpdir()} refuses O_DIRECT`);
    const data = alignedBuffer(256 * 1024);
    randomBytes(data.length).copy(data);
    // Act
    const padded = await writeDirect(fh, data, 0);
    await fh.close();
    // Assess
    assert.equal(padded, false);
    assert.deepEqual(await readFile(path), data);
  });

  it('writes misaligned memory of any length through a bounce buffer; the padding is the caller’s to cut', async (t) => {
    // Prepare
    const path = join(await freshDir(), 'misaligned.bin');
    const fh = await openDirect(path, constants.O_WRONLY | constants.O_CREAT);
    if (!fh) return t.skip(`the filesystem of ${tmpdir()} refuses O_DIRECT`);
    const backing = randomBytes(5 * 1024 * 1024 + 1234);
    const data = backing.subarray(3); // an odd address and an odd length, larger than the bounce buffer
    // Act
    const padded = await writeDirect(fh, data, 8192);
    await fh.truncate(8192 + data.length);
    await fh.close();
    // Assess
    assert.equal(padded, true);
    const back = await readFile(path);
    assert.equal(back.length, 8192 + data.length);
    assert.deepEqual(back.subarray(8192), data);
    assert.ok(back.subarray(0, 8192).every((b) => b === 0), 'what lies before the write stays zeros');
  });

  it('reports a filesystem that refuses direct writes, so the caller writes through the page cache', async () => {
    // Prepare: a handle whose every write is refused the way such a filesystem refuses it.
    const refusing = {
      write: async () => {
        throw Object.assign(new Error('EINVAL: invalid argument, write'), { code: 'EINVAL' });
      },
    } as unknown as FileHandle;
    // Act / Assess
    await assert.rejects(writeDirect(refusing, randomBytes(10_000), 0), DirectIoRefusedError);
  });

  it('refuses an offset that direct I/O cannot take instead of writing somewhere else', async () => {
    const fh = { write: async () => ({ bytesWritten: 0 }) } as unknown as FileHandle;
    await assert.rejects(writeDirect(fh, randomBytes(4096), 100), /not a multiple of 4096/);
  });
});

describe('folder store with direct I/O', () => {
  it('stores large objects of odd sizes from odd addresses bit for bit, and leaves no temp file', async () => {
    // Prepare
    const dir = await freshDir();
    const store = createFolderStore(dir);
    const odd = randomBytes(3 * 1024 * 1024 + 5).subarray(1);
    const aligned = alignedBuffer(2 * 1024 * 1024);
    randomBytes(aligned.length).copy(aligned);
    // Act
    await store.put('data/ab/odd', odd);
    await store.put('data/ab/aligned', aligned);
    await store.put('data/ab/odd', odd); // replaced in place
    // Assess
    assert.deepEqual(Buffer.from(await store.get('data/ab/odd')), odd);
    assert.deepEqual(Buffer.from(await store.get('data/ab/aligned')), aligned);
    assert.equal((await stat(join(dir, 'data', 'ab', 'odd'))).size, odd.length);
    assert.deepEqual((await readdir(join(dir, 'data', 'ab'))).sort(), ['aligned', 'odd']);
  });

  it('writes the same bytes with direct I/O turned off', async () => {
    const dir = await freshDir();
    const store = createFolderStore(dir, { directMinBytes: 0 });
    const data = randomBytes(1024 * 1024 + 17);
    await store.put('data/cd/x', data);
    assert.deepEqual(Buffer.from(await store.get('data/cd/x')), data);
  });
});

describe('choosing direct or buffered writes by measuring them', () => {
  const MiB = 1024 * 1024;
  /** Writes `bytes` in 1 MiB writes at the given speeds (MB/s per mode); returns the mode of each write. */
  function run(chooser: WriteModeChooser, bytes: number, speed: Record<WriteMode, number>): WriteMode[] {
    const modes: WriteMode[] = [];
    for (let done = 0; done < bytes; done += MiB) {
      const mode = chooser.mode;
      modes.push(mode);
      chooser.record(mode, MiB, MiB / (speed[mode] * 1e6));
    }
    return modes;
  }

  it('tries direct, then buffered, then keeps to the faster', () => {
    for (const [speed, winner] of [
      [{ direct: 400, buffered: 900 }, 'buffered'],
      [{ direct: 900, buffered: 400 }, 'direct'],
    ] as const) {
      const chooser = new WriteModeChooser(4 * MiB, 1024 * MiB);
      const modes = run(chooser, 40 * MiB, speed);
      assert.deepEqual(modes.slice(0, 8), ['direct', 'direct', 'direct', 'direct', 'buffered', 'buffered', 'buffered', 'buffered']);
      assert.ok(modes.slice(8).every((m) => m === winner), `every write after the two windows is ${winner}`);
    }
  });

  it('measures the other way again now and then, and follows a machine whose speeds change', () => {
    // Prepare: buffered is faster at first.
    const chooser = new WriteModeChooser(4 * MiB, 16 * MiB);
    run(chooser, 8 * MiB, { direct: 400, buffered: 900 });
    assert.equal(chooser.mode, 'buffered', 'buffered is chosen while it is the faster');
    // Act: the page cache becomes slow (memory pressure); direct is now the faster.
    const later = run(chooser, 64 * MiB, { direct: 400, buffered: 100 });
    // Assess: one buffered window is measured slower than direct was; from then on direct is
    // written, but for one buffered window every 16 MiB that checks again.
    assert.deepEqual(later.slice(0, 5), ['buffered', 'buffered', 'buffered', 'buffered', 'direct']);
    const buffered = later.slice(4).filter((m) => m === 'buffered').length;
    assert.ok(buffered <= 12, `after the switch, ${buffered} MiB of 60 were written buffered (the re-measurements)`);
    assert.ok((chooser.rates.buffered ?? Infinity) < (chooser.rates.direct ?? 0), 'buffered is measured the slower');
  });

  it('re-measures a losing mode only for one window per re-probe interval', () => {
    const chooser = new WriteModeChooser(4 * MiB, 32 * MiB);
    const modes = run(chooser, 200 * MiB, { direct: 400, buffered: 900 });
    const probes = modes.slice(8).filter((m) => m === 'direct').length;
    // 192 MiB after the first two windows: about one 4 MiB direct window per 32 MiB buffered.
    assert.ok(probes > 0 && probes <= 6 * 4, `direct was re-measured (${probes} MiB of 192)`);
  });

  it('ignores a write reported for the mode it has just left', () => {
    const chooser = new WriteModeChooser(4 * MiB, 1024 * MiB);
    run(chooser, 4 * MiB, { direct: 400, buffered: 900 });
    assert.equal(chooser.mode, 'buffered');
    // A write in a mode the current window does not measure is ignored (the writer reports
    // buffered writes during a direct window once the filesystem refused direct I/O).
    chooser.record('direct', 64 * MiB, 100);
    run(chooser, 4 * MiB, { direct: 400, buffered: 900 });
    assert.equal(chooser.mode, 'buffered');
    assert.ok((chooser.rates.buffered ?? 0) > 800e6);
  });
});
