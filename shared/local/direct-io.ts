// Direct I/O (O_DIRECT) for the big sequential writes of the data mover: pack
// files in a folder repository and restored disk images.
//
// Why: a buffered write copies every byte into the page cache, and on VMs whose
// memory the hypervisor backs lazily (Firecracker, many cloud workers) filling
// fresh page-cache pages costs far more than the copy itself — measured here,
// 1.4 GB of buffered 512 KiB writes took 2.1 s of kernel CPU, the same writes
// with O_DIRECT 0.2 s. Packs are flushed to the device before they become visible
// either way, so bypassing the cache loses nothing. A restored image is not flushed
// (unless asked), and there the faster way differs between machines: WriteModeChooser
// measures both. Reads stay buffered: reading the source images with O_DIRECT made a
// backup slower here (each read waits on the device) without saving kernel CPU.
//
// Direct I/O needs the buffer address, the file offset and the length aligned
// to the device's logical block size. Node cannot say where a Buffer lives, so
// memory that must be aligned comes from WebAssembly memories (they start on a
// page boundary; Buffer.alloc's do not). A write from memory that turns out to
// be misaligned is refused by the kernel at once (EINVAL, nothing written) and
// goes through an aligned bounce buffer instead. A filesystem that refuses
// O_DIRECT altogether (some FUSE and network filesystems) gets buffered writes.

import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';

/** Alignment of addresses, offsets and lengths: the largest logical block size in common use. */
export const DIRECT_IO_ALIGNMENT = 4096;
const WASM_PAGE = 65536;
const BOUNCE_SIZE = 4 * 1024 * 1024;

// The WebAssembly global without the DOM typings this project does not load.
const { Memory } = (globalThis as unknown as { WebAssembly: { Memory: new (d: { initial: number; maximum: number; shared?: boolean }) => { buffer: ArrayBuffer } } }).WebAssembly;

function wasmPages(bytes: number): number {
  return Math.max(1, Math.ceil(bytes / WASM_PAGE));
}

/** A zero-filled Buffer of `bytes` whose first byte is page-aligned. */
export function alignedBuffer(bytes: number): Buffer {
  const pages = wasmPages(bytes);
  return Buffer.from(new Memory({ initial: pages, maximum: pages }).buffer, 0, bytes);
}

/** Zero-filled shared memory (for worker threads) whose first byte is page-aligned. */
export function alignedSharedMemory(bytes: number): SharedArrayBuffer {
  const pages = wasmPages(bytes);
  return new Memory({ initial: pages, maximum: pages, shared: true }).buffer as unknown as SharedArrayBuffer;
}

/** True when direct I/O is possible on this platform at all (Linux and most Unix; not macOS or Windows). */
export const directIoAvailable = typeof constants.O_DIRECT === 'number' && constants.O_DIRECT !== 0;

/**
 * Opens `path` for writing with O_DIRECT added to `flags`; undefined when the platform
 * or the filesystem refuses direct I/O (the caller then writes through the page cache).
 */
export async function openDirect(path: string, flags: number): Promise<FileHandle | undefined> {
  if (!directIoAvailable) return undefined;
  try {
    return await open(path, flags | constants.O_DIRECT);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EINVAL' || (e as NodeJS.ErrnoException).code === 'ENOTSUP') return undefined;
    throw e;
  }
}

/** The filesystem refused a direct write even from aligned memory: write the same data again through the page cache. */
export class DirectIoRefusedError extends Error {
  override name = 'DirectIoRefusedError';
}

const bounces: Buffer[] = [];
function takeBounce(): Buffer {
  return bounces.pop() ?? alignedBuffer(BOUNCE_SIZE);
}
function giveBounce(b: Buffer): void {
  if (bounces.length < 4) bounces.push(b);
}

/** Writes data[offset, offset + length) at `position`, however many writes the kernel takes for it. */
export async function writeAll(fh: FileHandle, data: Uint8Array, offset: number, length: number, position: number): Promise<void> {
  let done = 0;
  while (done < length) {
    const { bytesWritten } = await fh.write(data, offset + done, length - done, position + done);
    if (bytesWritten === 0) throw new Error(`write at ${position + done} made no progress`);
    done += bytesWritten;
  }
}

const isEinval = (e: unknown) => (e as NodeJS.ErrnoException)?.code === 'EINVAL';

/**
 * Writes `data` at `position` (a multiple of DIRECT_IO_ALIGNMENT) through a handle from
 * openDirect. Straight from `data` when it is aligned, else through an aligned bounce
 * buffer. A length that is not a multiple of the alignment is padded with zeros: the file
 * may grow past `position + data.length`, and the caller truncates it back to its size
 * (returns true when it padded). Throws DirectIoRefusedError when the filesystem refuses
 * direct writes even from aligned memory: the caller writes the same data through the page cache.
 */
