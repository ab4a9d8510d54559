// Restore points are the manifests under snapshots/: listing, finding the
// parent of an incremental, and forgetting (deleting a manifest and its block
// maps; the data it alone referenced goes at the next prune).

import type { Repository } from './repository.js';
import { openOrNoteDamage, openRepository, type DamagedObject } from './repository.js';
import type { Manifest, ManifestDisk } from './format.js';
import type { ObjectStore } from '../shared/ports/object-store.js';
import type { PruneOutcome, RepositoryRef, RestorePointInfo, RestorePoints } from '../shared/ports/restore-points.js';
import type { KeyRef } from '../shared/core/config.js';
import type { RepositorySecret } from './crypto.js';
import { CorruptObjectError, LockedError, NotFoundError } from '../shared/core/errors.js';
import { pruneRepository } from './prune.js';

/** What the port promises (RestorePointInfo), plus what the CLI shows. */
export interface RestorePointSummary extends RestorePointInfo {
  snapshotSetId: string;
  disks: Array<RestorePointInfo['disks'][number] & { dataBlocks: number; incremental: boolean; snapshotRef?: string }>;
}

export function summarize(m: Manifest): RestorePointSummary {
  return {
    id: m.id,
    vmId: m.vm.vmId,
    vmName: m.vm.name,
    policy: m.policy,
    runId: m.runId,
    time: m.time,
    snapshotSetId: m.snapshotSetId,
    ...(m.parentId ? { parentId: m.parentId } : {}),
    tags: m.tags,
    disks: m.disks.map((d) => ({ diskId: d.diskId, sizeBytes: d.sizeBytes, dataBlocks: d.dataBlocks, incremental: d.incremental, ...(d.snapshotRef ? { snapshotRef: d.snapshotRef } : {}) })),
  };
}

export type { DamagedObject } from './repository.js';

/**
 * Every restore point, oldest first. A manifest that does not authenticate throws — unless
 * `damaged` is given: then it is skipped and named there, so one damaged restore point does not
 * hide the others (listing, finding a parent). Prune never skips: it must know every reference.
 */
export async function readAllManifests(repo: Repository, damaged?: DamagedObject[]): Promise<Manifest[]> {
  const out: Manifest[] = [];
  for (const { key, bytes } of await repo.objectsUnder('snapshots/')) {
    const m = openOrNoteDamage(key, 'a manifest', damaged, () => repo.openManifest(key, bytes));
    if (m) out.push(m);
  }
  return out.sort((a, b) => a.time.localeCompare(b.time) || a.id.localeCompare(b.id));
}

/** Oldest first; restore points that cannot be read are skipped and named in `damaged` (when given). */
export async function listRestorePoints(repo: Repository, filter: { vmId?: string; policy?: string } = {}, damaged: DamagedObject[] = []): Promise<RestorePointSummary[]> {
  const all = await readAllManifests(repo, damaged);
  return all.filter((m) => (!filter.vmId || m.vm.vmId === filter.vmId) && (!filter.policy || m.policy === filter.policy)).map(summarize);
}

/** The newest of these restore points of this VM whose disk was read from `snapshotRef`. */
export function findParent(manifests: readonly Manifest[], vmId: string, diskId: string, snapshotRef: string): { manifest: Manifest; disk: ManifestDisk } | undefined {
  for (let i = manifests.length - 1; i >= 0; i--) {
    const m = manifests[i]!;
    if (m.vm.vmId !== vmId) continue;
    const disk = m.disks.find((d) => d.diskId === diskId && d.snapshotRef === snapshotRef);
    if (disk) return { manifest: m, disk };
  }
  return undefined;
}

/**
 * Deletes restore points; returns the ids it deleted (an unknown id is not one of them). Their
 * blocks stay until `prune` finds nothing else refers to them. A restore point whose manifest is
 * damaged is deleted too (it cannot be restored anyway): its block maps are left for prune,
 * which removes maps no manifest names.
 */
export async function forgetRestorePoints(repo: Repository, ids: string[]): Promise<string[]> {
  const forgotten: string[] = [];
  for (const id of ids) {
    let maps: string[] = [];
    try {
      maps = (await repo.readManifest(id)).disks.map((d) => d.map.key);
    } catch (e) {
      if (e instanceof NotFoundError) continue;
      if (!(e instanceof CorruptObjectError || e instanceof SyntaxError)) throw e;
    }
    // Manifest first: a crash after it leaves only unreferenced maps, which prune removes.
    await repo.store.delete(`snapshots/${id}`);
    for (const k of maps) await repo.store.delete(k);
    forgotten.push(id);
  }
  return forgotten;
}

/**
 * The RestorePoints port (what retention needs) over a repository: each cloud
 * passes how it opens a store from a URL and where the key comes from.
 */
export function createRestorePointsPort(opts: {
  openStore: (url: string) => Promise<ObjectStore>;
  secret: (key: KeyRef) => Promise<RepositorySecret>;
}): RestorePoints {
  async function withRepository<T>(ref: RepositoryRef, fn: (repo: Repository) => Promise<T>, ifMissing: () => T): Promise<T> {
    const store = await opts.openStore(ref.url);
    let repo: Repository;
    try {
      repo = await openRepository(store, await opts.secret(ref.key), { threads: 1 });
    } catch (e) {
      // No repository yet: nothing to list or forget.
      if (e instanceof NotFoundError) return ifMissing();
      throw e;
    }
    try {
      return await fn(repo);
    } finally {
      await repo.close();
    }
  }
  return {
    list: (ref, filter) => withRepository(ref, (repo) => listRestorePoints(repo, filter), () => []),
    forget: (ref, ids) =>
      withRepository(
        ref,
        async (repo) => {
          await forgetRestorePoints(repo, ids);
        },
        () => undefined,
      ),
    prune: (ref, settings) =>
      withRepository<PruneOutcome>(
        ref,
        async (repo) => {
          try {
            const r = await pruneRepository(repo, { owner: settings.owner, repackBelow: settings.repackBelow, maxRepackBytes: settings.maxRepackBytes });
            return {
              status: 'pruned',
              packsDeleted: r.packsDeleted,
              bytesFreed: r.bytesFreed,
              packsMarked: r.packsMarked,
              packsRepacked: r.packsRepacked,
              bytesRepacked: r.bytesRepacked,
              packsLeftForLater: r.packsLeftForLater,
              packsNotRepacked: r.packsNotRepacked,
            };
          } catch (e) {
            // Another prune holds the lock (or took it over): it does this work; the next run prunes again.
            if (e instanceof LockedError) return { status: 'skipped', reason: e.message };
            throw e;
          }
        },
        () => ({ status: 'skipped', reason: `there is no repository at ${ref.url} yet` }),
      ),
  };
}
