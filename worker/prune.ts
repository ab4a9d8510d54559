// `prune`: removes packs no restore point needs, under an exclusive lock, in
// two phases so that backups (which take no lock) are never left pointing at a
// deleted pack:
//
//   1. A pack no manifest references is *marked*: its ID goes into a sealed
//      `deletions/<id>` record. From then on every backup that opens the
//      repository drops the marked packs' blocks from its dedup index, so it
//      uploads those blocks again instead of referring to them.
//   2. A later prune (once the mark is older than the safety margin, 24 h by
//      default — longer than a backup may run) checks the references again
//      against the manifests that exist then, and deletes only packs that are
//      still unreferenced and older than the margin.
//
// Packs no index names yet (a run still uploading, or one that crashed) are
// only ever considered once they are older than the margin too.
//
// A pack that restore points still need only a little of (under `repackBelow`
// of its bytes, half by default) is *repacked*: the blocks they need are copied,
// sealed as they are, into new packs, which are uploaded and indexed first; then
// the old pack is marked like an unreferenced one. Phase 2 deletes a marked pack
// that still holds needed blocks only when every one of them is in a pack that
// stays — so the space of forgotten blocks comes back even when they share a
// pack with blocks that live on.

import { randomBytes } from 'node:crypto';
import { CorruptObjectError, LockedError, NotFoundError, ValidationError } from '../shared/core/errors.js';
import { mapLimit, type DamagedObject, type DeletionRecord, type Repository } from './repository.js';
import { PackBuilder, blockCount, checkBuiltPack, isZeroId, mapGet, packCapacity, packIdFromKey, packKey, type BlobLocation, type IndexFile, type PackEntry } from './format.js';
import { blockAad, open } from './crypto.js';
import { alignedBuffer } from '../shared/local/direct-io.js';
import { BlockIndex } from './block-index.js';
import { readAllManifests } from './restore-points.js';

/** The location prune's set of referenced blocks gives each (it needs only their IDs). */
const REFERENCED: BlobLocation = { pack: '', offset: 0, length: 0, rawLength: 0 };

export const DEFAULT_SAFETY_MARGIN_MS = 24 * 3600 * 1000;
/** A pack whose needed blocks take less than this share of its bytes is repacked. */
export const DEFAULT_REPACK_BELOW = 0.5;
const LOCK_KEY = 'locks/exclusive';

interface LockRecord {
  owner: string;
  token: string;
  created: string;
  expires: string;
}

export interface Lock {
  /** Throws LockedError when the lock is no longer ours (expired and taken): stop before deleting anything. */
  check(): Promise<void>;
  release(): Promise<void>;
}

/** Takes the repository's exclusive maintenance lock with a conditional write; a lock past its expiry is broken. */
export async function acquireExclusiveLock(repo: Repository, owner: string, ttlMs = 3600 * 1000): Promise<Lock> {
  const token = randomBytes(16).toString('hex');
  const now = repo.now();
  const rec: LockRecord = { owner, token, created: now.toISOString(), expires: new Date(now.getTime() + ttlMs).toISOString() };
  const body = Buffer.from(JSON.stringify(rec));
  for (let attempt = 0; attempt < 2; attempt++) {
    if (await repo.store.putIfAbsent(LOCK_KEY, body)) {
      return {
        async check() {
          let cur: LockRecord;
          try {
            cur = JSON.parse(Buffer.from(await repo.store.get(LOCK_KEY)).toString('utf8'));
          } catch (e) {
            if (e instanceof NotFoundError) throw new LockedError(`the maintenance lock on ${repo.location} was removed while prune ran — stopping before deleting anything; run prune again`);
            throw e;
          }
          if (cur.token !== token) throw new LockedError(`the maintenance lock on ${repo.location} was taken over by ${cur.owner} — stopping before deleting anything`);
          if (new Date(cur.expires).getTime() < repo.now().getTime()) throw new LockedError(`the maintenance lock on ${repo.location} expired while prune ran — stopping; run prune again`);
        },
        async release() {
          const cur = await repo.store.get(LOCK_KEY).then((b) => JSON.parse(Buffer.from(b).toString('utf8')) as LockRecord, () => undefined);
          if (cur?.token === token) await repo.store.delete(LOCK_KEY);
        },
      };
    }
    let held: LockRecord | undefined;
    try {
      held = JSON.parse(Buffer.from(await repo.store.get(LOCK_KEY)).toString('utf8'));
    } catch (e) {
      if (e instanceof NotFoundError) continue;
      throw e;
    }
    if (held && new Date(held.expires).getTime() < now.getTime()) {
      await repo.store.delete(LOCK_KEY);
      continue;
    }
    throw new LockedError(`${repo.location} is locked for maintenance by ${held?.owner ?? 'another process'} since ${held?.created ?? '?'} (until ${held?.expires ?? '?'}) — wait for it to finish, or remove ${LOCK_KEY} if that process is dead`);
  }
  throw new LockedError(`could not take the maintenance lock on ${repo.location} — try again`);
}

