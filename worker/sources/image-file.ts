// A raw disk image file as a BlockSource, and as a BlockSink for restore.
//
// Changed blocks come from block digest maps: `<image>.blockmap` holds the
// SHA-256 of every block, written when the snapshot is taken (the local
// snapshot adapter calls writeBlockDigestMap). Comparing two maps gives the
// changed-block list the way EBS ListChangedBlocks does, without reading either
// image again.

import { constants } from 'node:fs';
import { open, rename, rm, stat, writeFile, readFile, type FileHandle } from 'node:fs/promises';
import { resolve as resolvePath } from 'node:path';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import type { BlockSink, BlockSource, ChangedBlocks } from '../../shared/ports/block-source.js';
import { NotFoundError, RepositoryError, ValidationError } from '../../shared/core/errors.js';
import { DEFAULT_BLOCK_SIZE } from '../format.js';
import { DIRECT_IO_ALIGNMENT, DirectIoRefusedError, WriteModeChooser, openDirect, writeAll, writeDirect, type WriteMode } from '../../shared/local/direct-io.js';

// Header: magic, block size (u32), image size (u64), image mtime in ms (f64). The size and
// mtime tie a map to the image it describes: a map older than its image is never trusted.
const MAP_MAGIC = Buffer.from('TBM2', 'ascii');
const MAP_HEADER = 24;
const ZERO_DIGEST = Buffer.alloc(32);

export function digestMapPath(imagePath: string): string {
  return `${imagePath}.blockmap`;
}

async function openImage(path: string): Promise<{ fh: FileHandle; size: number }> {
  try {
    const fh = await open(path, 'r');
    const st = await fh.stat();
    if (!st.isFile() && !st.isBlockDevice()) {
      await fh.close();
      throw new ValidationError(`${path} is not a disk image file`);
    }
    return { fh, size: st.size };
  } catch (e: any) {
    if (e?.code === 'ENOENT') throw new NotFoundError(`disk image ${path} does not exist — check the disk path in tender.config.yaml`);
    if (e?.code === 'EACCES') throw new NotFoundError(`disk image ${path} cannot be read (permission denied) — run as a user who can read it`);
    throw e;
  }
}

function isZero(b: Buffer, zero: Buffer): boolean {
  return b.length === zero.length ? b.equals(zero) : b.equals(zero.subarray(0, b.length));
}

/** Hashes every block of an image into `<image>.blockmap`. All-zero blocks get the zero digest. */
export async function writeBlockDigestMap(imagePath: string, blockSize = DEFAULT_BLOCK_SIZE): Promise<void> {
  const { fh, size } = await openImage(imagePath);
  try {
    const n = Math.ceil(size / blockSize);
    const out = Buffer.alloc(MAP_HEADER + n * 32);
    MAP_MAGIC.copy(out, 0);
    out.writeUInt32LE(blockSize, 4);
    out.writeBigUInt64LE(BigInt(size), 8);
    out.writeDoubleLE((await fh.stat()).mtimeMs, 16);
    const buf = Buffer.allocUnsafe(blockSize);
    const zero = Buffer.alloc(blockSize);
    for (let i = 0; i < n; i++) {
      const len = Math.min(blockSize, size - i * blockSize);
      const { bytesRead } = await fh.read(buf, 0, len, i * blockSize);
      const block = buf.subarray(0, bytesRead);
      const digest = isZero(block, zero) ? ZERO_DIGEST : createHash('sha256').update(block).digest();
      digest.copy(out, MAP_HEADER + i * 32);
    }
    await writeFile(`${digestMapPath(imagePath)}.tmp`, out);
    await rename(`${digestMapPath(imagePath)}.tmp`, digestMapPath(imagePath));
  } finally {
    await fh.close();
  }
}

