// RestorePoints over the repository, for the retention step on Lambda: opens
// the repository the way the worker does (S3 store from the URL, passphrase
// from SSM / Secrets Manager) and lists or forgets restore points.

import type { S3Client } from '@aws-sdk/client-s3';
import type { SSMClient } from '@aws-sdk/client-ssm';
import type { RestorePointInfo, RestorePoints, RepositoryRef } from '../ports/restore-points.js';
import { NotFoundError } from '../core/errors.js';
import { resolveAwsRepositorySecret } from './repository-key.js';

export function createAwsRestorePoints(opts: { ssm: () => SSMClient; s3Client?: () => S3Client; env?: NodeJS.ProcessEnv }): RestorePoints {
  async function withRepository<T>(ref: RepositoryRef, fn: (repo: any) => Promise<T>, ifMissing: () => T): Promise<T> {
    // Loaded on use: the data mover carries a native codec only this step needs.
    const [{ openStoreFromUrl }, { openRepository }] = await Promise.all([import('../../worker/store-from-url.js'), import('../../worker/repository.js')]);
    const store = await openStoreFromUrl(ref.url, { ...(opts.s3Client ? { s3Client: opts.s3Client() } : {}), env: opts.env });
    let repo;
    try {
      repo = await openRepository(store, await resolveAwsRepositorySecret(ref.key, { ssm: opts.ssm, env: opts.env }), { threads: 1 });
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
        async (repo) => {
          const { listRestorePoints } = await import('../../worker/restore-points.js');
          return (await listRestorePoints(repo, filter)).map(
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
          );
        },
        () => [],
      ),
    forget: (ref, ids) =>
      withRepository(
        ref,
        async (repo) => {
          const { forgetRestorePoints } = await import('../../worker/restore-points.js');
          await forgetRestorePoints(repo, ids);
        },
        () => undefined,
      ),
  };
}
