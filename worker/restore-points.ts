// Restore points are the manifests under snapshots/: listing, finding the
// parent of an incremental, and forgetting (deleting a manifest and its block
// maps; the data it alone referenced goes at the next prune).

import type { Repository } from './repository.js';
import { mapLimit, openRepository } from './repository.js';
import type { Manifest, ManifestDisk } from './format.js';
import type { ObjectStore } from '../shared/ports/object-store.js';
import type { RepositoryRef, RestorePointInfo, RestorePoints } from '../shared/ports/restore-points.js';
import type { KeyRef } from '../shared/core/config.js';
import type { RepositorySecret } from './crypto.js';
import { NotFoundError } from '../shared/core/errors.js';

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

export async function readAllManifests(repo: Repository): Promise<Manifest[]> {
  const out = (await repo.objectsUnder('snapshots/')).map(({ key, bytes }) => repo.openManifest(key, bytes));
  return out.sort((a, b) => a.time.localeCompare(b.time) || a.id.localeCompare(b.id));
}

/** Oldest first. */
export async function listRestorePoints(repo: Repository, filter: { vmId?: string; policy?: string } = {}): Promise<RestorePointSummary[]> {
  const all = await readAllManifests(repo);
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

/** Deletes restore points (unknown ids are skipped). Their blocks stay until `prune` finds nothing else refers to them. */
export async function forgetRestorePoints(repo: Repository, ids: string[]): Promise<void> {
  for (const id of ids) {
    let m: Manifest;
    try {
      m = await repo.readManifest(id);
    } catch (e) {
      if (e instanceof NotFoundError) continue;
      throw e;
    }
    // Manifest first: a crash after it leaves only unreferenced maps, which prune removes.
    await repo.store.delete(`snapshots/${id}`);
    for (const d of m.disks) await repo.store.delete(d.map.key);
  }
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
    forget: (ref, ids) => withRepository(ref, (repo) => forgetRestorePoints(repo, ids), () => undefined),
  };
}
