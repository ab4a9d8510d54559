// RestorePoints over the data mover, for the local runner: opens the
// repository the way a worker does (URL + KeyRef) and lists or forgets
// restore points in it.

import type { RestorePointInfo, RestorePoints, RepositoryRef } from '../ports/restore-points.js';
import { NotFoundError } from '../core/errors.js';
import { openStoreFromUrl } from '../../worker/store-from-url.js';
import { openRepository, type Repository } from '../../worker/repository.js';
import { repositorySecretFromKeyRef } from '../../worker/keys.js';
import { forgetRestorePoints, listRestorePoints } from '../../worker/restore-points.js';

async function withRepository<T>(ref: RepositoryRef, fn: (repo: Repository) => Promise<T>, ifMissing: () => T): Promise<T> {
  const store = await openStoreFromUrl(ref.url);
  let repo: Repository;
  try {
    repo = await openRepository(store, await repositorySecretFromKeyRef(ref.key), { threads: 1 });
  } catch (e) {
    if (e instanceof NotFoundError) return ifMissing();
    throw e;
  }
  try {
    return await fn(repo);
  } finally {
    await repo.close();
  }
}

export function createLocalRestorePoints(): RestorePoints {
  return {
    list: (ref, filter) =>
      withRepository(
        ref,
        async (repo) =>
          (await listRestorePoints(repo, filter)).map(
            (p): RestorePointInfo => ({
              id: p.id,
              vmId: p.vmId,
              vmName: p.vmName,
              policy: p.policy,
              runId: p.runId,
              time: p.time,
              disks: p.disks.map((d) => ({ diskId: d.diskId, sizeBytes: d.sizeBytes })),
              tags: p.tags,
              ...(p.parentId ? { parentId: p.parentId } : {}),
            }),
          ),
        () => [],
      ),
    forget: (ref, ids) => withRepository(ref, (repo) => forgetRestorePoints(repo, ids), () => undefined),
  };
}
