// `verify`: structure always (every manifest and block map authenticates, every
// block a map names is indexed, every indexed pack exists with the size the
// index records); content with readData (every blob of the chosen packs is
// decrypted, decompressed and re-hashed against its ID).

import { CorruptObjectError, TenderError, toError } from '../shared/core/errors.js';
import { mapLimit, type Repository } from './repository.js';
import { blockCount, isZeroId, mapGet, packKey, type Manifest } from './format.js';
import { readAllManifests } from './restore-points.js';

export interface VerifyOptions {
  /** Read and check the content of packs: true = all, or a fraction in (0, 1] of the packs (a subset chosen at random). */
  readData?: boolean | number;
  random?: () => number;
  onProgress?: (done: number, total: number) => void;
}

export interface VerifyProblem {
  object: string;
  message: string;
}

export interface VerifyReport {
  ok: boolean;
  restorePoints: number;
  packs: number;
  blobs: number;
  packsRead: number;
  blobsChecked: number;
  /** Packs no index names yet (a backup running or crashed): not a problem, reported for information. */
  unindexedPacks: number;
  /**
   * Packs a prune deleted (they are marked) whose index files it had not replaced yet: not a
   * problem unless a restore point needs one (then "only in packs that are gone" is); the next
   * prune replaces those index files.
   */
  unfinishedPrunePacks: number;
  problems: VerifyProblem[];
}