export interface PruneOptions {
  safetyMarginMs?: number;
  dryRun?: boolean;
  owner?: string;
  /** Repack a pack whose needed blocks take less than this share of it (0 to 1; default 0.5; 0 never repacks). */
  repackBelow?: number;
  /**
   * At most this many bytes of blocks copied by one prune (default: no limit), or one pack's when
   * that pack alone needs more. The sparsest packs go first, where a copied byte gives the most
   * space back; the others wait for a later prune. 0 copies nothing.
   */
  maxRepackBytes?: number;
}

export interface PruneReport {
  referencedBlocks: number;
  packsMarked: number;
  packsDeleted: number;
  bytesFreed: number;
  /** Packs whose needed blocks were copied into new packs, and which were marked (freed at a later prune). */
  packsRepacked: number;
  /** Bytes of the blocks copied by the repack (in a dry run: what would be copied). */
  bytesRepacked: number;
  /** Packs due for a repack left as they are because a block in them does not authenticate (`verify --read-data` names it). */
  packsNotRepacked: number;
  /** Packs due for a repack left for a later prune: repacking them too would copy more than `maxRepackBytes`. */
  packsLeftForLater: number;
  packsKept: number;
  indexFilesReplaced: number;
  /** Packs no readable index named, found needed (or named only by a damaged index file) and indexed again. */
  packsReindexed: number;
  /** Index files that could not be read, removed once every pack they could have named is in another. */
  damagedIndexFilesRemoved: number;
  /** Deletion marks that could not be read, removed (their packs, if still unreferenced, marked again). */
  damagedMarksReplaced: number;
  mapsDeleted: number;
  dryRun: boolean;
}

