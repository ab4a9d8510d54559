// Backup of one VM's snapshot set into a repository: read (only changed blocks
// when a parent restore point exists), hash, dedup against the whole
// repository, compress + seal on codec threads, pack, check, upload, index,
// and last of all the manifest. Until the manifest is written the restore point
// does not exist; everything uploaded before a crash is adopted by the next run.

import { randomBytes } from 'node:crypto';
import type { BlockSource } from '../shared/ports/block-source.js';
import type { BackupResult, DiskBackupResult, JobProgress } from '../shared/ports/cloud.js';
import { CorruptObjectError, TenderError, TransientError, ValidationError } from '../shared/core/errors.js';
import { mapLimit, type Repository } from './repository.js';
import { PackBuilder, ZERO_ID, packCapacity, blockCount, checkBuiltPack, emptyBlockMap, isZeroId, mapGet, mapSet, packKey, type BuiltPack, type Manifest, type ManifestDisk, type PackEntry } from './format.js';
import { findParent, readAllManifests, type DamagedObject } from './restore-points.js';
import { createLimiter } from './sources/retry.js';
import { alignedBuffer } from '../shared/local/direct-io.js';
import { IdFilter, filterPays } from './id-filter.js';

export interface BackupDisk {
  diskId: string;
  source: BlockSource;
  /** The snapshot this disk is read from; recorded so the next run can use it as its parent. */
  snapshotRef?: string;
  /** The previous snapshot of the same disk: only blocks changed since it are read. */
  parentSnapshotRef?: string;
  device?: string;
}

export interface BackupRequest {
  runId: string;
  policy: string;
  vm: { vmId: string; name: string; tags: Record<string, string> };
  tags: Record<string, string>;
  snapshotSetId: string;
  disks: BackupDisk[];
  onProgress?: (p: JobProgress) => void;
}

/** A source that failed to read: names the disk and block. */
export class SourceReadError extends TenderError {
  readonly retryable = false;
}

/** Uploads packs with bounded concurrency and writes an index every few packs, so a crash loses little. */
class PackUploader {
  private inFlight = new Set<Promise<void>>();
  private unindexed: Array<{ id: string; size: number; entries: PackEntry[] }> = [];
  private failure: unknown;
  uploadedBytes = 0;

  constructor(
    private readonly repo: Repository,
    /** Runs once a pack's blocks are in the repository's index (found there from then on). */
    private readonly onIndexed: (entries: PackEntry[]) => void,
    private readonly concurrency = 2,
    private readonly indexEvery = 8,
  ) {}

  /** Uploads the pack; `done` runs once its buffer is free again (uploaded or failed). */
  async add(pack: BuiltPack, done: () => void): Promise<void> {
    if (this.failure) throw this.failure;
    const problem = checkBuiltPack(this.repo.key.encryption, pack);
    if (problem) throw new CorruptObjectError(packKey(pack.id), `failed its check before upload (${problem}); nothing was uploaded`);
    while (this.inFlight.size >= this.concurrency) await Promise.race(this.inFlight);
    if (this.failure) throw this.failure;
    const p = (async () => {
      try {
        await this.repo.store.put(packKey(pack.id), pack.bytes);
      } finally {
        done();
      }
      this.uploadedBytes += pack.bytes.length;
      this.repo.addPack(pack.id, pack.bytes.length, pack.entries);
      this.onIndexed(pack.entries);
      this.unindexed.push({ id: pack.id, size: pack.bytes.length, entries: pack.entries });
      if (this.unindexed.length >= this.indexEvery) await this.writeIndex();
    })().catch((e) => {
      this.failure ??= e;
    });
    const tracked = p.finally(() => this.inFlight.delete(tracked));
    this.inFlight.add(tracked);
  }

  private async writeIndex(): Promise<void> {
    const batch = this.unindexed;
    this.unindexed = [];
    if (batch.length) await this.repo.writeIndex(batch);
  }

  async finish(): Promise<void> {
    await Promise.all(this.inFlight);
    if (this.failure) throw this.failure;
    await this.writeIndex();
  }

  async drain(): Promise<void> {
    await Promise.allSettled(this.inFlight);
  }
}