export async function verifyRepository(repo: Repository, opts: VerifyOptions = {}): Promise<VerifyReport> {
  const problems: VerifyProblem[] = [];
  const note = (object: string, e: unknown) => {
    const err = toError(e);
    if (err instanceof CorruptObjectError) problems.push({ object: err.objectKey, message: err.message.slice(err.objectKey.length + 2) });
    else if (err instanceof TenderError) problems.push({ object, message: err.message });
    else throw err;
  };

  await repo.loadIndex();
  for (const d of repo.damagedIndexFiles) {
    problems.push({
      object: d.object,
      message: `${d.message.replace(/ — .*$/, '')}; restores still work (the packs no other index file names were indexed from their own headers) — run a backup, which writes an index for them, then prune, which removes this file`,
    });
  }
  for (const d of repo.damagedMarks) {
    problems.push({ object: d.object, message: `${d.message.replace(/ — .*$/, '')}; backups stop until \`tender-worker prune\` replaces it (reading and restoring go on)` });
  }
  const manifests: Manifest[] = [];
  const ids = await repo.listManifestIds();
  await mapLimit(ids, 8, async (id) => {
    try {
      manifests.push(await repo.readManifest(id));
    } catch (e) {
      note(`snapshots/${id}`, e);
    }
  });

  const existing = new Map<string, number>();
  for await (const o of repo.store.list('data/')) existing.set(o.key, o.size);
  // Pack numbers of the index (block-index.ts) whose pack is not in the store.
  const gone = new Uint8Array(repo.index.packCount);
  for (let p = 0; p < gone.length; p++) if (!existing.has(packKey(repo.index.packName(p)))) gone[p] = 1;

  const loc = new Uint32Array(4);
  for (const m of manifests) {
    for (const d of m.disks) {
      const n = blockCount(d.sizeBytes, d.blockSize);
      try {
        const map = await repo.readBlockMap(d.map, n);
        let missing = 0;
        let lost = 0;
        for (let i = 0; i < n; i++) {
          const id = mapGet(map, i);
          if (isZeroId(id)) continue;
          if (!repo.index.lookup(id, loc)) missing++;
          else if (gone[loc[0]!]) lost++;
        }
        if (missing) problems.push({ object: d.map.key, message: `restore point ${m.id} disk ${d.diskId}: ${missing} block(s) are in no index` });
        if (lost) problems.push({ object: d.map.key, message: `restore point ${m.id} disk ${d.diskId}: ${lost} block(s) are only in packs that are gone` });
      } catch (e) {
        note(d.map.key, e);
      }
    }
  }

  const indexedKeys = new Set([...repo.indexedPacks.keys()].map((p) => packKey(p)));
  // Not a problem: a backup still running, or one that crashed (the next backup adopts them, prune removes old ones).
  const unindexedPacks = [...existing.keys()].filter((k) => /^data\/[0-9a-f]{2}\/[0-9a-f]{64}$/.test(k) && !indexedKeys.has(k)).length;
  let unfinishedPrunePacks = 0;
  for (const [pack, size] of repo.indexedPacks) {
    const actual = existing.get(packKey(pack));
    if (actual === undefined && repo.marked.has(pack)) unfinishedPrunePacks++;
    else if (actual === undefined) problems.push({ object: packKey(pack), message: 'is indexed but missing' });
    else if (actual !== size) problems.push({ object: packKey(pack), message: `is ${actual} bytes, the index says ${size}` });
  }

  let packsRead = 0;
  let blobsChecked = 0;
  if (opts.readData) {
    const fraction = opts.readData === true ? 1 : opts.readData;
    const random = opts.random ?? Math.random;
    const packs = [...repo.indexedPacks.keys()].filter((p) => existing.has(packKey(p)) && (fraction >= 1 || random() < fraction));
    const pool = repo.codecs();
    // How many blocks the index places in each pack, counted once: a pack's header is then
    // checked against the index block by block, not by a scan of the whole index per pack.
    const placed = repo.index.countsByPack();
    let done = 0;
    await mapLimit(packs, Math.max(2, pool.size), async (pack) => {
      const key = packKey(pack);
      try {
        const size = existing.get(key)!;
        const entries = await repo.readPackHeader(pack, size);
        // The index must say what the pack's own header says, or restore would read the wrong bytes.
        const number = repo.index.packNumber(pack);
        const loc = new Uint32Array(4);
        let agreeing = 0;
        for (const e of entries) {
          if (!repo.index.lookup(e.id, loc) || loc[0] !== number) continue;
          if (e.offset === loc[1] && e.length === loc[2] && e.rawLength === loc[3]) agreeing++;
        }
        if (number !== undefined && agreeing < placed[number]!) {
          // Some block the index places here is not where the header says: name them (rare, so a scan).
          const inPack = new Map(entries.map((e) => [e.id.toString('hex'), e]));
          for (const [hex, l] of repo.index) {
            if (l.pack !== pack) continue;
            const e = inPack.get(hex);
            if (!e || e.offset !== l.offset || e.length !== l.length || e.rawLength !== l.rawLength) {
              problems.push({ object: key, message: `the index places block ${hex.slice(0, 16)}… at offset ${l.offset}, which the pack's header does not` });
            }
          }
        }
        // Block by block straight into the codec slots where the store can (as restore does),
        // else the whole pack at once.
        const reader = repo.store.openReader ? await repo.store.openReader(key) : undefined;
        try {
          const bytes = reader ? undefined : await repo.store.get(key);
          packsRead++;
          await Promise.all(
            entries.map(async (e) => {
              const slot = await pool.acquire();
              try {
                if (e.length > slot.input.length) throw new Error(`${e.length} bytes, larger than any block this repository writes`);
                if (bytes) slot.input.set(bytes.subarray(e.offset, e.offset + e.length));
                else if ((await reader!.read(e.offset, slot.input.subarray(0, e.length))) !== e.length) throw new Error('the pack ends before it');
                await pool.decode(slot, e.length, e.id, e.rawLength, true);
                blobsChecked++;
              } catch (err) {
                problems.push({ object: key, message: `block ${e.id.toString('hex').slice(0, 16)}… at offset ${e.offset}: ${(err as Error).message}` });
              } finally {
                pool.release(slot);
              }
            }),
          );
        } finally {
          await reader?.close();
        }
      } catch (e) {
        note(key, e);
      }
      opts.onProgress?.(++done, packs.length);
    });
  }

  return {
    ok: problems.length === 0,
    restorePoints: manifests.length,
    packs: repo.indexedPacks.size,
    blobs: repo.index.size,
    packsRead,
    blobsChecked,
    unindexedPacks,
    unfinishedPrunePacks,
    problems,
  };
}