/** The digest map of an image, or undefined when there is none or it no longer matches the image. */
async function readDigestMap(imagePath: string): Promise<{ blockSize: number; size: number; digests: Buffer } | undefined> {
  let b: Buffer;
  let st;
  try {
    [b, st] = await Promise.all([readFile(digestMapPath(imagePath)), stat(imagePath)]);
  } catch (e: any) {
    if (e?.code === 'ENOENT') return undefined;
    throw e;
  }
  if (b.length < MAP_HEADER || !b.subarray(0, 4).equals(MAP_MAGIC)) return undefined;
  const size = Number(b.readBigUInt64LE(8));
  if (size !== st.size || b.readDoubleLE(16) !== st.mtimeMs) return undefined;
  return { blockSize: b.readUInt32LE(4), size, digests: b.subarray(MAP_HEADER) };
}

/**
 * Blocks of the image that hold extents, from `filefrag -s -e` (FIEMAP, after a sync so
 * delayed allocations have real extents), so holes
 * are never read — as borg does with SEEK_DATA. Unwritten (preallocated)
 * extents read as zeros and are skipped. Returns undefined — read every block —
 * whenever the answer cannot be trusted: no filefrag, a filesystem without
 * FIEMAP, output it cannot parse, or extents that do not add up to what the
 * file has allocated.
 */
export async function allocatedBlocksOfFile(path: string, blockSize: number, size: number, allocatedBytes: number): Promise<number[] | undefined> {
  const out = await new Promise<string | undefined>((resolve) =>
    execFile('filefrag', ['-s', '-e', path], { timeout: 20_000, maxBuffer: 64 * 1024 * 1024, env: { ...process.env, LC_ALL: 'C' } }, (err, stdout) => resolve(err ? undefined : stdout)),
  );
  if (!out) return undefined;
  const unit = /\((\d+) blocks of (\d+) bytes\)/.exec(out);
  if (!unit) return undefined;
  const fsBlock = Number(unit[2]);
  const blocks = new Set<number>();
  let extentBytes = 0;
  let extents = 0;
  for (const line of out.split('\n')) {
    const m = /^\s*\d+:\s+(\d+)\.\.\s*(\d+):\s+\d+\.\.\s*\d+:\s+(\d+):\s*(?:\d+:)?\s*(.*)$/.exec(line);
    if (!m) continue;
    extents++;
    const first = Number(m[1]) * fsBlock;
    const end = (Number(m[2]) + 1) * fsBlock;
    if (Number(m[3]) * fsBlock !== end - first) return undefined;
    extentBytes += end - first;
    if (/\bunwritten\b/.test(m[4] ?? '')) continue;
    const last = Math.min(end, size) - 1;
    for (let b = Math.floor(first / blockSize); b <= Math.floor(last / blockSize); b++) blocks.add(b);
  }
  // filefrag's own count merges physically contiguous extents, so it is no check of the lines read.
  if (!/\d+ extents? found/.test(out) || (extents === 0 && allocatedBytes > 0)) return undefined;
  // Every allocated byte must be accounted for (the extent tree itself may take a few blocks more).
  if (extentBytes > allocatedBytes || allocatedBytes - extentBytes > Math.max(1024 * 1024, allocatedBytes / 100)) return undefined;
  return [...blocks].sort((a, b) => a - b);
}

export interface ImageSourceOptions {
  blockSize?: number;
}