export async function pruneRepository(repo: Repository, opts: PruneOptions = {}): Promise<PruneReport> {
  const margin = opts.safetyMarginMs ?? DEFAULT_SAFETY_MARGIN_MS;
  const repackBelow = opts.repackBelow ?? DEFAULT_REPACK_BELOW;
  if (!(repackBelow >= 0 && repackBelow <= 1)) throw new ValidationError(`repackBelow is a share of a pack, from 0 (never repack) to 1 (got ${repackBelow})`);
  const maxRepackBytes = opts.maxRepackBytes ?? Infinity;
  if (!(maxRepackBytes >= 0)) throw new ValidationError(`maxRepackBytes is a number of bytes, 0 or more (got ${opts.maxRepackBytes})`);
  const lock = await acquireExclusiveLock(repo, opts.owner ?? `prune@${process.pid}`);
  try {
    const now = repo.now().getTime();
    const damagedIndex: DamagedObject[] = [];
    const indexFiles = await repo.readIndexFiles(damagedIndex);
    const oldIndexFiles = indexFiles.map((f) => f.key);
    /** Every indexed pack, as the first index file naming it gives it (kept as parsed: the rewrite writes it back). */
    const indexed = new Map<string, IndexFile['packs'][number]>();
    for (const { file } of indexFiles) for (const p of file.packs) if (!indexed.has(p.id)) indexed.set(p.id, p);

    // What the restore points reference, read after the lock: a backup finishing now writes its manifest
    // after its packs, and its packs are younger than the margin. A set of IDs in compact memory
    // (block-index.ts): every block of a large repository is referenced.
    const referenced = new BlockIndex();
    const referencedMaps = new Set<string>();
    let manifests;
    try {
      manifests = await readAllManifests(repo);
    } catch (e) {
      if (!(e instanceof CorruptObjectError) || !e.objectKey.startsWith('snapshots/')) throw e;
      // Without it prune cannot know which blocks that restore point needs: it deletes nothing.
      const id = e.objectKey.slice('snapshots/'.length);
      throw new CorruptObjectError(e.objectKey, `cannot be read, so prune cannot tell what it refers to and deleted nothing — it cannot be restored either: \`tender-worker forget ${id}\` removes it, then run prune again`, { cause: e });
    }
    for (const m of manifests) {
      for (const d of m.disks) {
        referencedMaps.add(d.map.key);
        const map = await repo.readBlockMap(d.map, blockCount(d.sizeBytes, d.blockSize));
        for (let i = 0; i < map.length / 32; i++) {
          const id = mapGet(map, i);
          if (!isZeroId(id)) referenced.add(id, REFERENCED);
        }
      }
    }

    const stored = new Map<string, { size: number; modified: number }>();
    for await (const o of repo.store.list('data/')) {
      const id = packIdFromKey(o.key);
      if (id) stored.set(id, { size: o.size, modified: o.modified.getTime() });
    }
    // A pack is live when any block in it is referenced, wherever else that block is stored too.
    const live = new Set<string>();
    for (const p of indexed.values()) if (p.blobs.some(([id]) => referenced.has(id))) live.add(p.id);
    const old = (pack: string) => {
      const s = stored.get(pack);
      return s !== undefined && now - s.modified >= margin;
    };
    // Packs no readable index file names: a backup still uploading, a run that crashed, or packs
    // whose index file is damaged or gone. Their own headers say whether they hold blocks a
    // restore point needs; those are live and indexed again here. (Young ones are never marked;
    // with a damaged index file they are read too, so that every pack it may have named is in a
    // readable one before it goes.)
    const unnamed = [...stored.entries()].filter(([p]) => !indexed.has(p) && (damagedIndex.length > 0 || old(p)));
    const reindexed: Array<{ id: string; size: number; entries: PackEntry[] }> = [];
    await mapLimit(unnamed, 8, async ([p, st]) => {
      try {
        const entries = await repo.readPackHeader(p, st.size);
        const needed = entries.some((e) => referenced.has(e.id));
        if (needed) live.add(p);
        if (needed || damagedIndex.length) reindexed.push({ id: p, size: st.size, entries });
      } catch (e) {
        // Gone since the listing, or a header that does not authenticate: nothing in it can be restored.
        if (!(e instanceof NotFoundError) && !(e instanceof CorruptObjectError)) throw e;
      }
    });
    const unreferenced = [...stored.keys()].filter((p) => !live.has(p) && old(p));

    // Phase 2: delete what an earlier prune marked, if it is still unreferenced and the mark is old enough.
    // A mark that cannot be read says nothing prune can act on: its packs are marked again below
    // if they are still unreferenced (they are not "marked already"), and it is removed.
    const damagedMarks: DamagedObject[] = [];
    const marks = await repo.deletionMarks(damagedMarks);
    const markedAlready = new Set(marks.flatMap((m) => m.record.packs));
    // Packs due for a repack: old, still needed, not marked, and mostly holding blocks nothing needs.
    const neededBytes = (p: IndexFile['packs'][number]) => p.blobs.reduce((n, [id, , length]) => n + (referenced.has(id) ? length : 0), 0);
    const due = repackBelow > 0 ? [...indexed.values()].filter((p) => live.has(p.id) && stored.has(p.id) && old(p.id) && !markedAlready.has(p.id) && neededBytes(p) < repackBelow * p.size) : [];
    const dueIds = new Set(due.map((p) => p.id));
    /** Blocks in packs that stay whatever this prune does: stored, named by a readable index file, neither marked nor in `moving`. */
    const stayingBlocks = (moving: Set<string>) => {
      const out = new BlockIndex();
      for (const p of indexed.values()) {
        if (stored.has(p.id) && !markedAlready.has(p.id) && !moving.has(p.id)) for (const [id] of p.blobs) out.add(id, REFERENCED);
      }
      return out;
    };
    /** The needed blocks of these packs that no staying pack holds, once each: what their repack copies. */
    const toCopy = (packs: IndexFile['packs'], staying: BlockIndex) => {
      const ids = new Set<string>();
      let bytes = 0;
      for (const p of packs) {
        for (const [id, , length] of p.blobs) {
          if (!referenced.has(id) || staying.has(id) || ids.has(id)) continue;
          ids.add(id);
          bytes += length;
        }
      }
      return { ids, bytes };
    };
    // Under a cap on the bytes copied, the sparsest packs go first (the most space back per byte
    // copied); one that does not fit waits for a later prune, and until then it is a pack that
    // stays. The first pack is taken even when it alone needs more than the cap (but not under a
    // cap of 0): otherwise it would wait for ever.
    let sparse = due;
    if (Number.isFinite(maxRepackBytes) && due.length) {
      const ifAllMove = stayingBlocks(dueIds);
      const share = new Map(due.map((p) => [p.id, neededBytes(p) / p.size]));
      const order = [...due].sort((a, b) => share.get(a.id)! - share.get(b.id)! || a.id.localeCompare(b.id));
      const taken = new Set<string>();
      let bytes = 0;
      sparse = [];
      for (const p of order) {
        let more = 0;
        for (const [id, , length] of p.blobs) if (referenced.has(id) && !ifAllMove.has(id) && !taken.has(id)) more += length;
        if (bytes + more > maxRepackBytes && !(sparse.length === 0 && maxRepackBytes > 0)) continue;
        for (const [id] of p.blobs) if (referenced.has(id)) taken.add(id);
        bytes += more;
        sparse.push(p);
      }
    }
    const sparseIds = new Set(sparse.map((p) => p.id));
    // A needed block found in a staying pack is not copied again.
    const staying = stayingBlocks(sparseIds);
    // Phase 2 takes marked packs older than the margin: one no restore point needs goes now; one
    // that holds needed blocks goes once each is in a pack that stays (decided after the repack).
    const toDelete = new Set<string>();
    const stillNeeded: string[] = [];
    const doneMarks: string[] = [];
    for (const { key, record } of marks) {
      if (now - new Date(record.marked).getTime() < margin) continue;
      for (const p of record.packs) {
        if (!old(p)) continue;
        if (!live.has(p)) toDelete.add(p);
        else stillNeeded.push(p);
      }
      doneMarks.push(key);
    }
    const toMark = unreferenced.filter((p) => !toDelete.has(p) && !markedAlready.has(p));
    // What the repack copies if every blob authenticates (the figure a dry run gives).
    const { ids: copying, bytes: bytesToCopy } = toCopy(sparse, staying);
    /** Marked packs still needed whose needed blocks are all in staying packs or among those copied: they go. */
    const supersede = (copied: Set<string>) => {
      for (const pack of stillNeeded) {
        const p = indexed.get(pack);
        if (p && p.blobs.every(([id]) => !referenced.has(id) || staying.has(id) || copied.has(id))) toDelete.add(pack);
      }
    };

    const report: PruneReport = {
      referencedBlocks: referenced.size,
      packsMarked: toMark.length,
      packsDeleted: 0,
      bytesFreed: 0,
      packsRepacked: sparse.length,
      bytesRepacked: bytesToCopy,
      packsNotRepacked: 0,
      packsLeftForLater: due.length - sparse.length,
      packsKept: 0,
      indexFilesReplaced: 0,
      packsReindexed: reindexed.length,
      damagedIndexFilesRemoved: 0,
      damagedMarksReplaced: 0,
      mapsDeleted: 0,
      dryRun: !!opts.dryRun,
    };
    const countDeletions = () => {
      report.packsDeleted = toDelete.size;
      report.bytesFreed = [...toDelete].reduce((n, p) => n + (stored.get(p)?.size ?? 0), 0);
      report.packsKept = stored.size - toDelete.size;
    };
    if (opts.dryRun) {
      // As if every copy of the repack succeeds.
      supersede(copying);
      countDeletions();
      return report;
    }
    if (reindexed.length) {
      await lock.check();
      await repo.writeIndex(reindexed);
    }

    let copied = new Set<string>();
    if (sparse.length) {
      await lock.check();
      const repacked = await repack(repo, sparse, (id) => referenced.has(id) && !staying.has(id));
      copied = repacked.copied;
      report.packsRepacked = repacked.packs.length;
      report.bytesRepacked = repacked.bytes;
      report.packsNotRepacked = sparse.length - repacked.packs.length;
      // Marked only now that every block they hold for a restore point is in an indexed pack.
      toMark.push(...repacked.packs);
      report.packsMarked = toMark.length;
    }
    supersede(copied);
    countDeletions();

    if (toMark.length) {
      const name = randomBytes(16).toString('hex');
      const rec: DeletionRecord = { version: 1, marked: repo.now().toISOString(), packs: toMark };
      await repo.store.put(`deletions/${name}`, repo.sealObject('deletion', name, Buffer.from(JSON.stringify(rec))));
    }

    // Index entries for packs that are gone (an earlier prune stopped between deleting packs and
    // replacing the index) must go too, or backups would dedup against blocks that no longer exist.
    const missing = [...indexed.keys()].filter((p) => !stored.has(p));
    if (toDelete.size || missing.length) {
      await lock.check();
      // The new index first, without the doomed or missing packs; then the packs; then the old index files.
      const keep = [...indexed.values()].filter((p) => !toDelete.has(p.id) && stored.has(p.id));
      await repo.writeIndexPacks(keep);
      await mapLimit([...toDelete], 8, async (p) => repo.store.delete(packKey(p)));
      await lock.check();
      await mapLimit(oldIndexFiles, 8, async (k) => repo.store.delete(k));
      report.indexFilesReplaced = oldIndexFiles.length;
    }
    // Damaged index files: every pack they may have named is in a readable one now (reindexed above).
    if (damagedIndex.length) {
      await lock.check();
      for (const d of damagedIndex) await repo.store.delete(d.object);
      report.damagedIndexFilesRemoved = damagedIndex.length;
    }
    // A mark goes only once no index names its packs any more (the rewrite above has happened).
    await lock.check();
    for (const k of doneMarks) await repo.store.delete(k);
    for (const d of damagedMarks) await repo.store.delete(d.object);
    report.damagedMarksReplaced = damagedMarks.length;

    // Block maps whose manifest is gone (a forget interrupted between the two deletes).
    for await (const o of repo.store.list('maps/')) {
      if (!referencedMaps.has(o.key) && now - o.modified.getTime() >= margin) {
        await repo.store.delete(o.key);
        report.mapsDeleted++;
      }
    }
    await repo.loadIndex();
    return report;
  } finally {
    await lock.release();
  }
}