export async function writeDirect(fh: FileHandle, data: Uint8Array, position: number): Promise<boolean> {
  if (position % DIRECT_IO_ALIGNMENT !== 0) throw new RangeError(`direct write at ${position}: not a multiple of ${DIRECT_IO_ALIGNMENT}`);
  const whole = data.length - (data.length % DIRECT_IO_ALIGNMENT);
  let done = 0;
  if (whole > 0) {
    try {
      await writeAll(fh, data, 0, whole, position);
      done = whole;
    } catch (e) {
      // Misaligned memory (or a filesystem that refuses): the bounce buffer below tells which.
      if (!isEinval(e)) throw e;
    }
  }
  if (done === data.length) return false;
  const bounce = takeBounce();
  try {
    while (done < data.length) {
      const n = Math.min(bounce.length, data.length - done);
      bounce.set(data.subarray(done, done + n));
      const padded = Math.ceil(n / DIRECT_IO_ALIGNMENT) * DIRECT_IO_ALIGNMENT;
      if (padded > n) bounce.fill(0, n, padded);
      try {
        await writeAll(fh, bounce, 0, padded, position + done);
      } catch (e) {
        if (isEinval(e)) throw new DirectIoRefusedError(`the filesystem refuses direct writes (${(e as Error).message})`, { cause: e });
        throw e;
      }
      done += n;
    }
  } finally {
    giveBounce(bounce);
  }
  return data.length % DIRECT_IO_ALIGNMENT !== 0;
}

export type WriteMode = 'direct' | 'buffered';

/**
 * Picks direct or buffered writes for a long run of big writes by measuring both on this
 * machine, because which is faster depends on the machine: where the hypervisor backs memory
 * lazily, filling page-cache pages costs more than the device write (buffered writes took ten
 * times the kernel CPU of direct ones); where the virtual disk is slow to acknowledge each
 * write, one direct write at a time waits on it and buffered restores were a quarter faster
 * (both measured here, on 2 GiB restores; more direct writes in flight did not help: ext4
 * takes them one at a time on a file whose blocks are being allocated).
 *
 * It writes the first `window` bytes direct, the next `window` buffered, then keeps to the
 * faster; every `reprobe` bytes it measures the other mode again for one window, so a machine
 * whose disk or memory changes speed mid-restore is followed. Rates are bytes per second of
 * time spent inside write calls, one write in flight at a time, so they are what the writer
 * actually waits for: filling page-cache pages happens inside a buffered write call, and once
 * dirty pages pass the kernel's limits the buffered calls slow to the device's pace and the
 * next windows say so. What is not counted is the flusher threads' CPU writing the cache back
 * later. Pure bookkeeping: the caller times the writes.
 */
export class WriteModeChooser {
  private readonly rate: Record<WriteMode, number | undefined> = { direct: undefined, buffered: undefined };
  private windowMode: WriteMode = 'direct';
  private windowBytes = 0;
  private windowSeconds = 0;
  private sinceProbe = 0;
  private chosen: WriteMode | undefined;

  constructor(
    readonly window = 64 * 1024 * 1024,
    readonly reprobe = 1024 * 1024 * 1024,
  ) {}

  /** The mode for the next write. */
  get mode(): WriteMode {
    return this.windowMode;
  }

  /** Bytes per second measured for each mode (undefined until its first window). */
  get rates(): Readonly<Record<WriteMode, number | undefined>> {
    return this.rate;
  }

  /** Records one write made in `mode`, which took `seconds`. */
  record(mode: WriteMode, bytes: number, seconds: number): void {
    if (mode !== this.windowMode) return;
    this.windowBytes += bytes;
    this.windowSeconds += seconds;
    this.sinceProbe += bytes;
    if (this.windowBytes < this.window) return;
    this.rate[mode] = this.windowBytes / Math.max(this.windowSeconds, 1e-9);
    this.windowBytes = 0;
    this.windowSeconds = 0;
    const other: WriteMode = mode === 'direct' ? 'buffered' : 'direct';
    if (this.rate[other] === undefined) {
      this.windowMode = other;
      return;
    }
    const faster: WriteMode = this.rate.direct! >= this.rate.buffered! ? 'direct' : 'buffered';
    if (mode !== this.chosen || faster !== mode) {
      // A probe window (or the first choice) just ended, or the chosen mode fell behind: keep
      // to the faster from here.
      this.chosen = faster;
      this.windowMode = faster;
      this.sinceProbe = 0;
    } else if (this.sinceProbe >= this.reprobe) {
      this.windowMode = other;
      this.sinceProbe = 0;
    }
  }
}