export async function openImageSource(path: string, opts: ImageSourceOptions = {}): Promise<BlockSource> {
  const blockSize = opts.blockSize ?? DEFAULT_BLOCK_SIZE;
  const { fh, size } = await openImage(path);
  const n = Math.ceil(size / blockSize);
  const all = () => Array.from({ length: n }, (_, i) => i);
  const source: BlockSource = {
    size,
    blockSize,
    // Holes are skipped when the filesystem can say where they are; all-zero blocks that are
    // allocated are still read, and the backup does not store them.
    allocatedBlocks: async () => {
      const st = await fh.stat();
      return (st.isFile() && (await allocatedBlocksOfFile(path, blockSize, size, st.blocks * 512))) || all();
    },
    async changedBlocks(parent: string): Promise<ChangedBlocks> {
      if (resolvePath(parent) === resolvePath(path)) return { blocks: all(), incremental: false, reason: `the parent snapshot is the image itself (${path}) — full read` };
      const prev = await readDigestMap(parent);
      if (!prev) return { blocks: all(), incremental: false, reason: `no up-to-date block digest map for the parent snapshot ${parent} — full read` };
      let cur = await readDigestMap(path);
      if (!cur) {
        await writeBlockDigestMap(path, blockSize);
        cur = await readDigestMap(path);
      }
      if (!cur || cur.blockSize !== blockSize || prev.blockSize !== blockSize) {
        return { blocks: all(), incremental: false, reason: `block digest maps use another block size than ${blockSize} — full read` };
      }
      const blocks: number[] = [];
      for (let i = 0; i < n; i++) {
        const a = cur.digests.subarray(i * 32, i * 32 + 32);
        const b = i * 32 < prev.digests.length ? prev.digests.subarray(i * 32, i * 32 + 32) : ZERO_DIGEST;
        if (!a.equals(b)) blocks.push(i);
      }
      return { blocks, incremental: true };
    },
    async readBlock(index: number): Promise<Uint8Array> {
      const buf = Buffer.allocUnsafe(Math.min(blockSize, Math.max(0, size - index * blockSize)));
      await source.readBlockInto!(index, buf);
      return buf;
    },
    async readBlockInto(index: number, target: Uint8Array): Promise<number> {
      if (index < 0 || index >= n) throw new ValidationError(`block ${index} is outside ${path} (${n} blocks)`);
      const len = Math.min(blockSize, size - index * blockSize);
      let done = 0;
      while (done < len) {
        const { bytesRead } = await fh.read(target, done, len - done, index * blockSize + done);
        if (bytesRead === 0) throw new RepositoryError(`${path} ended early while reading block ${index}: was the image truncated during the backup?`);
        done += bytesRead;
      }
      return len;
    },
    close: () => fh.close(),
  };
  return source;
}

export interface ImageSinkOptions {
  blockSize?: number;
  /** Replace an existing file (default: refuse, so a restore never overwrites a disk by accident). */
  overwrite?: boolean;
  /**
   * fsync the image before it is renamed into place. Off by default, as in cp, borg and
   * restic: the data is complete and correct either way; sync makes it survive a power cut
   * right after the restore, at the cost of waiting for the whole disk to reach the device.
   */
  sync?: boolean;
  /**
   * true: write with direct I/O, bypassing the page cache, where the filesystem allows it;
   * false: through the page cache. Default: measured — the first writes try both and the
   * faster on this machine is kept (WriteModeChooser in shared/local/direct-io.ts); with
   * `sync`, direct, since every byte must reach the device before the restore ends anyway.
   */
  direct?: boolean;
  /** How the default measures (bytes per window, bytes between re-measurements; tests lower them). */
  measure?: { window: number; reprobe: number };
}

/**
 * Writes a raw image. Blocks never written stay holes (read as zeros). The image
 * is assembled in `<path>.partial` and renamed into place by finish(), so a
 * failed restore never leaves a half-written file under the target name. A block
 * device (with `overwrite`) is written in place instead (`createDeviceSink`).
 */
