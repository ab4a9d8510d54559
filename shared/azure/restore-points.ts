// RestorePoints for the Function app (applyRetention): opens the repository
// the way the worker does — store from its URL, passphrase from Key Vault with
// the app's managed identity — and lists or forgets restore points in it.

import type { TokenCredential } from '@azure/identity';
import type { RestorePointInfo, RestorePoints, RepositoryRef } from '../ports/restore-points.js';
import type { ObjectStore } from '../ports/object-store.js';
import { NotFoundError } from '../core/errors.js';
import { openStoreFromUrl } from '../../worker/store-from-url.js';
import { openRepository, type Repository } from '../../worker/repository.js';
import { forgetRestorePoints, listRestorePoints } from '../../worker/restore-points.js';
import { repositorySecretFromAzureKeyRef } from './key-vault.js';
import type { RepositorySecret } from '../../worker/crypto.js';

export function createAzureRestorePoints(opts: { credential?: TokenCredential; openStore?: (url: string) => Promise<ObjectStore>; passphrase?: (ref: RepositoryRef['key']) => Promise<RepositorySecret> } = {}): RestorePoints {
  const openStore = opts.openStore ?? ((url: string) => openStoreFromUrl(url));
  const passphrase = opts.passphrase ?? ((ref) => repositorySecretFromAzureKeyRef(ref, { credential: opts.credential }));
  async function withRepository<T>(ref: RepositoryRef, fn: (repo: Repository) => Promise<T>, ifMissing: () => T): Promise<T> {
    const store = await openStore(ref.url);
    let repo: Repository;
    try {
      repo = await openRepository(store, await passphrase(ref.key), { threads: 1 });
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
