// Restore of one disk of a restore point into a BlockSink. Blocks are fetched
// pack by pack in coalesced ranges, opened on the codec threads (AES-GCM
// authenticates each block against its ID) and written where the block map
// puts them; zero blocks are never written, so image sinks stay sparse.

import { createHash } from 'node:crypto';
import type { BlockSink } from '../shared/ports/block-source.js';
import type { JobProgress } from '../shared/ports/cloud.js';
import { CorruptObjectError, NotFoundError } from '../shared/core/errors.js';
import { eachLimit, type Repository } from './repository.js';
import type { ObjectReader } from '../shared/ports/object-store.js';
import { blockCount, isZeroId, mapGet, packKey, type BlobLocation, type ManifestDisk } from './format.js';

/** A run of blobs read from one pack with one ranged GET. */
interface ReadRange {
  pack: string;
  offset: number;
  length: number;
  blobs: Array<{ id: Buffer; loc: BlobLocation; blocks: number[] }>;
}

const MAX_RANGE = 4 * 1024 * 1024;
const MAX_GAP = 256 * 1024;

/** A block map names a block no index holds. Reported under CorruptObjectError's name, as before. */
export class MissingBlockError extends CorruptObjectError {
  constructor(objectKey: string, message: string) {
    super(objectKey, message);
    this.name = 'CorruptObjectError';
  }
}

export interface ReadPlan {
  /** Blocks that hold data (the rest read as zeros). */
  dataBlocks: number;
  /** Ranges pack by pack, in offset order, each blob once however many blocks use it; made as they are taken. */
  ranges(): IterableIterator<ReadRange>;
}

/**
 * Plans the reads of a block map. Memory is typed arrays, 20 bytes per data block besides the
 * map itself: a disk of many millions of distinct blocks plans in a few hundred MiB, where an
 * object per block would not fit a worker's heap (or one Map, past 2^24 blocks).
 */
export function planReads(repo: Repository, map: Buffer, n: number, mapKey: string): ReadPlan {
  let dataBlocks = 0;
  for (let i = 0; i < n; i++) if (!isZeroId(mapGet(map, i))) dataBlocks++;
  const block = new Uint32Array(dataBlocks);
  const pack = new Uint32Array(dataBlocks);
  const offset = new Uint32Array(dataBlocks);
  const length = new Uint32Array(dataBlocks);
  const raw = new Uint32Array(dataBlocks);
  const loc = new Uint32Array(4);
  let k = 0;
  for (let i = 0; i < n; i++) {
    const id = mapGet(map, i);
    if (isZeroId(id)) continue;
    if (!repo.index.lookup(id, loc)) throw new MissingBlockError(mapKey, `names block ${id.toString('hex').slice(0, 16)}… that no index holds — run \`tender-worker verify\`; restore from another restore point`);
    block[k] = i;
    pack[k] = loc[0]!;
    offset[k] = loc[1]!;
    length[k] = loc[2]!;
    raw[k] = loc[3]!;
    k++;
  }
  // Counting sort by pack, then by offset within each pack (a few hundred blocks at most).
  const packs = repo.index.packCount;
  const start = new Uint32Array(packs + 1);
  for (let j = 0; j < dataBlocks; j++) start[pack[j]! + 1]!++;
  for (let p = 0; p < packs; p++) start[p + 1]! += start[p]!;
  const order = new Uint32Array(dataBlocks);
  const fill = start.slice(0, packs);
  for (let j = 0; j < dataBlocks; j++) order[fill[pack[j]!]!++] = j;

  function* ranges(): IterableIterator<ReadRange> {
    for (let p = 0; p < packs; p++) {
      const members = order.subarray(start[p]!, start[p + 1]!);
      if (members.length === 0) continue;
      members.sort((a, b) => offset[a]! - offset[b]! || a - b);
      const name = repo.index.packName(p);
      let cur: ReadRange | undefined;
      for (let m = 0; m < members.length; m++) {
        const j = members[m]!;
        // The same blob (an identical block) again: one more place to write it. Two different IDs
        // at one location (a damaged index) stay two blobs: each is decoded and checked against
        // its own ID, so the wrong one fails loudly instead of being written.
        const prev = cur?.blobs.at(-1);
        if (prev && prev.loc.offset === offset[j] && map.compare(map, block[j]! * 32, block[j]! * 32 + 32, prev.blocks[0]! * 32, prev.blocks[0]! * 32 + 32) === 0) {
          prev.blocks.push(block[j]!);
          continue;
        }
        const b = { id: Buffer.from(mapGet(map, block[j]!)), loc: { pack: name, offset: offset[j]!, length: length[j]!, rawLength: raw[j]! }, blocks: [block[j]!] };
        const end = b.loc.offset + b.loc.length;
        if (cur && b.loc.offset - (cur.offset + cur.length) <= MAX_GAP && end - cur.offset <= MAX_RANGE) {
          cur.length = end - cur.offset;
          cur.blobs.push(b);
        } else {
          if (cur) yield cur;
          cur = { pack: name, offset: b.loc.offset, length: b.loc.length, blobs: [b] };
        }
      }
      if (cur) yield cur;
    }
  }
  return { dataBlocks, ranges };
}

export interface RestoreResult {
  bytesWritten: number;
  sizeBytes: number;
  /** The sink's reference (path, snapshot id, disk id). */
  target: string;
}