export async function createImageSink(path: string, sizeBytes: number, opts: ImageSinkOptions = {}): Promise<BlockSink> {
  const blockSize = opts.blockSize ?? DEFAULT_BLOCK_SIZE;
  const existing = await stat(path).catch(() => undefined);
  if (existing?.isBlockDevice()) return createDeviceSink(path, sizeBytes, blockSize, opts);
  if (existing && !opts.overwrite) throw new ValidationError(`${path} already exists — restore to a new path, or pass --overwrite to replace it`);
  if (existing && !existing.isFile()) throw new ValidationError(`${path} is neither a regular file nor a block device — restore to an image file or onto a disk device`);
  const partial = `${path}.partial`;
  const fh = await open(partial, 'w');
  let blocks: BlockWriter;
  try {
    await fh.truncate(sizeBytes);
    blocks = await blockWriter(fh, partial, blockSize, opts);
  } catch (e) {
    await fh.close().catch(() => undefined);
    await rm(partial, { force: true });
    throw e;
  }
  return {
    blockSize,
    writeBlock: blocks.write,
    async finish(): Promise<string> {
      await blocks.idle();
      // Truncates away any padding a direct write of a short last block added.
      await fh.truncate(sizeBytes);
      if (opts.sync) await fh.sync();
      await blocks.close();
      await rename(partial, path);
      return path;
    },
    async abort(): Promise<void> {
      await blocks.idle().catch(() => undefined);
      await blocks.close().catch(() => undefined);
      await rm(partial, { force: true });
    },
  };
}

/**
 * Writes a disk onto a block device, in place (`--target /dev/sdX --overwrite`): no partial
 * file and no rename (a device node is not a file to replace), every block written — zeros too,
 * since the device holds old data — and the device must be at least the disk's size. Written
 * direct and flushed before finish() returns, `sync` or not.
 */
async function createDeviceSink(path: string, sizeBytes: number, blockSize: number, opts: ImageSinkOptions): Promise<BlockSink> {
  if (!opts.overwrite) throw new ValidationError(`${path} is a block device — pass --overwrite to write the restored disk onto it (everything on it is replaced)`);
  const fh = await open(path, 'r+');
  let blocks: BlockWriter;
  try {
    // A block device reads nothing past its end: the disk's last byte must be readable.
    const probe = Buffer.alloc(1);
    const { bytesRead } = sizeBytes > 0 ? await fh.read(probe, 0, 1, sizeBytes - 1) : { bytesRead: 1 };
    if (bytesRead !== 1) throw new ValidationError(`${path} is smaller than the disk (${sizeBytes} bytes) — restore onto a device at least that large`);
    // Written direct (not measured): a device is often detached right after a restore, and a
    // direct write reports the device's error at once, where a buffered one would fail unseen
    // in write-back. A short last block goes through the page cache (a direct write would pad
    // it to 4 KiB, past the disk's end), and finish() flushes the device either way.
    blocks = await blockWriter(fh, path, blockSize, { ...opts, direct: opts.direct ?? true }, { shortBlocksBuffered: true });
  } catch (e) {
    await fh.close().catch(() => undefined);
    throw e;
  }
  return {
    blockSize,
    hasBase: true,
    writeBlock: blocks.write,
    async finish(): Promise<string> {
      await blocks.idle();
      await fh.sync();
      await blocks.close();
      return path;
    },
    async abort(): Promise<void> {
      // Nothing to take back: the device holds what was written so far (the error says the restore failed).
      await blocks.idle().catch(() => undefined);
      await blocks.close().catch(() => undefined);
    },
  };
}

interface BlockWriter {
  write(index: number, data: Uint8Array): Promise<void>;
  idle(): Promise<void>;
  /** Closes the direct handle and `fh`. */
  close(): Promise<void>;
}

