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

import { randomBytes } from 'node:crypto';
import { CorruptObjectError, LockedError, NotFoundError } from '../shared/core/errors.js';
import { mapLimit, type DamagedObject, type DeletionRecord, type Repository } from './repository.js';
import { blockCount, isZeroId, mapGet, packIdFromKey, packKey, type BlobLocation, type IndexFile, type PackEntry } from './format.js';
import { BlockIndex } from './block-index.js';
import { readAllManifests } from './restore-points.js';

/** The location prune's set of referenced blocks gives each (it needs only their IDs). */
const REFERENCED: BlobLocation = { pack: '', offset: 0, length: 0, rawLength: 0 };

export const DEFAULT_SAFETY_MARGIN_MS = 24 * 3600 * 1000;
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
}

export interface PruneReport {
  referencedBlocks: number;
  packsMarked: number;
  packsDeleted: number;
  bytesFreed: number;
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
    const toDelete = new Set<string>();
    const doneMarks: string[] = [];
    for (const { key, record } of marks) {
      if (now - new Date(record.marked).getTime() < margin) continue;
      for (const p of record.packs) if (!live.has(p) && old(p)) toDelete.add(p);
      doneMarks.push(key);
    }
    const markedAlready = new Set(marks.flatMap((m) => m.record.packs));
    const toMark = unreferenced.filter((p) => !toDelete.has(p) && !markedAlready.has(p));

    let bytesFreed = 0;
    for (const p of toDelete) bytesFreed += stored.get(p)?.size ?? 0;
    const report: PruneReport = {
      referencedBlocks: referenced.size,
      packsMarked: toMark.length,
      packsDeleted: toDelete.size,
      bytesFreed,
      packsKept: stored.size - toDelete.size,
      indexFilesReplaced: 0,
      packsReindexed: reindexed.length,
      damagedIndexFilesRemoved: 0,
      damagedMarksReplaced: 0,
      mapsDeleted: 0,
      dryRun: !!opts.dryRun,
    };
    if (opts.dryRun) return report;
    if (reindexed.length) {
      await lock.check();
      await repo.writeIndex(reindexed);
    }

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