export function newRestorePointId(now: Date): string {
  const t = now.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  return `${t}-${randomBytes(4).toString('hex')}`;
}

export async function backupVm(repo: Repository, req: BackupRequest): Promise<BackupResult> {
  const started = Date.now();
  if (req.disks.length === 0) throw new ValidationError(`VM ${req.vm.vmId} has no disks to back up`);
  const badMark = repo.damagedMarks[0];
  if (badMark) {
    // Deduplicating against a pack a prune is about to delete would lose data: no backup until it is replaced.
    throw new CorruptObjectError(badMark.object, `cannot be read (${badMark.message}), so a backup cannot tell which packs a prune is about to delete — run \`tender-worker prune\`, which replaces it, then back up again`);
  }
  const pool = repo.codecs();
  /** Restore points that cannot be read: skipped when looking for a parent (one cannot be a parent). */
  const damagedManifests: DamagedObject[] = [];
  // Independent reads, at once: packs no index names yet and the manifests (only when there is a
  // parent to look for).
  const firstReads = Promise.all([
    repo.adoptUnindexedPacks(),
    req.disks.some((d) => d.parentSnapshotRef) ? readAllManifests(repo, damagedManifests) : Promise.resolve([]),
  ]);
  // Those reads took what the open fetched for them; whatever else it fetched is dropped, so no
  // later read on this repository (the check before the manifest, another run) sees an old copy.
  repo.forgetPrefetched();
  const [, manifests] = await firstReads;
  // Blocks in packs a prune has marked for deletion (the marks the index was loaded with) are
  // stored again, never referenced.
  repo.avoidPacks(repo.marked);

  /**
   * Block IDs sealed in this run and not in the index yet (in flight, or in a pack not uploaded):
   * never sealed twice. An ID leaves once its pack is indexed, so this holds at most the blocks
   * in flight, not every new block of the run (a full backup of a 1 TiB disk would otherwise
   * keep two million of them).
   */
  const pending = new Set<string>();
  const uploadConcurrency = 2;
  const uploader = new PackUploader(repo, (entries) => {
    for (const e of entries) pending.delete(e.id.toString('hex'));
  }, uploadConcurrency);
  // One pack buffer being filled and one per upload in flight: memory is fixed, whatever the disk size.
  const buffers = new BufferRing(uploadConcurrency + 1, packCapacity(repo.config.packSize, pool.slotSize));
  let packBuf = await buffers.acquire();
  let packer = new PackBuilder(repo.key.encryption, packBuf, repo.config.packSize);
  // Pack building is shared state: one block goes in at a time, in arrival order.
  const packing = createLimiter(1);
  const serial = <T>(fn: () => Promise<T>) => packing.run(fn);
  const flushPack = async () => {
    const built = packer.finish();
    const used = packBuf;
    await uploader.add(built, () => buffers.release(used));
    packBuf = await buffers.acquire();
    packer = new PackBuilder(repo.key.encryption, packBuf, repo.config.packSize);
  };

  // Plan every disk first so progress has a total from the start.
  const plans = await Promise.all(
    req.disks.map(async (d) => {
      const bs = d.source.blockSize;
      if (bs !== repo.config.blockSize) throw new ValidationError(`disk ${d.diskId} has ${bs}-byte blocks but the repository uses ${repo.config.blockSize}`);
      const n = blockCount(d.source.size, bs);
      let map = emptyBlockMap(n);
      let blocks: number[];
      let incremental = false;
      let reason: string | undefined;
      let parentId: string | undefined;
      if (d.parentSnapshotRef) {
        const parent = findParent(manifests, req.vm.vmId, d.diskId, d.parentSnapshotRef);
        if (!parent) {
          reason = `no restore point of disk ${d.diskId} from snapshot ${d.parentSnapshotRef} in the repository — full read${damagedManifests.length ? ` (${damagedManifests.length} restore point(s) could not be read: ${damagedManifests.map((x) => x.object).join(', ')} — run \`tender-worker verify\`)` : ''}`;
          blocks = await d.source.allocatedBlocks();
        } else {
          const changed = await d.source.changedBlocks(d.parentSnapshotRef);
          if (changed.incremental && parent.disk.sizeBytes === d.source.size) {
            map = await repo.readBlockMap(parent.disk.map, n);
            // Blocks the parent names that this repository no longer holds (a pack lost, or marked
            // for deletion) are read again from the snapshot: a restore point never inherits a hole.
            const changedSet = new Set(changed.blocks);
            let reread = 0;
            for (let i = 0; i < n; i++) {
              if (changedSet.has(i)) continue;
              const id = map.subarray(i * 32, i * 32 + 32);
              if (!isZeroId(id) && !repo.index.has(id)) {
                changedSet.add(i);
                reread++;
              }
            }
            blocks = reread ? [...changedSet].sort((a, b) => a - b) : changed.blocks;
            if (reread) reason = `${reread} block(s) of the parent restore point are no longer in the repository and were read again`;
            incremental = true;
            parentId = parent.manifest.id;
          } else {
            reason = changed.reason ?? `disk ${d.diskId} changed size since its parent — full read`;
            blocks = changed.incremental ? await d.source.allocatedBlocks() : changed.blocks;
          }
        }
      } else {
        blocks = await d.source.allocatedBlocks();
      }
      return { disk: d, n, map, blocks, incremental, reason, parentId };
    }),
  );

  const totalBytes = plans.reduce((s, p) => s + p.blocks.length * p.disk.source.blockSize, 0);
  let doneBytes = 0;
  let lastReport = 0;
  const report = (diskId: string, force = false) => {
    if (!req.onProgress) return;
    const t = Date.now();
    if (!force && t - lastReport < 250) return;
    lastReport = t;
    const secs = Math.max(0.001, (t - started) / 1000);
    req.onProgress({ bytesDone: doneBytes, bytesTotal: totalBytes, bytesPerSecond: Math.round(doneBytes / secs), diskId });
  };

  // The codec threads compress a block at once when this filter says no run has stored it
  // (worker/id-filter.ts): every block the index names, and every block this run seals. A run
  // too small for the filter to pay for itself goes without (each block then waits for the
  // main thread to ask for its compression).
  const toRead = plans.reduce((s, p) => s + p.blocks.length, 0);
  const known = filterPays(repo.index.size, toRead) ? new IdFilter(repo.index.size + toRead) : undefined;
  if (known) repo.index.forEachIdWords((words, at) => known.addWords(words, at));
  pool.useFilter(known);

  const results: DiskBackupResult[] = [];
  const dataBlocksOf: number[] = [];
  const id = newRestorePointId(repo.now());
  let maps: Promise<Array<{ key: string; sha256: string }>> | undefined;
  // Every codec slot busy: reads run ahead of the codec threads by exactly the slots there are.
  const readAhead = pool.slotCount;
  try {
    for (const plan of plans) {
      const { disk, map } = plan;
      let bytesRead = 0;
      let blocksNew = 0;
      let bytesStored = 0;
      await mapLimit(plan.blocks, readAhead, async (i) => {
        const slot = await pool.acquire();
        try {
          let len: number;
          try {
            if (disk.source.readBlockInto) len = await disk.source.readBlockInto(i, slot.input);
            else {
              const data = await disk.source.readBlock(i);
              slot.input.set(data);
              len = data.length;
            }
          } catch (e) {
            if (e instanceof TenderError && e.retryable) throw e;
            throw new SourceReadError(`cannot read block ${i} of disk ${disk.diskId}: ${(e as Error).message}`, { cause: e });
          }
          bytesRead += len;
          const h = await pool.hash(slot, len, !!known);
          if (h.zero) {
            mapSet(map, i, ZERO_ID);
          } else {
            const hex = h.hex;
            mapSet(map, i, h.id);
            if (!repo.index.has(hex) && !pending.has(hex)) {
              pending.add(hex);
              known?.add(h.id);
              // Sealed by the thread already when the filter knew it was new; else asked for now.
              const sealed = h.sealed ?? (await pool.encode(slot, len, h.id));
              blocksNew++;
              bytesStored += sealed.len;
              await serial(async () => {
                packer.add(h.id, slot.output.subarray(0, sealed.len), len);
                if (packer.full) await flushPack();
              });
            }
          }
        } finally {
          pool.release(slot);
        }
        doneBytes += disk.source.blockSize;
        report(disk.diskId);
      });
      let dataBlocks = 0;
      for (let i = 0; i < plan.n; i++) if (!isZeroId(mapGet(map, i))) dataBlocks++;
      results.push({
        diskId: disk.diskId,
        sizeBytes: disk.source.size,
        blocksRead: plan.blocks.length,
        bytesRead,
        blocksNew,
        bytesStored,
        incremental: plan.incremental,
        ...(plan.reason ? { reason: plan.reason } : {}),
      });
      dataBlocksOf.push(dataBlocks);
    }
    // Every block is sealed: the codec threads end while the last writes go out, and the block
    // maps (final now) go out beside the last pack and index. Only the manifest names a map, so
    // a run that fails from here leaves at most an unnamed map, which prune removes.
    repo.releaseCodecs();
    maps = Promise.all(plans.map((p, k) => repo.writeBlockMap(`${id}-${k}`, p.map)));
    maps.catch(() => undefined); // awaited below, or given up with the run
    await serial(async () => {
      if (packer.count) await flushPack();
    });
    await uploader.finish();
    await maps;
  } catch (e) {
    await Promise.allSettled([uploader.drain(), maps]);
    throw e;
  }

  // A prune that ran meanwhile may have marked packs this run refers to (it could not see this
  // run's blocks): writing the manifest now could name blocks about to be deleted.
  const markedNow = new Set((await repo.deletionMarks()).flatMap((m) => m.record.packs).filter((p) => !repo.avoided.has(p)));
  if (markedNow.size) {
    for (const plan of plans) {
      for (let i = 0; i < plan.n; i++) {
        const blockIdHex = mapGet(plan.map, i).toString('hex');
        const loc = repo.index.get(blockIdHex);
        if (loc && markedNow.has(loc.pack)) {
          throw new TransientError(`a prune marked packs this backup refers to while it ran, so no restore point was written (nothing is lost) — run the backup again; run prune when no backup is running`);
        }
      }
    }
  }

  // The manifest comes last: a restore point exists only once every block it names is stored and indexed.
  const mapRefs = await maps!;
  const manifestDisks: ManifestDisk[] = [];
  for (const [k, { disk, incremental, reason }] of plans.entries()) {
    manifestDisks.push({
      diskId: disk.diskId,
      ...(disk.device ? { device: disk.device } : {}),
      sizeBytes: disk.source.size,
      blockSize: disk.source.blockSize,
      ...(disk.snapshotRef ? { snapshotRef: disk.snapshotRef } : {}),
      map: mapRefs[k]!,
      dataBlocks: dataBlocksOf[k]!,
      incremental,
      ...(reason ? { reason } : {}),
    });
  }
  const parentIds = [...new Set(plans.map((p) => p.parentId).filter((x): x is string => !!x))];
  const manifest: Manifest = {
    version: 1,
    id,
    time: repo.now().toISOString(),
    vm: req.vm,
    policy: req.policy,
    runId: req.runId,
    snapshotSetId: req.snapshotSetId,
    ...(parentIds.length === 1 ? { parentId: parentIds[0] } : {}),
    tags: req.tags,
    disks: manifestDisks,
  };
  await repo.writeManifest(manifest);
  report(plans.at(-1)?.disk.diskId ?? '', true);
  return { restorePointId: id, disks: results, seconds: (Date.now() - started) / 1000 };
}

/**
 * Fixed pack buffers handed out and returned; acquire waits when all are in use. They are
 * page-aligned, so a folder repository writes packs straight from them with direct I/O.
 */
class BufferRing {
  private readonly free: Buffer[];
  private readonly waiting: Array<(b: Buffer) => void> = [];
  constructor(count: number, size: number) {
    this.free = Array.from({ length: count }, () => alignedBuffer(size));
  }
  acquire(): Promise<Buffer> {
    const b = this.free.pop();
    return b ? Promise.resolve(b) : new Promise((resolve) => this.waiting.push(resolve));
  }
  release(b: Buffer): void {
    const w = this.waiting.shift();
    if (w) w(b);
    else this.free.push(b);
  }
}