/**
 * Copies the blocks of the sparse packs that `needed` says must be copied into new packs, each
 * once, sealed as they are (a blob's seal binds its block ID, not where it is stored), and uploads
 * and indexes those. A pack one of whose blocks does not authenticate is left out whole: it is not
 * marked, its blocks stay where they are, and a later sparse pack holding the same block copies
 * it instead. Returns the packs whose needed blocks are all in indexed packs now, the blocks
 * copied and their bytes.
 */
async function repack(repo: Repository, sparse: IndexFile['packs'], needed: (id: string) => boolean): Promise<{ packs: string[]; bytes: number; copied: Set<string> }> {
  const maxBlob = sparse.reduce((m, p) => p.blobs.reduce((n, [, , length]) => Math.max(n, length), m), 0);
  // Page-aligned, as a backup's pack buffers are: a folder repository writes packs with direct I/O.
  const buf = alignedBuffer(packCapacity(repo.config.packSize, maxBlob));
  let builder = new PackBuilder(repo.key.encryption, buf, repo.config.packSize);
  const written: Array<{ id: string; size: number; entries: PackEntry[] }> = [];
  const flush = async () => {
    const built = builder.finish();
    const problem = checkBuiltPack(repo.key.encryption, built);
    if (problem) throw new CorruptObjectError(packKey(built.id), `failed its check before upload (${problem}); nothing was uploaded`);
    await repo.store.put(packKey(built.id), built.bytes);
    written.push({ id: built.id, size: built.bytes.length, entries: built.entries });
    builder = new PackBuilder(repo.key.encryption, buf, repo.config.packSize);
  };
  const done: string[] = [];
  const copied = new Set<string>();
  let bytes = 0;
  for (const p of sparse) {
    const blobs = p.blobs.filter(([id]) => needed(id) && !copied.has(id));
    let sealed: Array<{ hex: string; id: Buffer; blob: Uint8Array; length: number; rawLength: number }> = [];
    if (blobs.length) {
      const pack = await repo.store.get(packKey(p.id));
      sealed = blobs.map(([hex, offset, length, rawLength]) => ({ hex, id: Buffer.from(hex, 'hex'), blob: pack.subarray(offset, offset + length), length, rawLength }));
      // Every blob first: a damaged one (cut short, or not authenticating as its block) leaves
      // its pack as it is, and nothing of it is copied.
      if (sealed.some((b) => b.blob.length !== b.length || !open(repo.key.encryption, b.blob, blockAad(b.id)))) continue;
    }
    for (const b of sealed) {
      builder.add(b.id, b.blob, b.rawLength);
      copied.add(b.hex);
      bytes += b.length;
      if (builder.full) await flush();
    }
    done.push(p.id);
  }
  if (builder.count) await flush();
  if (written.length) await repo.writeIndex(written);
  return { packs: done, bytes, copied };
}