/** Block writes to `fh` (and a direct-I/O handle on `path` where the filesystem allows it), grouped into vectored writes. */
async function blockWriter(fh: FileHandle, path: string, blockSize: number, opts: ImageSinkOptions, how: { shortBlocksBuffered?: boolean } = {}): Promise<BlockWriter> {
  // A second handle on the same file for direct writes; the buffered one writes when the
  // filesystem refuses them, and whenever the chooser finds buffered writes the faster.
  let direct = opts.direct !== false && blockSize % DIRECT_IO_ALIGNMENT === 0 ? await openDirect(path, constants.O_WRONLY) : undefined;
  /** Which way the next write goes, measured on this machine, unless the caller said. */
  const chooser = opts.direct === undefined && !opts.sync ? new WriteModeChooser(opts.measure?.window, opts.measure?.reprobe) : undefined;
  let closed = false;
  const writeOne = async (index: number, data: Uint8Array, mode: WriteMode) => {
    if (direct && mode === 'direct' && !(how.shortBlocksBuffered && data.length % DIRECT_IO_ALIGNMENT !== 0)) {
      try {
        await writeDirect(direct, data, index * blockSize);
        return;
      } catch (e) {
        if (!(e instanceof DirectIoRefusedError)) throw e;
        await direct.close().catch(() => undefined);
        direct = undefined;
      }
    }
    await writeAll(fh, data, 0, data.length, index * blockSize);
  };
  /** Consecutive whole blocks in one pwritev; anything the kernel will not take that way goes block by block. */
  const writeRun = async (run: QueuedBlock[]) => {
    const mode: WriteMode = !direct ? 'buffered' : (chooser?.mode ?? 'direct');
    const started = performance.now();
    await writeRunAs(run, mode);
    chooser?.record(mode, run.reduce((n, b) => n + b.data.length, 0), (performance.now() - started) / 1000);
  };
  const writeRunAs = async (run: QueuedBlock[], mode: WriteMode) => {
    const target = mode === 'direct' && direct ? direct : fh;
    const bytes = run.length * blockSize;
    if (run.length > 1 && run.every((b) => b.data.length === blockSize)) {
      try {
        const { bytesWritten } = await target.writev(run.map((b) => b.data), run[0]!.index * blockSize);
        if (bytesWritten === bytes) return;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EINVAL') throw e;
      }
    }
    for (const b of run) await writeOne(b.index, b.data, mode);
  };
  const writer = createGroupWriter(writeRun, MAX_RUN_BLOCKS);
  return {
    write: (index, data) => writer.write(index, data),
    idle: () => writer.idle(),
    async close() {
      if (closed) return;
      closed = true;
      await direct?.close();
      await fh.close();
    },
  };
}

interface QueuedBlock {
  index: number;
  data: Uint8Array;
  settle: (e?: unknown) => void;
}

/** Most blocks one write takes (16 MiB of 512 KiB blocks; IOV_MAX is 1024). */
const MAX_RUN_BLOCKS = 32;

/**
 * Group commit for block writes. One write is in flight at a time (concurrent writes to one
 * file only queue on its inode lock); blocks that arrive meanwhile wait, and the next write
 * takes the lowest-numbered of them with every queued block that follows it without a gap,
 * as one vectored write. It never waits for more blocks to arrive, so a caller that writes
 * one block at a time still makes progress; a restore with blocks decoding on every core
 * gets a few large writes instead of many small ones. Each block's promise settles once its
 * bytes are written, so the caller keeps its buffer until then.
 */
export function createGroupWriter(writeRun: (run: QueuedBlock[]) => Promise<void>, maxRun: number) {
  const queue = new Map<number, QueuedBlock>();
  let pumping: Promise<void> | undefined;
  const takeRun = (): QueuedBlock[] => {
    let first = Infinity;
    for (const i of queue.keys()) if (i < first) first = i;
    const run: QueuedBlock[] = [];
    for (let i = first; run.length < maxRun && queue.has(i); i++) {
      run.push(queue.get(i)!);
      queue.delete(i);
    }
    return run;
  };
  const pump = async () => {
    while (queue.size) {
      const run = takeRun();
      try {
        await writeRun(run);
        for (const b of run) b.settle();
      } catch (e) {
        for (const b of run) b.settle(e);
      }
    }
    pumping = undefined;
  };
  return {
    write(index: number, data: Uint8Array): Promise<void> {
      return new Promise<void>((resolve, reject) => {
        const earlier = queue.get(index);
        // The same block written twice before either landed: the later bytes win, as with pwrite.
        if (earlier) earlier.settle();
        queue.set(index, { index, data, settle: (e) => (e ? reject(e) : resolve()) });
        pumping ??= pump();
      });
    },
    /** Resolves once every queued block is written (or failed). */
    async idle(): Promise<void> {
      while (pumping) await pumping;
    },
  };
}