export function findDisk(disks: ManifestDisk[], diskId: string, restorePointId: string): ManifestDisk {
  const d = disks.find((x) => x.diskId === diskId);
  if (!d) throw new NotFoundError(`restore point ${restorePointId} has no disk "${diskId}" — it has: ${disks.map((x) => x.diskId).join(', ')}`);
  return d;
}

export async function restoreDisk(
  repo: Repository,
  restorePointId: string,
  diskId: string,
  sink: BlockSink,
  onProgress?: (p: JobProgress) => void,
): Promise<RestoreResult> {
  const started = Date.now();
  try {
    const manifest = await repo.readManifest(restorePointId);
    const disk = findDisk(manifest.disks, diskId, restorePointId);
    if (sink.blockSize !== disk.blockSize) throw new CorruptObjectError(`snapshots/${restorePointId}`, `disk ${diskId} has ${disk.blockSize}-byte blocks; the target writes ${sink.blockSize}`);
    const n = blockCount(disk.sizeBytes, disk.blockSize);
    const map = await repo.readBlockMap(disk.map, n);
    let plan: ReadPlan;
    try {
      plan = planReads(repo, map, n, disk.map.key);
    } catch (e) {
      // A block in no index: its index file may have gone missing while its pack is there. The
      // packs no index names are indexed from their own headers, and the plan made again.
      if (!(e instanceof MissingBlockError) || (await repo.indexFromPackHeaders()) === 0) throw e;
      plan = planReads(repo, map, n, disk.map.key);
    }
    const dataBlocks = plan.dataBlocks;
    const pool = repo.codecs();
    const total = dataBlocks * disk.blockSize;
    let written = 0;
    let last = 0;
    // A store that reads small pieces cheaply (a local folder) reads each block straight into
    // its codec slot: no range buffer, and no copy of every block on the main thread. Any
    // other (S3, Blob) is read in coalesced ranges, a request per few MiB.
    const store = repo.store;
    const missing = (key: string, e: unknown) =>
      e instanceof NotFoundError ? new CorruptObjectError(key, 'is missing: the repository lost data — run `tender-worker verify`', { cause: e }) : e;
    const short = (key: string, got: number, want: number) => new CorruptObjectError(key, `is shorter than its index says (${got} < ${want})`);
    // Several ranges in flight so reads, decoding and writes overlap (memory, when read whole:
    // this many × MAX_RANGE).
    await eachLimit(plan.ranges(), 4, async (r) => {
      const key = packKey(r.pack);
      let buf: Buffer | undefined;
      let reader: ObjectReader | undefined;
      if (store.openReader) {
        reader = await store.openReader(key).catch((e) => {
          throw missing(key, e);
        });
      } else {
        const bytes = await store.get(key, { offset: r.offset, length: r.length }).catch((e) => {
          throw missing(key, e);
        });
        if (bytes.length !== r.length) throw short(key, r.offset + bytes.length, r.offset + r.length);
        buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      }
      const settled = await Promise.allSettled(
        r.blobs.map(async (b) => {
          const slot = await pool.acquire();
          try {
            if (b.loc.length > slot.input.length) throw new CorruptObjectError(key, `block ${b.id.toString('hex').slice(0, 16)}… is ${b.loc.length} bytes, larger than any block this repository writes`);
            if (buf) {
              const start = b.loc.offset - r.offset;
              slot.input.set(buf.subarray(start, start + b.loc.length));
            } else {
              const got = await reader!.read(b.loc.offset, slot.input.subarray(0, b.loc.length));
              if (got !== b.loc.length) throw short(key, b.loc.offset + got, b.loc.offset + b.loc.length);
            }
            let rawLength: number;
            try {
              rawLength = await pool.decode(slot, b.loc.length, b.id, b.loc.rawLength);
            } catch (e) {
              throw new CorruptObjectError(key, `block ${b.id.toString('hex').slice(0, 16)}… at offset ${b.loc.offset}: ${(e as Error).message}`);
            }
            const data = slot.output.subarray(0, rawLength);
            for (const i of b.blocks) {
              await sink.writeBlock(i, data);
              written += rawLength;
            }
          } finally {
            pool.release(slot);
          }
        }),
      );
      // Every read of the range has ended (a failed one does not cut the others short): the reader can go.
      await reader?.close();
      const failed = settled.find((x) => x.status === 'rejected');
      if (failed) throw failed.reason;
      if (onProgress && Date.now() - last > 250) {
        last = Date.now();
        onProgress({ bytesDone: written, bytesTotal: total, bytesPerSecond: Math.round(written / Math.max(0.001, (last - started) / 1000)), diskId });
      }
    });
    if (sink.hasBase) {
      // Over a base (a parent snapshot), an unwritten block would show the base's data.
      const zeros = Buffer.alloc(disk.blockSize);
      for (let i = 0; i < n; i++) {
        if (!isZeroId(mapGet(map, i))) continue;
        const len = Math.min(disk.blockSize, disk.sizeBytes - i * disk.blockSize);
        await sink.writeBlock(i, zeros.subarray(0, len));
      }
    }
    const target = await sink.finish();
    return { bytesWritten: written, sizeBytes: disk.sizeBytes, target };
  } catch (e) {
    await sink.abort().catch(() => undefined);
    throw e;
  }
}

/** SHA-256 of a file, for checking a restored image against its source. */
export async function sha256OfFile(path: string): Promise<string> {
  const { createReadStream } = await import('node:fs');
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 4 * 1024 * 1024 })) h.update(chunk as Buffer);
  return h.digest('hex');
}
